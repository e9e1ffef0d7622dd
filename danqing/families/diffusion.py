"""Diffusion in three layers (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", EDM):

1. a backbone network F (``danqing.nn.unet.UNet``),
2. the preconditioning that turns F into a denoiser D(x; sigma) (EDM eq. 7, Table 1),
3. samplers (``danqing.sampling``) that only ever see D.

Training draws ln(sigma) ~ N(P_mean, P_std^2) and minimises the weighted
denoising loss lambda(sigma) * ||D(y + n; sigma) - y||^2 (EDM eq. 8, Table 1).
Class labels (or text) are dropped to a null class (a learned null text
embedding) with probability ``cond_drop`` so the same network also learns the
unconditional model used by classifier-free guidance (Ho & Salimans 2022).

Latent diffusion (Rombach et al. 2022) is the same model run on the scaled
latents of a frozen encoder (``ae``, any family with the ``Encoder`` capability,
named by ``encoder``): images are encoded before the loss and decoded after sampling.  Text conditioning feeds the text encoder's
per-token states to cross-attention and its pooled vector to the embedding.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import from_dict
from ..generate import slerp
from ..nn.unet import UNet
from ..options import option
from ..protocol import (Batch, Cond, Denoises, Distance, Encoder, Facts, FamilySpec, FrozenEncoding, Generates,
                        Generators, Phase, Projects, TextSpec, randn)
from ..sampling import SAMPLERS, cfg, invert, karras_sigmas


def _diffusers_unet() -> type[nn.Module]:
    from ..nn.diffusers_unet import DiffusersUNet     # optional dependency: imported only when asked for
    return DiffusersUNet


BACKBONES = {"unet": lambda: UNet, "diffusers": _diffusers_unet}


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
    # text conditioning (0 = none): the text encoder's state width, tokens per prompt, and its name
    text_dim: int = 0
    text_tokens: int = 32
    text_encoder: str = ""
    # latent diffusion: the frozen encoder's config (its weights are part of this model), of the family `encoder`
    ae: Any = None
    encoder: str = "autoencoder"
    # the network: "unet" (danqing.nn.unet) or "diffusers" (the same layout built by diffusers, a benchmark peer)
    backbone: str = "unet"

    def __post_init__(self) -> None:
        if isinstance(self.ae, dict):              # read from JSON: the encoder family's own config class
            from . import spec
            object.__setattr__(self, "ae", from_dict(spec(self.encoder).Config, self.ae, where="ae."))


@dataclass(frozen=True)
class Options:
    """How a picture is sampled; None takes the model's default (its config's sampler, steps and guidance)."""

    sampler: str | None = option(None, "the sampler", choices=tuple(SAMPLERS))
    steps: int | None = option(None, "denoising steps", lo=1, hi=200)
    guidance: float | None = option(None, "classifier-free guidance scale (1 = off)", lo=0.0, hi=30.0)
    strength: float = option(0.6, "image to image: how much of the input picture to change", above=0.0, hi=1.0)


def build_encoder(c: Config) -> Encoder:
    """The frozen encoder a latent model's config names, built by its family (no weights yet)."""
    from . import spec
    model = spec(c.encoder).Model(c.ae)
    if not isinstance(model, Encoder):
        raise TypeError(f"the {c.encoder} family has no latent space to diffuse in")
    return model


