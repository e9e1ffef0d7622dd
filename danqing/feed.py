"""What the training loop feeds each step: the data order, balancing weights and
flips (pure functions of seed and step, so a resumed run draws the same
batches), the batches of the run's other data sets by role, caption states,
and the output of a frozen encoder computed once.
"""
from __future__ import annotations

import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .config import ConfigError, TrainConfig
from .protocol import Batch, Cond, DataRole, FrozenEncoding, TextSpec

if TYPE_CHECKING:
    from .data import ImageDataset


def batch_indices(step: int, batch_size: int, n: int, seed: int,
                  weights: Tensor | None = None) -> tuple[Tensor, int, int]:
    """Indices of the batch at ``step``: consecutive slices of one random order of the n items per epoch.

    The order is a permutation, or with ``weights`` (n,) n draws with replacement in proportion to them.
    A pure function of its arguments, so resuming needs only the step.
    Returns (indices, epoch, position in epoch) of the batch's first item.
    """
    start = step * batch_size
    out, epoch, pos = [], start // n, start % n
    first = (epoch, pos)
    while len(out) < batch_size:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g) if weights is None else \
            torch.multinomial(weights, n, replacement=True, generator=g)
        out.append(order[pos: pos + batch_size - len(out)])
        epoch, pos = epoch + 1, 0
    return torch.cat(out)[:batch_size], first[0], first[1]


def group_weights(captions: Sequence[str], pattern: str) -> Tensor:
    """Sampling weights (n,) that draw every group of pictures as often as one picture: captions that are
    equal once every match of ``pattern`` is removed form a group, each member weighing 1 / its size.

    For the emoji set, ``(: |, )(light|medium-light|medium|medium-dark|dark) skin tone`` puts a person's
    skin-tone variants in one group, so that half of the pictures no longer take half of the steps.
    """
    rx = re.compile(pattern)
    keys = [rx.sub("", c) for c in captions]
    size = Counter(keys)
    return torch.tensor([1.0 / size[k] for k in keys], dtype=torch.float64)


def phrasings_at(step: int, idx: Sequence[int], captions: Sequence[str], variants: Sequence[Sequence[str]],
                 share: float, seed: int) -> list[str]:
    """The text each picture ``idx`` is trained on at ``step``: with chance ``share`` one of its caption
    variants (all equally likely), else its caption; pictures without variants keep their caption.
    A pure function of its arguments, like the batch order, so a resumed run reads the same texts."""
    g = torch.Generator().manual_seed(seed * 104_729 + step + 1)
    use, pick = torch.rand(2, len(idx), generator=g).tolist()
    return [variants[i][int(p * len(variants[i]))] if u < share and variants[i] else captions[i]
            for i, u, p in zip(idx, use, pick)]


def flips_at(step: int, batch_size: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 7_919 + step + 1)
    return torch.rand(batch_size, generator=g) < 0.5


def role_seed(seed: int, role: str) -> int:
    """The seed of a role's own data order: a pure function of the run's seed and the role's name."""
    return seed + 104_729 * (1 + zlib.crc32(role.encode()) % 9_973)


def captioner(text: TextSpec | None, ds, progress: bool, *, variants: bool = False) -> Callable[[list[str]], Cond] | None:
    """For text-conditional models: caption -> text states, from the on-disk embedding cache
    (every caption of the data set, and with ``variants`` their other phrasings, is encoded once, up front)."""
    if text is None:
        return None
    if ds.captions is None:
        raise ConfigError("this model paints from text but the data has no captions; add NAME.txt files or a "
                          "metadata.jsonl (see README), or train a class-conditional/unconditional model")
    from .text import EmbeddingCache, text_encoder_for
    encoder = text_encoder_for(text)
    if encoder.dim != text.dim:
        raise ConfigError(f"the text encoder in {encoder.folder} gives {encoder.dim}-d states but the model "
                          f"expects --model.text_dim={text.dim}")
    cache = EmbeddingCache(progress=progress)
    texts = list(ds.captions)
    if variants and ds.variants is not None:
        texts += [v for options in ds.variants for v in options]
    cache.embed(texts, encoder)
    return lambda captions: cache.embed(captions, encoder)


