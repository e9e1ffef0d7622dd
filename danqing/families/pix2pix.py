"""Pix2Pix (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks") in the danqing
protocol: paired pictures A -> B.  The networks are in ``danqing.nn.translate``.

Data: the run's main data (``--data``) is domain B, the targets; the paired role ``a`` holds the same pictures'
domain-A side (same file names, same flips).  In a batch, ``batch.images`` is B and ``batch.roles["a"].images``
is A, both (B, C, S, S) in [-1, 1].

Objective (sec. 3.1): G* = arg min_G max_D L_cGAN(G, D) + lambda L_L1(G), lambda = 100, with
    L_cGAN = E_{x,y}[log D(x, y)] + E_x[log(1 - D(x, G(x)))]                     (eq. 1)
    L_L1   = E_{x,y}[||y - G(x)||_1]                                              (eq. 3)
The discriminator sees A and B concatenated along channels; G is trained with the non-saturating form
-log D(x, G(x)) (sec. 3.3, after Goodfellow et al. 2014) and D's objective is divided by 2 (sec. 3.3).
Noise is dropout only (sec. 2.1), on in training and, as in the paper, at test time (``Options.dropout``).
Random jitter (sec. 6.2): both sides resized up by 286/256 and randomly cropped back, identically (``jitter``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.translate import NORMS, TRAIN_DEFAULTS, PatchGAN, UNet, check_input, output_facts, unet_depth
from ..options import option
from ..protocol import Batch, Cond, DataRole, FamilySpec, Generators, Phase, Translates, randn


@dataclass(frozen=True)
class Config:
    image_size: int = 64                 # a power of two >= 8; the U-Net goes down to 1x1
    image_channels: int = 3              # domain B, the output
    input_channels: int = 3              # domain A, the input
    g_channels: int = 64                 # the U-Net's first encoder width (the paper's C64)
    g_max_channels: int = 512            # ... doubled per layer up to this (C512)
    dropout_blocks: int = 3              # decoder blocks with dropout 0.5 (the paper's CD512 x 3)
    d_channels: int = 64
    d_max_channels: int = 512
    d_layers: int = 0                    # PatchGAN stride-2 layers (0: the 70/256 receptive field, patch_layers)
    norm: str = "instance"               # instance or batch (see danqing.nn.translate)
    l1_weight: float = 100.0             # lambda of eq. 4
    jitter: float = 1.1171875            # resize factor of the random jitter (286/256, sec. 6.2); 1 = off


@dataclass(frozen=True)
class Options:
    dropout: bool = option(True, "dropout at test time, the generator's noise (as the paper): each seed paints its "
                                 "own variant; off paints one picture whatever the seed")


def jitter_offsets(n: int, size: int, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """The crop corners (n, 2) as (row, column) of a ``size`` crop from pictures resized to ``round(size * scale)``,
    drawn uniformly (on the CPU, from ``generator`` or torch's global RNG)."""
    big = round(size * scale)
    return torch.randint(0, big - size + 1, (n, 2), generator=generator, device="cpu")


def jitter(a: Tensor, b: Tensor, offsets: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Pix2Pix's random jitter (Isola et al. sec. 6.2), applied identically to both sides so they stay aligned:
    A and B (n, C_a, S, S), (n, C_b, S, S) resized bilinearly to round(S * scale) and cropped back to S at
    ``offsets`` (n, 2), picture i at its own corner.  Resizing the two concatenated along channels makes the
    alignment hold by construction."""
    n, ca, s = a.shape[0], a.shape[1], a.shape[-1]
    big = round(s * scale)
    if big == s:
        return a, b
    both = F.interpolate(torch.cat([a, b], dim=1), size=(big, big), mode="bilinear", align_corners=False)
    crops = torch.stack([both[i, :, y:y + s, x:x + s] for i, (y, x) in enumerate(offsets.tolist())])
    return crops[:, :ca], crops[:, ca:]                                      # (n, C_a, S, S), (n, C_b, S, S)


class Pix2Pix(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        c = config
        unet_depth(c.image_size)                                            # a power of two >= 8
        if c.norm not in NORMS:
            raise ValueError(f"unknown norm {c.norm!r}; choose {' or '.join(NORMS)}")
        if min(c.g_channels, c.d_channels, c.g_max_channels, c.d_max_channels, c.input_channels) < 1:
            raise ValueError("the channel widths must be at least 1")
        if c.jitter < 1 or c.l1_weight < 0 or c.dropout_blocks < 0 or c.d_layers < 0:
            raise ValueError("jitter must be at least 1; l1_weight, dropout_blocks and d_layers must not be negative")
        self.config = config
        self.g = UNet(c.input_channels, c.image_channels, c.image_size, c.g_channels, c.g_max_channels, c.norm,
                      c.dropout_blocks)
        self.d = PatchGAN(c.input_channels + c.image_channels, c.image_size, c.d_channels, c.d_max_channels,
                          c.d_layers, c.norm)

    def phases(self) -> list[Phase]:
        return [Phase("d", "d"), Phase("g", "g")]

    def _pair(self, batch: Batch, carry: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """This step's (A, B), jittered once and shared by both phases through ``carry``."""
        if "pair" not in carry:
            if "a" not in batch.roles:
                raise ValueError("Pix2Pix trains on pairs: give the input pictures as the data role a "
                                 "(--role a=DIR, the same file names as --data)")
            a, b = batch.roles["a"].images, batch.images
            offsets = jitter_offsets(len(b), b.shape[-1], self.config.jitter)
            carry["pair"] = jitter(a, b, offsets, self.config.jitter)
        return carry["pair"]

    def _noise(self, shape: tuple[int, ...]) -> Tensor:
        return torch.randn(shape, device=next(self.parameters()).device)

    def loss(self, batch: Batch, phase: str, step: int = 0, carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        a, b = self._pair(batch, {} if carry is None else carry)
        if phase == "d":
            with torch.no_grad():
                fake = self.g(a, self._noise)
            real_logit = self.d(torch.cat([a, b], dim=1)).float()           # (B, 1, h, w): one logit a patch
            fake_logit = self.d(torch.cat([a, fake], dim=1)).float()
            # -(eq. 1), halved (sec. 3.3): softplus(-l) = -log sigmoid(l), softplus(l) = -log(1 - sigmoid(l))
            loss = 0.5 * (F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean())
            return {"loss": loss, "real": real_logit.mean().detach(), "fake": fake_logit.mean().detach()}
        if phase == "g":
            fake = self.g(a, self._noise)
            gan = F.softplus(-self.d(torch.cat([a, fake], dim=1)).float()).mean()       # non-saturating
            l1 = (fake.float() - b.float()).abs().mean()                                  # eq. 3
            return {"loss": gan + self.config.l1_weight * l1, "gan": gan.detach(), "l1": l1.detach()}
        raise ValueError(f"unknown phase {phase!r}; Pix2Pix has {[p.name for p in self.phases()]}")

    @torch.no_grad()
    def translate(self, cond: Cond, *, generator: Generators = None, options: Options | None = None) -> Tensor:
        """``cond.image`` (B, input_channels, S, S) in [-1, 1], domain A -> (B, image_channels, S, S), domain B.
        S: a multiple of the training size.  With ``options.dropout`` (the default, as the paper) picture i's
        dropout masks come from ``generator[i]``, so a seed gives the same picture at any batch size."""
        o = options if options is not None else Options()
        if cond.image is None:
            raise ValueError("Pix2Pix translates a picture: give it as cond.image")
        dev = next(self.parameters()).device
        x = cond.image.to(dev, torch.float32)
        check_input(x, self.config.input_channels, self.g.multiple, "this Pix2Pix model")
        noise = (lambda shape: randn(shape, generator, dev)) if o.dropout else None
        return self.g(x, noise).float().clamp(-1, 1)


Model = Pix2Pix

PRESETS: dict[str, Config] = {
    # conformance tests: 16 px, 8,364 parameters (U-Net 7,319, PatchGAN 1,045)
    "tiny": Config(image_size=16, g_channels=4, g_max_channels=8, d_channels=4, d_max_channels=8),
    # 64-px emoji pictures on a 2-core CPU: 2,734,884 parameters (U-Net 2,595,299, C32-C64-C128-C128-...;
    # PatchGAN 139,585, C64-C128 with a 16-px field, the 70/256 share at 64 px); about 0.2 s a step at batch 4
    "emoji": Config(image_size=64, g_channels=32, g_max_channels=128, d_channels=64, d_max_channels=128),
    "paper": Config(image_size=256),                 # 57,183,236: U-Net 54,414,531, 70x70 PatchGAN 2,768,705
}


ROLES = (DataRole("a", "the input pictures (domain A), paired with --data (domain B) by file name", paired=True),)

SPEC = FamilySpec("pix2pix", Config, Pix2Pix, PRESETS, "Pix2Pix: paired picture-to-picture translation, U-Net + "
                  "PatchGAN, L1 + conditional GAN", TRAIN_DEFAULTS, Options, frozenset({Translates}), output_facts,
                  ema_module="g", roles=ROLES)