class Diffusion(nn.Module):
    """EDM diffusion model in pixel space, or in an autoencoder's latent space."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        c = config
        self.ae: Any = None
        ch, res = c.image_channels, c.image_size
        if c.ae is not None:
            self.ae = build_encoder(c).requires_grad_(False).eval()        # frozen: never trained here
            ch, res = self.ae.latent_channels, c.image_size // self.ae.factor
        self.shape = (ch, res, res)                          # what the denoiser sees: (C, H, W)
        if c.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {c.backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.net = BACKBONES[c.backbone]()(ch, ch, resolution=res, channels=c.channels, mult=c.mult,
                                           num_res=c.num_res, attn=c.attn, dropout=c.dropout,
                                           num_classes=c.num_classes, context_dim=c.text_dim)
        if c.text_dim:   # learned "no prompt" tokens for the unconditional branch
            self.null_text = nn.Parameter(torch.zeros(c.text_tokens, c.text_dim))
            self.null_pooled = nn.Parameter(torch.zeros(c.text_dim))

    def train(self, mode: bool = True) -> "Diffusion":
        super().train(mode)
        if self.ae is not None:
            self.ae.eval()                                   # the frozen autoencoder never leaves eval mode
        return self

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
        text = self._text(cond, x.shape[0])
        f = self.net((c_in * x).to(x.dtype), c_noise, self._labels(cond, x.shape[0], x.device),
                     text.text, text.text_mask, text.pooled)
        return c_skip * x + c_out * f.to(torch.float32)

    def null_cond(self, n: int) -> Cond:
        """The unconditional branch: null class and/or the learned null text, for n images."""
        c = self.config
        out = Cond()
        if c.num_classes:
            out.labels = torch.full((n,), c.num_classes, dtype=torch.long, device=self.null_device)
        if c.text_dim:
            out.text = self.null_text.expand(n, -1, -1)
            out.text_mask = torch.ones(n, c.text_tokens, dtype=torch.bool, device=self.null_device)
            out.pooled = self.null_pooled.expand(n, -1)
        return out

    @torch.no_grad()
    def frozen_stats(self, images: Tensor) -> Tensor | None:
        """The frozen encoder's stats of (B, 3, H, W) images (a KL autoencoder's: (B, 2z, h, w), mean then
        logvar); None for a pixel-space model.  ``loss`` takes them precomputed as ``Batch.posterior`` (the
        trainer caches them for the data set).
        """
        if self.ae is None:
            return None
        with torch.autocast(images.device.type, enabled=False):
            return self.ae.encode_stats(images.float())

    @torch.no_grad()
    def preview(self, x: Tensor) -> Tensor:
        """Pictures of a sampler's estimate x (latents for a latent model), in [-1, 1]."""
        return (self.ae.decode(x.float()) if self.ae is not None else x.float()).clamp(-1, 1)

    @property
    def null_device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _text(self, cond: Cond | None, n: int) -> Cond:
        if not self.config.text_dim:
            if cond is not None and cond.text is not None:
                raise ValueError("this model has no text conditioning: it takes no prompt")
            return Cond()
        if cond is None or cond.text is None:
            return self.null_cond(n)
        return cond

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

    def loss(self, batch: Batch, phase: str = "main", step: int = 0,
             carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        c = self.config
        y = batch.images
        if self.ae is not None:
            stats = self.frozen_stats(y) if batch.posterior is None else batch.posterior
            y = self.ae.from_stats(stats.float(), sample=True)                        # z ~ q(z|x), unit variance
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
        if c.text_dim:
            if batch.cond is None or batch.cond.text is None:
                raise ValueError("this model is text-conditional but the batch has no caption embeddings; "
                                 "train it on captioned data")
            keep = (torch.rand(b, device=y.device) >= c.cond_drop)                    # drop -> null text
            null = self.null_cond(b)
            k3 = keep[:, None, None]
            cond = Cond(labels=None if cond is None else cond.labels,
                        text=torch.where(k3, batch.cond.text, null.text.to(batch.cond.text.dtype)),
                        text_mask=torch.where(keep[:, None], batch.cond.text_mask, null.text_mask),
                        pooled=torch.where(keep[:, None], batch.cond.pooled, null.pooled.to(batch.cond.pooled.dtype)))
        d = self.denoise(y + n, sigma, cond)
        per_image = (weight[:, None, None, None] * (d - y) ** 2).mean(dim=(1, 2, 3))
        return {"loss": per_image.mean()}

    @torch.no_grad()
    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None, noise: Tensor | None = None,
               options: Options | None = None, negative: Cond | None = None,
               callback: Callable[..., None] | None = None) -> Tensor:
        """n images in [-1, 1], shape (n, C, H, W), H = W = the training size or ``noise``'s (see ``noise``).

        cond:     class labels and/or text states for the n images; guidance > 1 applies classifier-free
                  guidance against ``negative`` (a negative prompt) or the null condition.
                  ``cond.image`` (n, C, H, W): image-to-image (SDEdit, Meng et al. 2022): it is noised to the level
                  that ``options.strength`` (0..1] of the schedule starts at and denoised from there.
                  ``cond.mask`` (n, 1, H, W), 1 = paint, 0 = keep ``cond.image`` (inpainting): at every step the
                  known region's denoised value is replaced by the known image, and its pixels are kept exactly.
        noise:    the starting noise (n, C, h, w) instead of drawing it: variations and interpolation between
                  seeds.  ``generator`` still drives stochastic samplers.
        callback: called as callback(i, steps, x, denoised) after every step (latents for latent models).
        """
        c = self.config
        o = options if options is not None else Options()
        name = o.sampler or c.sampler
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
        init = mask = None
        if cond is not None:
            init, mask = cond.image, cond.mask
        if not 0.0 < o.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {o.strength}")
        if mask is not None and init is None:
            raise ValueError("inpainting needs the image to keep: pass init together with mask")
        device = self.null_device
        sigmas = karras_sigmas(o.steps or c.steps, c.sigma_min, c.sigma_max, c.rho).to(device)
        noise = self.noise(n, generator) if noise is None else noise.to(device)
        known = None
        if init is None:
            x = noise * sigmas[0]
        else:
            init = init.to(device).float()
            known = self.ae.encode(init) if self.ae is not None else init
            start = min(len(sigmas) - 2, round((len(sigmas) - 1) * (1 - o.strength)))
            sigmas = sigmas[start:]
            x = known + noise * sigmas[0]

        scale = c.guidance if o.guidance is None else o.guidance
        cond = self._full_cond(cond, n)
        if scale == 1.0 or (not c.num_classes and not c.text_dim):
            denoise = lambda x_, s_: self.denoise(x_, s_, cond)  # noqa: E731
        else:
            denoise = cfg(self.denoise, scale, cond, self._full_cond(negative, n) if negative else self.null_cond(n))
        latent_mask = None
        if mask is not None:
            mask = mask.to(device).float()
            latent_mask = F.adaptive_max_pool2d(mask, noise.shape[-2:])  # a latent cell touching the paint area is painted
            inner = denoise
            denoise = lambda x_, s_: latent_mask * inner(x_, s_) + (1 - latent_mask) * known  # noqa: E731
        x = SAMPLERS[name](denoise, x, sigmas, generator=generator, callback=callback)
        out = (self.ae.decode(x) if self.ae is not None else x).clamp(-1, 1)
        if mask is not None:
            out = mask * out + (1 - mask) * init                        # pixels outside the mask stay exactly
        return out

    # ---------------------------------------------------------------- projection
    spaces = ("ode",)               # the probability-flow ODE's starting noise

    @torch.no_grad()
    def project(self, images: Tensor, cond: Cond | None = None, *, steps: int = 200, space: str = "",
                distance: Distance | None = None, generator: Generators = None,
                callback: Callable[..., None] | None = None) -> dict[str, Tensor]:
        """The starting noise from which ``steps`` Euler (deterministic DDIM) steps without guidance paint
        ``images`` (B, C, H, W) in [-1, 1] back: DDIM inversion (``sampling.invert``) under ``cond``, in the
        autoencoder's latent space for latent models.  {"noise": (B, c, h, w), "steps": (B,)}.  Nothing is
        optimised: ``distance`` and ``generator`` are not used.  ``callback(i, steps, pictures, sigma)``."""
        if space and space not in self.spaces:
            raise ValueError(f"a diffusion model projects into {' or '.join(self.spaces)}, not {space!r}")
        c, n, device = self.config, len(images), self.null_device
        x0 = images.to(device).float()
        x0 = self.ae.encode(x0) if self.ae is not None else x0
        full = self._full_cond(cond, n)
        sigmas = karras_sigmas(steps, c.sigma_min, c.sigma_max, c.rho)
        report = None if callback is None else \
            (lambda i, k, x, denoised: callback(i, k, self.preview(x), float(sigmas[len(sigmas) - 3 - i])))
        x = invert(lambda x_, s_: self.denoise(x_, s_, full), x0, sigmas, callback=report)
        return {"noise": x / c.sigma_max, "steps": torch.full((n,), steps, device=device)}

    @torch.no_grad()
    def render(self, latent: Mapping[str, Tensor], cond: Cond | None = None, *, options: Options | None = None,
               toward: Tensor | None = None, strength: Tensor | None = None) -> Tensor:
        """The pictures of inverted noise: Euler with the inversion's steps and no guidance (the path the
        inversion retraced; a sampler or guidance of the options would paint another picture), after moving the
        noise ``strength`` of the way along the great circle to ``toward``."""
        noise, steps = latent["noise"].to(self.null_device).float(), int(latent["steps"].flatten()[0])
        if tuple(noise.shape[1:]) != self.noise_shape():
            raise ValueError(f"the latent's noise is {tuple(noise.shape[1:])}, this model's "
                             f"{self.noise_shape()}: it was projected with another model")
        if toward is not None and strength is not None:
            noise = slerp(noise, toward.to(noise), strength.to(noise))
        o = replace(options if options is not None else Options(), sampler="euler", steps=steps, guidance=1.0)
        return self.sample(len(noise), cond, noise=noise, options=o)

    def noise(self, n: int, generator: Generators = None, size: int | None = None) -> Tensor:
        """The standard normal noise (n, C, h, w) that ``sample`` starts from (latent-sized for latent models)."""
        return randn((n, *self.noise_shape(size)), generator, self.null_device)

    def noise_shape(self, size: int | None = None) -> tuple[int, int, int]:
        """(C, h, w) of one picture's noise at ``size`` (None: the training size)."""
        res = (size or self.config.image_size) // (self.ae.factor if self.ae is not None else 1)
        return (self.shape[0], res, res)

    def _full_cond(self, cond: Cond | None, n: int) -> Cond:
        """cond with the parts the denoiser reads filled in: class labels (null when absent) and text."""
        cond = cond or Cond()
        text = self._text(cond, n)                                        # no text: the learned null text
        return Cond(labels=self._labels(cond, n, self.null_device), text=text.text, text_mask=text.text_mask,
                    pooled=text.pooled)


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


def facts(c: Config) -> Facts:
    """Class and/or text conditioning; any size that is a multiple of the network's (and encoder's) stride."""
    from . import spec
    factor = spec(c.encoder).facts(c.ae).latent_factor if c.ae is not None else 1
    text = TextSpec(c.text_dim, c.text_tokens, c.text_encoder or "minilm") if c.text_dim else None
    return Facts(c.image_size, c.image_channels, c.num_classes, text, size_stride=factor * 2 ** (len(c.mult) - 1),
                 latent_factor=factor)


def defaults(c: Config) -> Options:
    return Options(sampler=c.sampler, steps=c.steps, guidance=c.guidance)


SPEC = FamilySpec("diffusion", Config, Diffusion, PRESETS, "EDM diffusion in pixels or an encoder's latent space",
                  TRAIN_DEFAULTS, Options, frozenset({Generates, Denoises, FrozenEncoding, Projects}), facts, defaults)