CACHE_BYTES = 2 << 30      # the largest posterior cache kept in memory


def posterior_cache(model: FrozenEncoding, ds: ImageDataset, dev: torch.device, progress: bool, chunk: int = 16) -> Tensor | None:
    """The output of a model's frozen encoder (``frozen_stats``) for every training image, (N, ...) on the CPU.

    A latent diffusion model otherwise runs its frozen autoencoder on every batch
    (a fifth of the painter's training step on a CPU).  None when the model has no
    frozen encoder or the cache would take over CACHE_BYTES; the trainer also leaves
    it off for randomly flipped data, whose pictures change from step to step.
    Small chunks stay in the CPU's caches: the painter's autoencoder takes 2.6 ms
    a picture in chunks of 16 and 5.9 ms in chunks of 256 on 2 cores.
    """
    encode = model.frozen_stats
    first = encode(ds.batch([0]).images.to(dev))
    if first is None:
        return None
    size = first.numel() * first.element_size() * len(ds)
    if size > CACHE_BYTES:
        if progress:
            print(f"not caching the autoencoder's output ({size / 2**30:.1f} GiB): encoding every batch instead")
        return None
    start = time.perf_counter()
    parts = []
    for i in range(0, len(ds), chunk):
        stats = encode(ds.batch(range(i, min(i + chunk, len(ds)))).images.to(dev))
        assert stats is not None                     # the first picture had some, so every one has
        parts.append(stats.cpu())
    if progress:
        print(f"encoded the {len(ds)} pictures once with the frozen autoencoder in "
              f"{time.perf_counter() - start:.0f} s (--train.cache_posterior=false encodes every batch)")
    return torch.cat(parts)


@dataclass
class Feed:
    """The batch of every step: the main data's (its order, flips, phrasings, cached encoder output) and, in
    ``Batch.roles``, each other data set's (paired: the same pictures' other side, same flips; else an order
    of its own)."""

    ds: ImageDataset
    tc: TrainConfig
    flip: bool = False
    weights: Tensor | None = None
    posterior: Tensor | None = None
    embed: Callable[[list[str]], Cond] | None = None
    roles: Mapping[str, tuple[DataRole, ImageDataset]] = field(default_factory=dict)

    def batch(self, step: int) -> Batch:
        tc, ds = self.tc, self.ds
        idx, _, _ = batch_indices(step, tc.batch_size, len(ds), tc.seed, self.weights)
        flip = flips_at(step, tc.batch_size, tc.seed) if self.flip else None
        batch = ds.batch(idx.numpy(), flip=flip)
        if self.posterior is not None:
            batch.posterior = self.posterior[idx]
        if self.embed is not None and ds.captions is not None:     # captioner() refuses data without captions
            texts = phrasings_at(step, idx.tolist(), ds.captions, ds.variants, tc.variants, tc.seed) \
                if ds.variants is not None and tc.variants > 0 else [ds.captions[i] for i in idx.tolist()]
            batch.cond = self.embed(texts)
        for name, (role, data) in self.roles.items():
            if role.paired:
                batch.roles[name] = data.batch(idx.numpy(), flip=flip)
            else:
                own, _, _ = batch_indices(step, tc.batch_size, len(data), role_seed(tc.seed, name))
                batch.roles[name] = data.batch(own.numpy(),
                                               flip=flips_at(step, tc.batch_size, role_seed(tc.seed, name))
                                               if self.flip else None)
        return batch

    def position(self, step: int) -> dict[str, int]:
        """Where the main data's order stands at ``step`` (stored in checkpoints, for people reading them)."""
        _, epoch, pos = batch_indices(step, self.tc.batch_size, len(self.ds), self.tc.seed, self.weights)
        return {"epoch": epoch, "position": pos}
