"""Diffusion sampling: noise schedules, ODE/SDE samplers and classifier-free guidance.

    sigmas = karras_sigmas(40, 0.002, 80.0)
    x = sigmas[0].item() * randn(shape, generators(seeds))
    images = SAMPLERS["heun"](cfg(model, 3.0, cond, uncond), x, sigmas, generator=...)

See ``danqing.sampling.samplers`` for the common sampler signature.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from danqing.sampling.guidance import cfg, combine
from danqing.sampling.samplers import (
    ancestral_step,
    ddim,
    dpmpp2m,
    euler,
    euler_a,
    heun,
    invert,
)
from danqing.sampling.schedules import karras_sigmas, loglinear_sigmas

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": euler,
    "heun": heun,
    "ddim": ddim,
    "dpmpp2m": dpmpp2m,
    "euler_a": euler_a,
}

__all__ = [
    "SAMPLERS", "ancestral_step", "cfg", "combine", "ddim", "dpmpp2m", "euler", "euler_a", "heun", "invert",
    "karras_sigmas", "loglinear_sigmas",
]
