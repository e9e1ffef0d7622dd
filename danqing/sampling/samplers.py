"""Samplers for denoising diffusion models in the EDM formulation.

Every sampler has the same call shape

    NAME(denoise, x, sigmas, *, generator=None, callback=None, **options) -> Tensor

* ``denoise(x, sigma) -> D(x; sigma)``: the denoiser of Karras et al. 2022
  (sec. 2), i.e. an x0-prediction.  ``x`` has shape (B, ...) and ``sigma`` is
  a 0-dim tensor with the dtype and device of ``x`` (one noise level for the
  whole batch).  The return value has the shape of ``x``.  Wrap the model with
  ``danqing.sampling.guidance.cfg`` for classifier-free guidance.
* ``x``: the starting point, shape (B, ...): standard normal noise already
  multiplied by ``sigmas[0]`` (or a partly noised image for img2img).
* ``sigmas``: 1-D strictly decreasing noise levels, normally ending in 0
  (see ``danqing.sampling.schedules``); ``n = len(sigmas) - 1`` steps.  A
  schedule that ends above 0 returns the noisy sample at its last level.
* ``generator``: one ``torch.Generator``, or one per image, used only by
  stochastic samplers.  All noise is drawn by ``danqing.protocol.randn``, so
  with per-image generators image i is the same at any batch size.
  Deterministic samplers ignore it.
* ``callback(i, n, x, denoised)``: called after step i (0 .. n-1) with the new
  ``x`` (at level ``sigmas[i + 1]``) and that step's x0-prediction, e.g. for
  live previews.
* ``options``: the keyword options of each sampler (documented below);
  an unknown option is a TypeError.

The samplers are pure functions: no hidden state, no step counters.  Noise
levels are read as Python floats (the schedule's float64 precision) and the
update coefficients are formed in float64 before touching ``x``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from torch import Tensor

from danqing.protocol import Generators, randn

Denoiser = Callable[[Tensor, Tensor], Tensor]
Callback = Optional[Callable[[int, int, Tensor, Tensor], None]]


# ----------------------------------------------------------------------------- helpers

def _levels(sigmas: Tensor | list[float]) -> list[float]:
    """(n + 1,) tensor -> list of n + 1 floats, checked to be a usable schedule."""
    if isinstance(sigmas, Tensor) and sigmas.dim() != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    levels = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, Tensor) else sigmas)]
    if len(levels) < 2:
        raise ValueError("sigmas needs at least two levels (one step); build it with danqing.sampling.schedules")
    if any(b >= a for a, b in zip(levels, levels[1:])) or levels[-1] < 0:
        raise ValueError(f"sigmas must be strictly decreasing and non-negative, got {levels}")
    return levels


def _call(denoise: Denoiser, x: Tensor, sigma: float) -> Tensor:
    """D(x; sigma) with sigma as a 0-dim tensor of x's dtype and device."""
    return denoise(x, x.new_tensor(sigma))


