"""Diffusion in three layers (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", EDM):

1. a backbone network F (``danqing.nn.unet.UNet``),
2. the preconditioning that turns F into a denoiser D(x; sigma) (EDM eq. 7, Table 1),
3. samplers (``danqing.sampling``) that only ever see D.

Training draws ln(sigma) ~ N(P_mean, P_std^2) and minimises the weighted
denoising loss lambda(sigma) * ||D(y + n; sigma) - y||^2 (EDM eq. 8, Table 1).
Class labels are dropped to a null class with probability ``cond_drop`` so the
same network also learns the unconditional model used by classifier-free
guidance (Ho & Salimans 2022).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn.unet import UNet
from ..protocol import Batch, Cond, Generators, Phase, randn
from ..sampling import SAMPLERS, cfg, karras_sigmas


@dataclass(frozen=True)
class Config:
    image_size: int = 32
    image_channels: int = 3
    channels: int = 32                       # UNet base width
    mult: tuple[int, ...] = (1, 2, 2)
    num_res: int = 2
    attn: tuple[int, ...] = (8,)             # resolutions with self-attention
    dropout: float = 0.0
    num_classes: int = 0                     # 0 = unconditional
    cond_drop: float = 0.1                   # p(label -> null) in training, for classifier-free guidance
    sigma_data: float = 0.5                  # EDM: std of the data
    p_mean: float = -1.2                     # EDM: ln(sigma) ~ N(p_mean, p_std^2) in training
    p_std: float = 1.2
    sigma_min: float = 0.002                 # EDM sampling range
    sigma_max: float = 80.0
    rho: float = 7.0
    # sampling defaults (overridable per call)
    sampler: str = "heun"
    steps: int = 18
    guidance: float = 1.0


class Diffusion(nn.Module):
    """EDM diffusion model in pixel space."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        c = config
        self.net = UNet(c.image_channels, c.image_channels, resolution=c.image_size, channels=c.channels,
                        mult=c.mult, num_res=c.num_res, attn=c.attn, dropout=c.dropout, num_classes=c.num_classes)

    # ---------------------------------------------------------------- the denoiser
    def denoise(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)   (EDM eq. 7).

        x: (B, C, H, W); sigma: 0-dim or (B,).  Returns the denoised estimate, same shape as x.
        """
        sd = self.config.sigma_data
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        c_skip = sd**2 / (sigma**2 + sd**2)                    # EDM Table 1
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log().flatten() / 4
        f = self.net((c_in * x).to(x.dtype), c_noise, self._labels(cond, x.shape[0], x.device))
        return c_skip * x + c_out * f.to(torch.float32)

    def _labels(self, cond: Cond | None, n: int, device: torch.device) -> Tensor | None:
        if not self.config.num_classes:
            if cond is not None and cond.labels is not None:
                raise ValueError("this model is unconditional: it takes no class labels")
            return None
        if cond is None or cond.labels is None:
            return torch.full((n,), self.config.num_classes, dtype=torch.long, device=device)  # null class
        return cond.labels.to(device)

    # ---------------------------------------------------------------- protocol
    def phases(self) -> list[Phase]:
        return [Phase("main")]

    def loss(self, batch: Batch, phase: str = "main") -> dict[str, Tensor]:
        c = self.config
        y = batch.images
        b = y.shape[0]
        sigma = (torch.randn(b, device=y.device) * c.p_std + c.p_mean).exp()          # EDM Table 1, training
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2           # lambda(sigma)
        n = torch.randn_like(y) * sigma[:, None, None, None]
        cond = None
        if c.num_classes:
            if batch.labels is None:
                raise ValueError("this model is class-conditional but the data has no labels; "
                                 "use a labelled source or --model.num_classes=0")
            labels = batch.labels.clone()
            drop = torch.rand(b, device=y.device) < c.cond_drop
            labels[drop] = c.num_classes                                               # null class
            cond = Cond(labels=labels)
        d = self.denoise(y + n, sigma, cond)
        per_image = (weight[:, None, None, None] * (d - y) ** 2).mean(dim=(1, 2, 3))
        return {"loss": per_image.mean()}

    @torch.no_grad()
    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None,
               sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
               callback=None, x: Tensor | None = None) -> Tensor:
        """n images in [-1, 1].  ``cond.labels`` picks classes; guidance > 1 uses CFG."""
        c = self.config
        name = sampler or c.sampler
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
        device = next(self.parameters()).device
        sigmas = karras_sigmas(steps or c.steps, c.sigma_min, c.sigma_max, c.rho).to(device)
        if x is None:
            x = randn((n, c.image_channels, c.image_size, c.image_size), generator, device) * sigmas[0]
        scale = c.guidance if guidance is None else guidance
        labels = self._labels(cond, n, device)
        if labels is None or scale == 1.0:
            denoise = lambda x_, s_: self.denoise(x_, s_, None if labels is None else Cond(labels=labels))  # noqa: E731
        else:
            null = Cond(labels=torch.full_like(labels, c.num_classes))
            denoise = cfg(self.denoise, scale, Cond(labels=labels), null)
        x = SAMPLERS[name](denoise, x, sigmas, generator=generator, callback=callback)
        return x.clamp(-1, 1)


Model = Diffusion

PRESETS: dict[str, Config] = {
    # conformance tests: seconds on a CPU
    "tiny": Config(image_size=16, channels=16, mult=(1, 2), num_res=1, attn=(8,), num_classes=10),
    # the README quickstart / digits benchmark: class-conditional 32x32 grayscale
    "digits": Config(image_size=32, image_channels=1, channels=16, mult=(1, 2, 4), num_res=2, attn=(8,),
                     num_classes=10),
    # ~1M parameters, 32x32 RGB (the throughput benchmark's size)
    "small": Config(image_size=32, channels=16, mult=(1, 2, 4), num_res=2, attn=(8,)),
    "base": Config(image_size=64, channels=64, mult=(1, 2, 2, 2), num_res=2, attn=(16, 8), dropout=0.1),
}

TRAIN_DEFAULTS: dict[str, object] = {"lr": 1e-3, "betas": (0.9, 0.99), "ema_decay": 0.999}
