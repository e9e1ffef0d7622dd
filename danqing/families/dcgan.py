"""DCGAN (Radford et al. 2016) as a two-player game in the danqing protocol.

Phases: ``d`` trains the discriminator, ``g`` the generator, both with the
non-saturating logistic loss (Goodfellow et al. 2014, sec. 3); an optional
lazy R1 penalty on real images (Mescheder et al. 2018, eq. 9) runs as phase
``d_reg`` every ``r1_every`` steps, scaled by that interval (StyleGAN2, sec. 3.1).
Class conditioning: the generator concatenates a class embedding to z; the
discriminator is a projection discriminator (Miyato & Koyama 2018, eq. 3):
D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import projection
from ..generate import slerp
from ..nn.augment import Augmenter, d_loss, r1_loss, see
from ..nn.blocks import minibatch_std
from ..protocol import (Batch, Cond, Distance, Facts, FamilySpec, Generates, Generators, NoOptions, Phase, Projects,
                        randn)


@dataclass(frozen=True)
class Config:
    image_size: int = 32                 # a power of two >= 8
    image_channels: int = 3
    z_dim: int = 100
    g_channels: int = 64                 # generator width at the highest resolution
    d_channels: int = 64                 # discriminator width at the highest resolution
    max_channels: int = 512
    num_classes: int = 0                 # 0 = unconditional
    r1_gamma: float = 0.0                # R1 weight (0 = off)
    r1_every: int = 16                   # lazy regularisation interval
    mbstd_group: int = 0                 # minibatch-stddev feature in D over groups of this size (0 = off)
    augment: str = ""                    # what D's inputs go through (nn.augment), e.g. "color,translation,cutout"
    ada: bool = False                    # ... with ADA's adaptive probability instead of always
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0


def _widths(base: int, cap: int, levels: int) -> list[int]:
    """Channel widths from the highest resolution down: base, 2*base, ... capped."""
    return [min(base * 2**i, cap) for i in range(levels)]


class Generator(nn.Module):
    """z (B, z_dim) [+ class] -> image (B, C, S, S) in [-1, 1]: project to 4x4, then
    stride-2 transposed convolutions with BatchNorm + ReLU, tanh out (DCGAN sec. 3)."""

    def __init__(self, c: Config):
        super().__init__()
        levels = c.image_size.bit_length() - 3            # 4x4 -> S takes log2(S) - 2 upsamplings
        w = _widths(c.g_channels, c.max_channels, levels)[::-1]   # low resolution first
        self.embed = nn.Embedding(c.num_classes, c.z_dim) if c.num_classes else None
        zin = c.z_dim * (2 if c.num_classes else 1)
        self.project = nn.Sequential(nn.ConvTranspose2d(zin, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(True))
        blocks = []
        for a, b in zip(w, w[1:]):
            blocks += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        blocks += [nn.ConvTranspose2d(w[-1], c.image_channels, 4, 2, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.blocks(self.project(z[:, :, None, None]))


class Discriminator(nn.Module):
    """image -> logit (B,): stride-2 convolutions with LeakyReLU(0.2), no normalisation
    (so the R1 gradient penalty is per-sample), projection head for classes."""

    def __init__(self, c: Config):
        super().__init__()
        levels = c.image_size.bit_length() - 3
        w = _widths(c.d_channels, c.max_channels, levels)
        layers = [nn.Conv2d(c.image_channels, w[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for a, b in zip(w, w[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)              # (B, w[-1], 4, 4)
        self.mbstd_group = c.mbstd_group
        self.fc = nn.Linear((w[-1] + (1 if c.mbstd_group else 0)) * 16, w[-1])
        self.out = nn.Linear(w[-1], 1)
        self.embed = nn.Embedding(c.num_classes, w[-1]) if c.num_classes else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        f = self.features(x)
        if self.mbstd_group:
            f = minibatch_std(f, self.mbstd_group)
        h = F.leaky_relu(self.fc(f.flatten(1)), 0.2)                     # phi(x): (B, w)
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(dim=1)          # projection term
        return logit


class DCGAN(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        if config.image_size < 8 or config.image_size & (config.image_size - 1):
            raise ValueError(f"DCGAN needs a power-of-two image_size >= 8, got {config.image_size}")
        self.config = config
        self.g = Generator(config)
        self.d = Discriminator(config)
        c = config
        self.aug = Augmenter(c.augment, c.ada, c.ada_target, c.ada_interval, c.ada_kimg) if c.augment else None

    def phases(self) -> list[Phase]:
        ph = [Phase("d", "d"), Phase("g", "g")]
        if self.config.r1_gamma > 0:
            ph.insert(1, Phase("d_reg", "d", every=self.config.r1_every))
        return ph

    def _labels(self, labels: Tensor | None, n: int, device) -> Tensor | None:
        if not self.config.num_classes:
            return None
        if labels is None:
            raise ValueError("this GAN is class-conditional: give class labels (data with classes, or --class)")
        return labels.to(device)

    def loss(self, batch: Batch, phase: str, step: int = 0, carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        real = batch.images
        b = real.shape[0]
        labels = self._labels(batch.labels, b, real.device)
        if phase == "d_reg":
            return r1_loss(self.d, self.aug, real, labels, self.config.r1_gamma, self.config.r1_every)
        z = torch.randn(b, self.config.z_dim, device=real.device)
        if phase == "d":
            with torch.no_grad():
                fake = self.g(z, labels)
            return d_loss(self.d, self.aug, real, fake, labels, step)
        if phase == "g":
            return {"loss": F.softplus(-self.d(see(self.aug, self.g(z, labels)), labels)).mean()}   # non-saturating
        raise ValueError(f"unknown phase {phase!r}; DCGAN has {[p.name for p in self.phases()]}")

    @torch.no_grad()
    def noise(self, n: int, generator: Generators = None, size: int | None = None) -> Tensor:
        """The latent codes z (n, z_dim) that ``sample`` maps to pictures."""
        return randn((n, self.config.z_dim), generator, next(self.parameters()).device)

    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None,
               noise: Tensor | None = None, options: NoOptions | None = None) -> Tensor:
        z = self.noise(n, generator) if noise is None else noise
        labels = self._labels(None if cond is None else cond.labels, n, z.device)
        return self.g(z, labels).float().clamp(-1, 1)

    # ---------------------------------------------------------------- projection
    spaces = ("z",)
    CANDIDATES = 256                     # random codes tried for the start of the search

    def project(self, images: Tensor, cond: Cond | None = None, *, steps: int = 200, space: str = "",
                distance: Distance | None = None, generator: Generators = None,
                callback: Callable[..., None] | None = None) -> dict[str, Tensor]:
        """The codes z that paint ``images`` (B, C, S, S) in [-1, 1]: {"z": (B, z_dim)}.  The search starts at
        the nearest (in pixels) of CANDIDATES random codes and runs the StyleGAN2 projector's schedule (see
        ``danqing.projection``) with z kept on the sphere of radius sqrt(z_dim), where nearly all of a Gaussian's
        draws lie (as PULSE does, Menon et al. 2020, sec. 3.3): off it the generator paints what it never
        learned to, and a search left free finds pictures that match in pixels and look like nothing."""
        if space not in ("", *self.spaces):
            raise ValueError(f"a DCGAN projects into z, not {space!r}")
        dev, n = next(self.parameters()).device, len(images)
        target = images.to(dev).float()
        labels = self._labels(None if cond is None else cond.labels, n, dev)
        rng = generator if generator is None or isinstance(generator, torch.Generator) else generator[0]
        with torch.no_grad():
            k = self.CANDIDATES
            pool = randn((k, self.config.z_dim), rng, dev)                              # (K, z_dim)
            starts = []
            for b in range(n):
                tried = self.g(pool, None if labels is None else labels[b:b + 1].expand(k)).float()
                starts.append(pool[projection.pixel_distance(tried, target[b:b + 1].expand(k, -1, -1, -1)).argmin()])
            z = torch.stack(starts)
        radius = self.config.z_dim ** 0.5
        projection.search(lambda code, _: self.g(code, labels), z, [], target, steps=steps,
                          distance=distance or projection.pixel_distance, spread=radius, generator=rng,
                          constrain=lambda code: code.mul_(radius / code.norm(dim=1, keepdim=True).clamp_min(1e-8)),
                          callback=callback)
        return {"z": z.detach()}

    @torch.no_grad()
    def render(self, latent: Mapping[str, Tensor], cond: Cond | None = None, *, options: NoOptions | None = None,
               toward: Tensor | None = None, strength: Tensor | None = None) -> Tensor:
        """The pictures of projected codes, each moved ``strength`` of the way (on the sphere) to ``toward``."""
        z = latent["z"].to(next(self.parameters()).device).float()
        if z.shape[1:] != (self.config.z_dim,):
            raise ValueError(f"the latent's codes are {tuple(z.shape[1:])}, this model's ({self.config.z_dim},): "
                             "it was projected with another model")
        if toward is not None and strength is not None:
            z = slerp(z, toward.to(z), strength.to(z))
        return self.sample(len(z), cond, noise=z)


Model = DCGAN

PRESETS: dict[str, Config] = {
    "tiny": Config(image_size=16, z_dim=16, g_channels=16, d_channels=16, num_classes=10, r1_gamma=1.0, r1_every=2),
    # without R1 this preset collapses to one image per class within a minute; gamma = 1 keeps it diverse
    "digits": Config(image_size=32, image_channels=1, z_dim=64, g_channels=32, d_channels=32, num_classes=10,
                     r1_gamma=1.0),
    "small": Config(image_size=32, z_dim=100, g_channels=64, d_channels=64),
    "base": Config(image_size=64, z_dim=128, g_channels=64, d_channels=64, r1_gamma=1.0, mbstd_group=4),
}

# DCGAN sec. 4: Adam, lr 2e-4, beta1 = 0.5; no weight decay, no EMA warm start needed.
TRAIN_DEFAULTS: dict[str, object] = {"lr": 2e-4, "betas": (0.5, 0.99), "warmup": 0, "grad_clip": 0.0, "ema_decay": 0.999}


def facts(c: Config) -> Facts:
    return Facts(c.image_size, c.image_channels, c.num_classes)


# the trainer keeps an EMA of the generator only
SPEC = FamilySpec("dcgan", Config, DCGAN, PRESETS, "DCGAN with lazy R1 and a projection discriminator",
                  TRAIN_DEFAULTS, capabilities=frozenset({Generates, Projects}), facts=facts, ema_module="g")
