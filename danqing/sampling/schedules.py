"""Noise-level schedules for the samplers in ``danqing.sampling.samplers``.

Every schedule is a 1-D float64 CPU tensor of ``n + 1`` noise levels
(standard deviations, variance-exploding parametrisation x = x0 + sigma * eps),
strictly decreasing from ``sigma_max`` to ``sigma_min`` followed by a final 0,
so that ``n`` is the number of sampler steps.

Float64 is chosen on purpose: at rho = 7 the small end of the schedule is
dense and its neighbouring levels differ in the 6th significant digit; the
samplers read the levels as Python floats and hand the model a 0-dim tensor
of the image's own dtype, so the schedule's precision never leaks into the
model's dtype.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if n < 1:
        raise ValueError(f"need at least one step, got n={n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _append_zero(sigmas: Tensor) -> Tensor:
    """(n,) -> (n + 1,) with a final 0 (the clean-image level)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """The EDM schedule (Karras et al. 2022, eq. 5), shape (n + 1,), float64.

        sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
        i = 0 .. n-1,  then sigma_n = 0.

    rho = 7 spends most steps at low noise (the paper's choice); rho = 1 is a
    uniform spacing in sigma.  With n = 1 the single level is sigma_max.
    """
    _check(n, sigma_min, sigma_max)
    # i / (n - 1) in [0, 1]; n = 1 degenerates to the single level sigma_max.
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return _append_zero(sigmas)


def loglinear_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Levels uniform in log sigma (equivalently in DPM-Solver's t = -log sigma,
    Lu et al. 2022, sec. 3.3 "uniform logSNR"), shape (n + 1,), float64,
    from sigma_max down to sigma_min, then 0."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    log_sigmas = math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max))
    return _append_zero(log_sigmas.exp())
