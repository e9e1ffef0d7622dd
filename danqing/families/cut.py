"""CUT and FastCUT (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image Translation") in the
danqing protocol: unpaired pictures A -> B with one generator.  The networks are in ``danqing.nn.translate``.

Data: as CycleGAN: ``--data`` is domain B (``batch.images``), the unpaired role ``a`` domain A
(``batch.roles["a"].images``), both (B, C, S, S) in [-1, 1].

The generator G is CycleGAN's ResNet; its encoder's activations at ``nce_layers`` (the picture, the two
downsamplings, residual blocks: ``ResnetGenerator.encode``) feed, layer by layer, a 2-layer MLP head H_l
(Linear-ReLU-Linear to ``nce_dim``, then L2-normalised; sec. 3.2).  PatchNCE (eq. 3, eq. 2): at ``num_patches``
locations s, shared by query and key, the query is H_l(G_enc(G(x)))_s, the positive H_l(G_enc(x))_s, and the
negatives are H_l(G_enc(x)) at the picture's other sampled locations:
    l(v, v+, v-) = -log [exp(v.v+ / tau) / (exp(v.v+ / tau) + sum_n exp(v.v-_n / tau))],   tau = 0.07
averaged over locations and layers.  The objective (eq. 5):
    L_GAN(G, D, X, Y) + lambda_X L_PatchNCE(G, H, X) + lambda_Y L_PatchNCE(G, H, Y)
with LSGAN (as CycleGAN).  CUT: lambda_X = lambda_Y = 1, the second term being the identity loss on B (G(y) ~ y);
the reference code averages the two terms, which is lambda = 1/2 each; danqing follows eq. 5.  FastCUT
(``fast``): lambda_X = 10, lambda_Y = 0, and flip-equivariance augmentation (the input flipped at random and
the output's features flipped back before PatchNCE).

Phases: ``d`` then ``g``; ``g`` trains the sub-module ``g`` (``g.net``, the generator, and ``g.heads``, the
projection heads) with one optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.translate import (NORMS, TRAIN_DEFAULTS, UNPAIRED_A, PatchGAN, ResnetGenerator, check_input, ls_d_loss,
                            ls_g_loss, output_facts)
from ..protocol import Batch, Cond, FamilySpec, Generators, NoOptions, Phase, Translates


@dataclass(frozen=True)
class Config:
    image_size: int = 64                 # a multiple of 4
    image_channels: int = 3              # domain B
    input_channels: int = 3              # domain A
    g_channels: int = 64
    g_blocks: int = 9
    d_channels: int = 64
    d_max_channels: int = 512
    d_layers: int = 0                    # PatchGAN stride-2 layers (0: the 70/256 receptive field, patch_layers)
    norm: str = "instance"
    nce_layers: tuple[int, ...] = (0, 2, 3, 4, 8)   # the picture, d128, d256, residual blocks 1 and 5 (sec. C.1)
    num_patches: int = 256               # sampled locations per layer
    nce_dim: int = 256                   # the projection heads' width
    tau: float = 0.07                    # the temperature of eq. 2
    fast: bool = False                   # FastCUT: lambda_NCE = 10, no identity term, flip equivariance

    @property
    def nce_weight(self) -> float:
        return 10.0 if self.fast else 1.0


def patch_nce(query: Tensor, keys: Tensor, tau: float = 0.07) -> Tensor:
    """PatchNCE's cross-entropy (Park et al. eq. 2 over the patches of eq. 3): ``query`` and ``keys`` (B, N, D),
    L2-normalised; key i is query i's positive, the picture's N - 1 other keys its negatives.  Returns the loss of
    every query, (B, N): -log softmax_j(q_i . k_j / tau) at j = i."""
    logits = torch.bmm(query.float(), keys.float().transpose(1, 2)) / tau          # (B, N, N): q_i . k_j / tau
    target = torch.arange(query.shape[1], device=query.device).expand(query.shape[0], -1)   # (B, N)
    return F.cross_entropy(logits.transpose(1, 2), target, reduction="none")          # (B, N)


class WithHeads(nn.Module):
    """The generator and its PatchNCE projection heads, one per layer: trained together by phase ``g``."""

    def __init__(self, c: Config):
        super().__init__()
        self.net = ResnetGenerator(c.input_channels, c.image_channels, c.g_channels, c.g_blocks, c.norm)
        if c.nce_layers and max(c.nce_layers) >= len(self.net.widths) or min(c.nce_layers, default=0) < 0:
            raise ValueError(f"nce_layers {c.nce_layers} names layers the generator lacks: it has 0-"
                             f"{len(self.net.widths) - 1} (0 the picture, 1-3 the stem and downsamplings, 4 + k "
                             "residual block k)")
        self.heads = nn.ModuleList([nn.Sequential(nn.Linear(self.net.widths[i], c.nce_dim), nn.ReLU(True),
                                                  nn.Linear(c.nce_dim, c.nce_dim)) for i in c.nce_layers])


class CUT(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        c = config
        if c.image_size < 8 or c.image_size % 4:
            raise ValueError(f"CUT needs an image_size that is a multiple of 4 and at least 8, got {c.image_size}")
        if c.norm not in NORMS:
            raise ValueError(f"unknown norm {c.norm!r}; choose {' or '.join(NORMS)}")
        if min(c.g_channels, c.d_channels, c.d_max_channels, c.input_channels, c.num_patches, c.nce_dim) < 1:
            raise ValueError("the channel widths, num_patches and nce_dim must be at least 1")
        if c.tau <= 0 or c.g_blocks < 0 or c.d_layers < 0 or not c.nce_layers:
            raise ValueError("tau must be positive, g_blocks and d_layers not negative, and nce_layers not empty")
        if not c.fast and c.input_channels != c.image_channels:
            raise ValueError("CUT's identity term feeds the generator domain-B pictures, so it needs input_channels "
                             "== image_channels; train FastCUT (--model.fast=true) instead")
        self.config = config
        self.g = WithHeads(c)
        self.d = PatchGAN(c.image_channels, c.image_size, c.d_channels, c.d_max_channels, c.d_layers, c.norm)

    def phases(self) -> list[Phase]:
        return [Phase("d", "d"), Phase("g", "g")]

    def _sides(self, batch: Batch) -> tuple[Tensor, Tensor]:
        if "a" not in batch.roles:
            raise ValueError("CUT trains on two sets of pictures: give domain A as the data role a (--role a=DIR); "
                             "--data is domain B")
        return batch.roles["a"].images, batch.images

    def nce(self, source: Tensor, output: Tensor, flipped: bool = False) -> Tensor:
        """L_PatchNCE (eq. 3) between ``source`` (B, C_a, S, S) and G's ``output`` for it (B, C_b, S, S), averaged
        over the sampled locations and the layers; ``flipped``: the output is of the flipped source, so its
        features are flipped back first (FastCUT's flip equivariance)."""
        c = self.config
        queries = self.g.net.encode(output, c.nce_layers)
        keys = self.g.net.encode(source, c.nce_layers)
        total = output.new_zeros((), dtype=torch.float32)
        for head, q, k in zip(self.g.heads, queries, keys):
            if flipped:
                q = q.flip(3)
            hw = q.shape[2] * q.shape[3]
            ids = torch.randperm(hw, device="cpu")[:c.num_patches].to(q.device)   # (N,) shared by q and k
            pick = lambda f: F.normalize(head(f.flatten(2).transpose(1, 2)[:, ids]).float(), dim=-1)  # noqa: E731
            total = total + patch_nce(pick(q), pick(k), c.tau).mean()               # (B, N, nce_dim) each
        return total / len(queries)

    def loss(self, batch: Batch, phase: str, step: int = 0, carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        c = self.config
        a, b = self._sides(batch)
        if phase == "d":
            with torch.no_grad():
                fake = self.g.net(a)
            loss = ls_d_loss(self.d(b), self.d(fake))
            return {"loss": loss}
        if phase == "g":
            flipped = c.fast and float(torch.rand((), device="cpu")) < 0.5
            source = a.flip(3) if flipped else a
            # one pass for G(a) and, for CUT, the identity G(b): (2B, C, S, S) split in two
            both = self.g.net(source if c.fast else torch.cat([source, b]))
            fake, idt = both[:len(a)], both[len(a):]
            gan = ls_g_loss(self.d(fake))
            nce_x = self.nce(a, fake, flipped)
            total = gan + c.nce_weight * nce_x
            out = {"gan": gan.detach(), "nce": nce_x.detach()}
            if not c.fast:
                nce_y = self.nce(b, idt)
                total = total + c.nce_weight * nce_y
                out["nce_identity"] = nce_y.detach()
            return {"loss": total, **out}
        raise ValueError(f"unknown phase {phase!r}; CUT has {[p.name for p in self.phases()]}")

    @torch.no_grad()
    def translate(self, cond: Cond, *, generator: Generators = None, options: NoOptions | None = None) -> Tensor:
        """``cond.image`` (B, input_channels, S, S) in [-1, 1], domain A -> domain B (B, image_channels, S, S).
        S: a multiple of 4.  Deterministic: ``generator`` is not used."""
        if cond.image is None:
            raise ValueError("CUT translates a picture: give it as cond.image")
        x = cond.image.to(next(self.parameters()).device, torch.float32)
        check_input(x, self.config.input_channels, self.g.net.multiple, "this CUT model")
        return self.g.net(x).float().clamp(-1, 1)


Model = CUT

PRESETS: dict[str, Config] = {
    # conformance tests: 16 px, 11,504 parameters (generator 8,811, heads 1,840, PatchGAN 853)
    "tiny": Config(image_size=16, g_channels=4, g_blocks=1, d_channels=4, d_max_channels=8, nce_layers=(0, 2, 3, 4),
                   num_patches=32, nce_dim=16),
    # 64-px emoji pictures on a 2-core CPU: 2,244,356 parameters (generator 1,966,915: c7s1-32, d64, d128,
    # 6 x R128; heads 140,928; PatchGAN 136,513); about 1 s a step at batch 4.  "fast": the same as FastCUT
    "emoji": Config(image_size=64, g_channels=32, g_blocks=6, d_channels=64, d_max_channels=128,
                    nce_layers=(0, 2, 3, 4, 6), nce_dim=128),
    "fast": Config(image_size=64, g_channels=32, g_blocks=6, d_channels=64, d_max_channels=128,
                   nce_layers=(0, 2, 3, 4, 6), nce_dim=128, fast=True),
    "paper": Config(image_size=256),                 # 14,709,444
}


ROLES = (UNPAIRED_A,)

SPEC = FamilySpec("cut", Config, CUT, PRESETS, "CUT / FastCUT: unpaired one-way translation, PatchNCE + LSGAN",
                  TRAIN_DEFAULTS, NoOptions, frozenset({Translates}), output_facts, ema_module="g", roles=ROLES)
