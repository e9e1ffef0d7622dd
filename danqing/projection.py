"""Projection of real pictures into a model's latent space, and the files a projection is kept in.

Optimisation-based projection follows the StyleGAN2 projector (Karras et al. 2020, sec. 5 and appendix D):
Adam on the latent, starting at the mean style, with a learning rate ramped up over the first 5% of the steps
and down (cosine) over the last 25%; Gaussian noise added to the latent, its scale falling quadratically to 0 at
75% of the steps (it shakes the search out of poor local optima early); the per-pixel noise maps optimised too,
kept from carrying the picture by a penalty on their autocorrelation at every scale and by renormalising them
after each step.  The distance is a perceptual one (here the LPIPS-style distance on the offline VGG19, see
``danqing.style.vgg.perceptual_distance``) plus a pixel term.  A family supplies the generator side through
``protocol.Projects``; the pure pieces of the schedule are here.

A latent is saved as safetensors: the family's named tensors (pictures along dim 0) and, in the metadata, the
family, the space, the steps and the distances reached, so that ``danqing sample --latent`` can refuse a latent
of another model before painting.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .protocol import Distance, Generators

LATENT_FORMAT = "danqing-latent-1"


class ProjectionError(ValueError):
    """A picture or latent file that cannot be projected or painted from; the message says what to do."""


# ---------------------------------------------------------------- the optimiser's schedule

@dataclass(frozen=True)
class Schedule:
    """The StyleGAN2 projector's settings (appendix D), as fractions of the run's steps."""

    lr: float = 0.1
    lr_rampup: float = 0.05          # linear ramp-up over this fraction of the steps
    lr_rampdown: float = 0.25        # cosine ramp-down over the last fraction
    initial_noise: float = 0.05      # latent noise at the start, times the spread of the styles
    noise_ramp: float = 0.75         # the latent noise is gone at this fraction
    noise_weight: float = 1e5        # the noise maps' autocorrelation penalty


def learning_rate(t: float, s: Schedule = Schedule()) -> float:
    """The learning rate at progress t in [0, 1]: lr * min(1, t / rampup) * ramp-down, where the ramp-down
    is 0.5 - 0.5 cos(pi min(1, (1 - t) / rampdown))."""
    down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / s.lr_rampdown))
    return s.lr * down * min(1.0, t / s.lr_rampup)


def latent_noise(t: float, spread: float, s: Schedule = Schedule()) -> float:
    """The scale of the noise added to the latent at progress t: spread * initial * max(0, 1 - t / ramp)^2."""
    return spread * s.initial_noise * max(0.0, 1.0 - t / s.noise_ramp) ** 2


def noise_penalty(maps: list[Tensor]) -> Tensor:
    """Sum over maps (B, 1, H, W) and over scales down to 8x8 of the squared mean product of each pixel with its
    right and its lower neighbour (wrapping): zero for white noise, large when a map carries structure."""
    total = maps[0].new_zeros(())
    for m in maps:
        while True:
            total = total + (m * m.roll(1, dims=3)).mean().square() + (m * m.roll(1, dims=2)).mean().square()
            if m.shape[-1] <= 8:
                break
            m = F.avg_pool2d(m, 2)
    return total


@torch.no_grad()
def renormalise(maps: list[Tensor]) -> None:
    """Each map to zero mean and unit variance, per picture, in place."""
    for m in maps:
        m.sub_(m.mean(dim=(1, 2, 3), keepdim=True))
        m.div_(m.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8))


def search(paint: Callable[[Tensor, list[Tensor]], Tensor], latent: Tensor, maps: list[Tensor], target: Tensor, *,
           steps: int, distance: Distance, spread: float = 0.0, generator: Generators = None,
           schedule: Schedule = Schedule(), constrain: Callable[[Tensor], None] | None = None,
           callback: Callable[..., None] | None = None) -> None:
    """The projector's loop: Adam on ``latent`` (B, ...) and the noise ``maps`` (each (B, 1, H, W)), in place,
    so that ``paint(latent + shake, maps)`` (B, C, S, S) comes close to ``target`` under ``distance``.  The shake
    is Gaussian noise of ``latent_noise``'s scale for the styles' ``spread`` (0: none); the maps are penalised
    by ``noise_penalty`` and renormalised after each step; ``constrain`` (if given) puts the latent back where
    the model's codes live after each step.  Only the latent and the maps get gradients, not the model."""
    rng = generator if generator is None or isinstance(generator, torch.Generator) else generator[0]
    wanted = [latent.requires_grad_(True), *[m.requires_grad_(True) for m in maps]]
    opt = torch.optim.Adam(wanted, lr=schedule.lr, betas=(0.9, 0.999))
    for i in range(steps):
        t = i / steps
        for group in opt.param_groups:
            group["lr"] = learning_rate(t, schedule)
        shake = torch.randn(latent.shape, generator=rng, device=latent.device) * latent_noise(t, spread, schedule)
        picture = paint(latent + shake if spread else latent, maps)
        loss = distance(picture, target).sum()
        if maps:
            loss = loss + schedule.noise_weight * noise_penalty(maps)
        for p, g in zip(wanted, torch.autograd.grad(loss, wanted)):
            p.grad = g
        opt.step()
        with torch.no_grad():
            renormalise(maps)
            if constrain is not None:
                constrain(latent)
        if callback is not None:
            callback(i, steps, picture.detach(), loss.item())
    for p in wanted:
        p.requires_grad_(False)


# ---------------------------------------------------------------- distances

def pixel_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference per picture, (B,)."""
    return (a.float() - b.float()).square().flatten(1).mean(1)


def perceptual(pixel_weight: float = 1.0, side: int = 128) -> Distance:
    """The VGG19 LPIPS-style distance of the two pictures resized to ``side`` (VGG's features need more than the
    32 or 64 pixels of a small model) plus ``pixel_weight`` times the mean squared pixel difference."""
    from .style.vgg import load_vgg19, perceptual_distance

    vgg = load_vgg19()

    def distance(a: Tensor, b: Tensor) -> Tensor:
        vgg.to(a.device)
        grow = (lambda x: F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False)
                if x.shape[-1] != side else x.float())
        rgb = (lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
        return perceptual_distance(vgg, rgb(grow(a)), rgb(grow(b))) + pixel_weight * pixel_distance(a, b)
    return distance


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of pictures in [-1, 1] (peak-to-peak 2), (B,)."""
    return 10 * torch.log10(4.0 / pixel_distance(a, b).clamp_min(1e-10))


# ---------------------------------------------------------------- files

def save_latent(path: str | Path, latent: Mapping[str, Tensor], about: Mapping[str, Any]) -> Path:
    """Write ``latent`` with ``about`` (family, space, steps, distances ...) in the metadata, atomically."""
    from safetensors.torch import save

    from .fileio import atomic_write

    meta = {"format": LATENT_FORMAT, "about": json.dumps(dict(about), sort_keys=True)}
    return atomic_write(path, save({k: v.detach().float().contiguous().cpu() for k, v in latent.items()},
                                   metadata=meta))


def load_latent(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, about) of a file ``save_latent`` wrote; ProjectionError for anything else."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ProjectionError(f"latent file {p} does not exist; write one with danqing project PICTURE --model RUN")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:                          # safetensors raises its own error types for a damaged file
        raise ProjectionError(f"{p} is not a latent file danqing wrote ({e}); project the picture again") from None
    if meta.get("format") != LATENT_FORMAT:
        raise ProjectionError(f"{p} is a safetensors file but not a danqing latent; write one with danqing project")
    return tensors, json.loads(meta["about"])