def _noise(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like x (B, ...), row i from generator[i]."""
    return randn(x.shape, generator, x.device).to(x.dtype)


def _report(callback: Callback, i: int, n: int, x: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback(i, n, x, denoised)


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step sigma -> sigma_next into (sigma_down, sigma_up).

    The sample is moved deterministically to sigma_down and fresh noise of std
    sigma_up is added, sigma_down^2 + sigma_up^2 = sigma_next^2.  With eta = 1
    sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2, the DDPM
    posterior variance (Ho et al. 2020, eq. 7) in the variance-exploding
    parametrisation; eta scales sigma_up (DDIM's sigma_t(eta), Song et al.
    2021, eq. 16), capped at sigma_next.
    """
    if sigma_next == 0.0:
        return 0.0, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    down = math.sqrt(max(sigma_next ** 2 - up ** 2, 0.0))
    return down, up


def _to_level(x: Tensor, denoised: Tensor, sigma: float, sigma_to: float) -> Tensor:
    """Move x from sigma to sigma_to along the straight line through D:
    D + (sigma_to / sigma) (x - D).  (B, ...) -> (B, ...)."""
    return denoised + (sigma_to / sigma) * (x - denoised)


# ----------------------------------------------------------------------------- first order

def euler(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generators = None,
          callback: Callback = None) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
    (Karras et al. 2022, eq. 4 with sigma(t) = t, s(t) = 1; Alg. 1 without the
    second-order correction).  Deterministic: ``generator`` is ignored."""
    levels = _levels(sigmas)
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = _call(denoise, x, sigma)
        d = (x - denoised) / sigma                      # dx/dsigma, eq. 4
        x = x + (sigma_next - sigma) * d
        _report(callback, i, n, x, denoised)
    return x


def invert(denoise: Denoiser, x0: Tensor, sigmas: Tensor, *, callback: Callback = None,
           iterations: int = 3) -> Tensor:
    """The start at ``sigmas[0]`` from which ``euler`` (deterministic DDIM) on ``sigmas`` paints ``x0`` back:
    DDIM inversion (Song et al. 2021, sec. 4.3), run from x0 at ``sigmas[-2]`` (the last level above 0, where
    x and x0 differ by a few thousandths) up to ``sigmas[0]``.

    An Euler step down from level hi reads x_lo = D(x_hi) + (lo / hi) (x_hi - D(x_hi)).  Plain DDIM inversion
    takes the slope at x_lo instead of at the unknown x_hi, an error that does not cancel on the way back;
    here each step starts from that guess and refines it ``iterations`` times by the fixed point
    x_hi <- D(x_hi) + (hi / lo) (x_lo - D(x_hi)) (the iterative inversion of Pan et al. 2023, "Effective real
    image editing with accelerated iterative diffusion inversion"), which solves the step exactly where D
    varies slowly (1 + iterations denoiser calls a step).  Deterministic.  (B, ...) -> (B, ...)."""
    levels = _levels(sigmas)[:-1][::-1]                 # increasing, the final 0 left out
    n = len(levels) - 1
    x = x0
    for i in range(n):
        lo, hi = levels[i], levels[i + 1]
        denoised = _call(denoise, x, lo)
        guess = x + (hi - lo) * (x - denoised) / lo
        for _ in range(iterations):
            denoised = _call(denoise, guess, hi)
            guess = denoised + (hi / lo) * (x - denoised)
        x = guess
        _report(callback, i, n, x, denoised)
    return x


def ddim(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generators = None,
         callback: Callback = None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) in x0-prediction, variance-exploding form.

    With x = x0 + sigma * eps the DDIM update reads

        x_{i+1} = D + sigma_down * (x_i - D) / sigma_i + sigma_up * z,   z ~ N(0, I),

    where (x_i - D) / sigma_i is the predicted eps.  eta = 0 gives
    sigma_down = sigma_{i+1}, sigma_up = 0: deterministic DDIM, which is
    algebraically the Euler step above (Karras et al. 2022, sec. 3 and
    Table 1: DDIM is Euler on the ODE with sigma(t) = t).  For eta > 0 DDIM's
    sigma_t(eta) (Song et al. 2021, eq. 16), divided by sqrt(alpha_{t-1}) to
    move it to the VE parametrisation, is
    sigma_up = eta * sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)
    (see ``ancestral_step``); eta = 1 is ancestral DDPM sampling.
    """
    levels = _levels(sigmas)
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = _call(denoise, x, sigma)
        down, up = ancestral_step(sigma, sigma_next, eta) if eta > 0 else (sigma_next, 0.0)
        x = _to_level(x, denoised, sigma, down)
        if up > 0:
            x = x + up * _noise(x, generator)
        _report(callback, i, n, x, denoised)
    return x


def euler_a(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generators = None,
            callback: Callback = None, eta: float = 1.0) -> Tensor:
    """Euler-ancestral: an Euler step of the ODE down to sigma_down followed by
    fresh noise of std sigma_up (see ``ancestral_step``), so each step samples
    the reverse SDE's transition rather than following the ODE.  eta = 0 is
    ``euler``; with eta = 1 it equals ``ddim(eta=1)`` (both are ancestral DDPM
    steps, Ho et al. 2020, Alg. 2, in VE form)."""
    levels = _levels(sigmas)
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = _call(denoise, x, sigma)
        down, up = ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma                      # Karras et al. 2022, eq. 4
        x = x + (down - sigma) * d
        if up > 0:
            x = x + up * _noise(x, generator)
        _report(callback, i, n, x, denoised)
    return x


# ----------------------------------------------------------------------------- second order

def _churn(sigma: float, n: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """gamma_i of Karras et al. 2022, Alg. 2, line 4."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / n, math.sqrt(2.0) - 1.0)


def heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generators = None,
         callback: Callback = None, s_churn: float = 0.0, s_tmin: float = 0.0,
         s_tmax: float = float("inf"), s_noise: float = 1.0) -> Tensor:
    """Heun's second-order method with optional stochastic churn
    (Karras et al. 2022, Alg. 2; with s_churn = 0 it is the deterministic Alg. 1).

    Each step i may first raise the noise level to sigma_hat = sigma_i (1 + gamma_i)
    by adding noise of std sqrt(sigma_hat^2 - sigma_i^2) * s_noise
    (gamma_i = min(s_churn / n, sqrt(2) - 1) for s_tmin <= sigma_i <= s_tmax,
    else 0), then takes an Euler step to sigma_{i+1} and corrects it with the
    trapezoidal rule.  The step to sigma = 0 stays an Euler step (Alg. 2,
    line 9), so a schedule ending in 0 costs 2n - 1 denoiser calls.
    ``callback`` gets the first evaluation's x0-prediction.
    """
    levels = _levels(sigmas)
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        gamma = _churn(sigma, n, s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (1.0 + gamma)                                    # Alg. 2, line 5
        if gamma > 0:
            eps = _noise(x, generator) * s_noise
            x = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * eps             # line 6
        denoised = _call(denoise, x, sigma_hat)
        d = (x - denoised) / sigma_hat                                       # line 7
        x_next = x + (sigma_next - sigma_hat) * d                            # line 8
        if sigma_next > 0:                                                   # lines 9-11
            d_next = (x_next - _call(denoise, x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
        x = x_next
        _report(callback, i, n, x, denoised)
    return x


def dpmpp2m(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generators = None,
            callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), data prediction.

    In the VE parametrisation (alpha_t = 1) with t = -log sigma and
    h_i = t_{i+1} - t_i the first-order step (their eq. 9) is

        x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_i,

    and the multistep version replaces D_i by the extrapolation
    (1 + 1/(2 r_i)) D_i - 1/(2 r_i) D_{i-1}, r_i = h_{i-1} / h_i.  The first
    step is first order (no history); the step to sigma = 0 (h = inf) is
    first order too and returns the x0-prediction.  Deterministic.
    """
    levels = _levels(sigmas)
    n = len(levels) - 1
    prev_denoised: Tensor | None = None
    prev_h = 0.0
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = _call(denoise, x, sigma)
        if sigma_next == 0.0:
            x = denoised                                      # limit h -> inf of eq. 9
        else:
            h = math.log(sigma) - math.log(sigma_next)        # t_{i+1} - t_i, t = -log sigma
            d = denoised
            if prev_denoised is not None:
                r = prev_h / h
                d = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * prev_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * d
            prev_h = h
        prev_denoised = denoised
        _report(callback, i, n, x, denoised)
    return x
