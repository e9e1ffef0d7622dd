"""The one protocol every danqing family speaks.

A family is an ``nn.Module`` with a frozen ``config``, a list of training
``phases`` and two methods: ``loss(batch, phase)`` and ``sample(n, cond, generator=...)``.
It never owns optimisers, data loaders or devices: the trainer (``danqing.train``)
does.  A GAN is simply a family with two phases (``d`` and ``g``) that optimise
two different sub-modules; a lazily regularised GAN adds a third that runs every
k steps (StyleGAN2, Karras et al. 2020, sec. 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class Phase:
    """One optimisation step of a training iteration.

    name:   passed to ``Family.loss``.
    module: attribute name of the sub-module whose parameters this phase
            optimises ("" = the whole model).  Phases naming the same module
            share one optimiser (e.g. ``d`` and the lazy ``d_reg``).
    every:  run this phase on steps where ``step % every == 0``.
    """

    name: str
    module: str = ""
    every: int = 1


@dataclass
class Cond:
    """Conditioning for sampling or training.  Every field is optional and
    batched along dim 0; families read the fields they understand."""

    labels: Tensor | None = None     # (B,) int64 class ids; a family's null id means "unconditional"
    text: Tensor | None = None       # (B, T, D) per-token text-encoder states (cross-attention keys/values)
    text_mask: Tensor | None = None  # (B, T) bool, True for real tokens
    pooled: Tensor | None = None     # (B, D) pooled sentence embedding

    def cat(self, other: "Cond") -> "Cond":
        """Concatenate two conditions along the batch (used by classifier-free guidance)."""
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if (a is None) != (b is None):
                raise ValueError(f"cannot concatenate conditions: field {f.name!r} is set in only one of them")
            out[f.name] = None if a is None else torch.cat([a, b])
        return Cond(**out)

    def to(self, device: torch.device | str) -> "Cond":
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if getattr(self, f.name) is not None})


@dataclass
class Batch:
    """A training batch.  ``images`` are float in [-1, 1], shape (B, C, H, W)."""

    images: Tensor
    labels: Tensor | None = None        # (B,) int64, or None for unlabelled data
    captions: list[str] | None = None
    cond: Cond | None = None            # precomputed conditioning, e.g. caption embeddings
    posterior: Tensor | None = None     # precomputed output of a frozen encoder: (B, 2z, h, w), mean then logvar

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device), None if self.labels is None else self.labels.to(device), self.captions,
                     None if self.cond is None else self.cond.to(device),
                     None if self.posterior is None else self.posterior.to(device))


@runtime_checkable
class Trainable(Protocol):
    """What the trainer needs: the phases of a step and each phase's loss."""

    config: object

    def phases(self) -> list[Phase]: ...

    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        """Return a dict of scalars; ``"loss"`` is optimised, the rest are logged."""
        ...


@runtime_checkable
class Family(Trainable, Protocol):
    """A generator: trainable, and it paints from noise it can hand out (its latent space)."""

    def noise(self, n: int, generator: Generators = None, size: int | None = None) -> Tensor:
        """The standard normal noise ``sample`` starts from for n images: z for a GAN or a VAE, x_T for diffusion."""
        ...

    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None,
               noise: Tensor | None = None) -> Tensor:
        """Return ``n`` images in [-1, 1], shape (n, C, H, W); from ``noise`` when given, else from ``generator``."""
        ...


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise of ``shape`` where row i comes from ``generator[i]``.

    With one generator per image, image i is the same at any batch size
    (house rule).  A single generator (or None) draws the whole batch at once.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(*shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}: pass one per image")
    return torch.stack([torch.randn(*shape[1:], generator=g, device=device) for g in generator])


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per image."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]
