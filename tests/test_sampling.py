"""Golden-value tests for danqing.sampling against closed-form denoisers.

For data x0 ~ N(mu, s^2 I) the exact EDM denoiser is
D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu) and the probability-flow ODE
(Karras et al. 2022, eq. 4) has the solution
x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2).
For a Gaussian mixture the denoiser is the posterior-weighted sum of the
component denoisers.  Tolerances are a few times the values measured with the
settings below (noted next to each bound).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from danqing.protocol import Cond, generators, randn
from danqing.sampling import (
    SAMPLERS,
    cfg,
    ddim,
    dpmpp2m,
    euler,
    euler_a,
    heun,
    invert,
    karras_sigmas,
    loglinear_sigmas,
)

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
N_SAMPLES = 20_000
MU, S = 0.3, 0.5
ODE_SAMPLERS = ["euler", "heun", "ddim", "dpmpp2m"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tensors here are tiny (20k x 2); intra-op threads only add overhead and,
    on a busy machine, spin-wait for seconds.  Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- closed-form data

def gauss_denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def gauss_flow(x_t: torch.Tensor, sigma_t: float, sigma: float) -> torch.Tensor:
    """Exact ODE solution from level sigma_t to sigma for Gaussian data."""
    return MU + (x_t - MU) * math.sqrt(S ** 2 + sigma ** 2) / math.sqrt(S ** 2 + sigma_t ** 2)


MIX_W = torch.tensor([0.3, 0.7], dtype=torch.float64)                    # (K,)
MIX_M = torch.tensor([[-1.0, -0.5], [1.0, 0.8]], dtype=torch.float64)    # (K, 2)
MIX_S = torch.tensor([0.3, 0.5], dtype=torch.float64)                    # (K,) isotropic stds


def mixture_denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x (N, 2) -> E[x0 | x] for x = x0 + sigma * eps, x0 ~ sum_k w_k N(m_k, s_k^2 I)."""
    var = MIX_S ** 2 + sigma ** 2                                          # (K,)
    sq = (x * x).sum(1, keepdim=True) - 2 * x @ MIX_M.T + (MIX_M ** 2).sum(1)  # (N, K) |x - m_k|^2
    log_post = MIX_W.log() - 0.5 * sq / var - 0.5 * x.shape[1] * var.log()
    post = log_post.softmax(-1)                                            # (N, K)
    shrink = MIX_S ** 2 / var                                              # (K,)
    # sum_k p_k (m_k + shrink_k (x - m_k)) = (p . shrink) x + (p * (1 - shrink)) @ M
    return (post @ shrink)[:, None] * x + (post * (1 - shrink)) @ MIX_M


def mixture_moments() -> tuple[torch.Tensor, torch.Tensor]:
    mean = (MIX_W[:, None] * MIX_M).sum(0)
    var = (MIX_W[:, None] * (MIX_S[:, None] ** 2 + MIX_M ** 2)).sum(0) - mean ** 2
    return mean, var.sqrt()


def prior_noise(seed: int = 0) -> torch.Tensor:
    """(N, 2) float64 noise standardised to empirical mean 0 and std 1 per dimension,
    so the Gaussian pushforward moments are exact and only solver error remains."""
    z = torch.randn(N_SAMPLES, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (z - z.mean(0)) / z.std(0)


def gauss_targets() -> tuple[float, float]:
    """Moments of the exact flow applied to x_T = SIGMA_MAX * z (prior N(0, sigma_max^2),
    not the true marginal N(mu, s^2 + sigma_max^2), hence the small shrinkage of mu)."""
    k = S / math.sqrt(S ** 2 + SIGMA_MAX ** 2)
    return MU * (1 - k), SIGMA_MAX * k


def run(name: str, denoise, steps: int, seed: int = 1, **options) -> torch.Tensor:
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX)
    gen = torch.Generator().manual_seed(seed)
    return SAMPLERS[name](denoise, SIGMA_MAX * prior_noise(), sigmas, generator=gen, **options)


# ----------------------------------------------------------------------------- schedules

def test_karras_sigmas_closed_form():
    n, rho = 25, 7.0
    sig = karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, rho)
    i = np.arange(n)
    ref = (SIGMA_MAX ** (1 / rho) + i / (n - 1) * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
    assert sig.dtype == torch.float64 and sig.shape == (n + 1,)
    np.testing.assert_allclose(sig[:-1].numpy(), ref, rtol=1e-12)
    assert sig[0].item() == pytest.approx(SIGMA_MAX, rel=1e-12)
    assert sig[-2].item() == pytest.approx(SIGMA_MIN, rel=1e-12)
    assert sig[-1].item() == 0.0
    assert bool((sig[1:] < sig[:-1]).all())


def test_loglinear_sigmas():
    sig = loglinear_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    np.testing.assert_allclose(sig[:-1].numpy(), np.geomspace(SIGMA_MAX, SIGMA_MIN, 10), rtol=1e-12)
    assert sig[-1].item() == 0.0


def test_bad_schedules_refused():
    with pytest.raises(ValueError):
        karras_sigmas(0, SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(ValueError):
        karras_sigmas(10, SIGMA_MAX, SIGMA_MIN)
    with pytest.raises(ValueError):
        euler(gauss_denoise, torch.zeros(2, 2), torch.tensor([1.0, 2.0, 0.0]))


# ----------------------------------------------------------------------------- Gaussian data

@pytest.mark.parametrize("name, mean_tol, std_rtol", [
    ("heun", 1e-4, 5e-3),        # measured 4.3e-6, 2.3e-3
    ("dpmpp2m", 1e-4, 5e-3),     # measured 4.5e-6, 2.4e-3
    ("euler", 5e-4, 5e-2),       # measured 6.6e-5, 3.5e-2
    ("ddim", 5e-4, 5e-2),        # measured 6.6e-5, 3.5e-2
])
def test_ode_samplers_gaussian_moments(name, mean_tol, std_rtol):
    x = run(name, gauss_denoise, 80)
    mean, std = gauss_targets()
    assert (x.mean(0) - mean).abs().max().item() < mean_tol
    assert ((x.std(0) - std) / std).abs().max().item() < std_rtol


def test_euler_a_gaussian_moments():
    mean, std = gauss_targets()
    x = run("euler_a", gauss_denoise, 640)
    # sampling error: mean s/sqrt(N) = 3.5e-3, std 0.5% relative; plus a first-order
    # std bias of about -1% at 640 steps.  Measured 3.1e-3 and 1.4% (worst of 6 seeds 5.7e-3, 1.8%).
    assert (x.mean(0) - mean).abs().max().item() < 0.015
    assert ((x.std(0) - std) / std).abs().max().item() < 0.03
    # first-order weak error: the std bias halves when the steps double (measured 14.1% -> 7.2%)
    bias40 = (run("euler_a", gauss_denoise, 40).std(0).mean().item() - std) / std
    bias80 = (run("euler_a", gauss_denoise, 80).std(0).mean().item() - std) / std
    assert abs(bias40) / abs(bias80) > 1.6


@pytest.mark.parametrize("name, tol80, min_ratio", [
    ("heun", 1e-2, 3.0),       # measured max error 4.9e-3, ratio 4.2
    ("dpmpp2m", 1e-2, 3.0),    # measured 5.1e-3, ratio 4.4
    ("euler", 0.15, 1.7),      # measured 7.6e-2, ratio 2.0
])
def test_ode_samplers_match_exact_flow(name, tol80, min_ratio):
    x_t = SIGMA_MAX * prior_noise()
    exact = gauss_flow(x_t, SIGMA_MAX, 0.0)
    err = {}
    for steps in (40, 80):
        x = SAMPLERS[name](gauss_denoise, x_t, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX))
        err[steps] = (x - exact).abs().max().item()
    assert err[80] < tol80
    assert err[40] / err[80] > min_ratio


def test_schedule_ending_above_zero_stops_there():
    x_t = SIGMA_MAX * prior_noise()
    sig = karras_sigmas(80, SIGMA_MIN, SIGMA_MAX)[:-1]
    x = heun(gauss_denoise, x_t, sig)
    assert (x - gauss_flow(x_t, SIGMA_MAX, SIGMA_MIN)).abs().max().item() < 1e-2


# ----------------------------------------------------------------------------- Gaussian mixture

@pytest.mark.parametrize("name, steps, mean_tol, std_tol", [
    ("heun", 80, 0.03, 0.01),       # measured 4.4e-3, 2.3e-3 (mean: sampling error 7e-3 + prior mismatch)
    ("dpmpp2m", 80, 0.03, 0.01),    # measured 4.2e-3, 2.3e-3
    ("euler", 80, 0.03, 0.04),      # measured 1.5e-3, 2.1e-2
    ("ddim", 80, 0.03, 0.04),
    ("euler_a", 320, 0.03, 0.03),   # measured 1.3e-2, 6.8e-3
])
def test_samplers_mixture_moments(name, steps, mean_tol, std_tol):
    mean, std = mixture_moments()
    x = run(name, mixture_denoise, steps)
    assert (x.mean(0) - mean).abs().max().item() < mean_tol
    assert (x.std(0) - std).abs().max().item() < std_tol


def test_second_order_samplers_track_fine_solution_on_mixture():
    x_t = SIGMA_MAX * prior_noise()[:4000]                  # a pathwise check needs fewer samples
    ref = heun(mixture_denoise, x_t, karras_sigmas(240, SIGMA_MIN, SIGMA_MAX))
    for sampler in (heun, dpmpp2m):
        x = sampler(mixture_denoise, x_t, karras_sigmas(80, SIGMA_MIN, SIGMA_MAX))
        assert (x - ref).abs().max().item() < 3e-2              # measured 1.0e-2 / 1.3e-2
        assert (x - ref).pow(2).mean().sqrt().item() < 4e-3     # measured 1.2e-3 / 1.5e-3


# ----------------------------------------------------------------------------- identities

def test_ddim_eta0_is_euler():
    x = SIGMA_MAX * torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(30, SIGMA_MIN, SIGMA_MAX)
    a, b = ddim(gauss_denoise, x, sig), euler(gauss_denoise, x, sig)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)          # float32 rounding only: measured 4.8e-7


def test_ancestral_identities():
    x = SIGMA_MAX * torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(20, SIGMA_MIN, SIGMA_MAX)
    a = ddim(gauss_denoise, x, sig, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = euler_a(gauss_denoise, x, sig, eta=1.0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(euler_a(gauss_denoise, x, sig, eta=0.0), euler(gauss_denoise, x, sig),
                               atol=1e-10, rtol=1e-10)


def test_heun_without_churn_ignores_generator_and_counts_calls():
    calls = []

    def denoise(x, sigma):
        assert sigma.dim() == 0 and sigma.dtype == x.dtype
        calls.append(sigma.item())
        return gauss_denoise(x, sigma)

    x = SIGMA_MAX * torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(10, SIGMA_MIN, SIGMA_MAX)
    a = heun(denoise, x, sig, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 2 * 10 - 1                       # last step to 0 is an Euler step
    b = heun(gauss_denoise, x, sig, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError):
        euler(gauss_denoise, torch.zeros(2, 2), karras_sigmas(3, SIGMA_MIN, SIGMA_MAX), eta=1.0)


# ----------------------------------------------------------------------------- batching and callbacks

@pytest.mark.parametrize("name, options", [
    ("euler_a", {}),
    ("heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
    ("ddim", {"eta": 0.5}),
])
def test_per_image_generators_are_batch_invariant(name, options):
    seeds = [11, 12, 13, 14]
    sig = karras_sigmas(12, SIGMA_MIN, SIGMA_MAX)

    def sample(batch_seeds):
        gens = generators(batch_seeds)
        x = SIGMA_MAX * randn((len(batch_seeds), 3, 4, 4), gens)
        return SAMPLERS[name](gauss_denoise, x, sig, generator=gens, **options)

    whole = sample(seeds)
    halves = torch.cat([sample(seeds[:2]), sample(seeds[2:])])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole[0], whole[1])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_called_once_per_step(name):
    seen = []
    sig = karras_sigmas(7, SIGMA_MIN, SIGMA_MAX)
    x = SIGMA_MAX * torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    out = SAMPLERS[name](gauss_denoise, x, sig, generator=torch.Generator().manual_seed(1),
                         callback=lambda i, n, xi, d: seen.append((i, n, xi, d)))
    assert [i for i, *_ in seen] == list(range(7))
    assert all(n == 7 for _, n, *_ in seen)
    assert all(xi.shape == x.shape and d.shape == x.shape for *_, xi, d in seen)
    assert torch.equal(seen[-1][2], out)


# ----------------------------------------------------------------------------- classifier-free guidance

class ToyModel:
    """denoise(x, sigma, cond) whose output depends on the labels; records batch sizes."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma, cond):
        self.batches.append(x.shape[0])
        assert sigma.dim() == 0
        return 0.5 * x + sigma * cond.labels[:, None].to(x.dtype)


def test_cfg_scales():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor(2.0)
    cond, uncond = Cond(labels=torch.tensor([1, 2, 3, 4])), Cond(labels=torch.full((4,), 10))
    c_out, u_out = ToyModel()(x, sigma, cond), ToyModel()(x, sigma, uncond)

    model = ToyModel()
    torch.testing.assert_close(cfg(model, 1.0, cond, uncond)(x, sigma), c_out)
    assert model.batches == [4]

    model = ToyModel()
    torch.testing.assert_close(cfg(model, 0.0, cond, uncond)(x, sigma), u_out)
    model = ToyModel()
    torch.testing.assert_close(cfg(model, 3.0, cond, uncond)(x, sigma), u_out + 3.0 * (c_out - u_out))
    assert model.batches == [8]                          # one call on the doubled batch


def test_cfg_generic_arguments_for_autoregressive_logits():
    calls = []

    def logits(tokens, temperature, cond):
        calls.append((tokens.shape, temperature))
        return tokens.float().sum(1, keepdim=True) / temperature + cond.labels[:, None].float()

    tokens = torch.tensor([[1, 2], [3, 4], [5, 6]])
    cond, uncond = Cond(labels=torch.tensor([1, 1, 1])), Cond(labels=torch.tensor([0, 0, 0]))
    out = cfg(logits, 2.0, cond, uncond)(tokens, 2.0)
    assert calls == [((6, 2), 2.0)]
    torch.testing.assert_close(out, tokens.float().sum(1, keepdim=True) / 2.0 + 2.0)


def test_cfg_refuses_mismatched_condition_batch():
    guided = cfg(ToyModel(), 3.0, Cond(labels=torch.tensor([1, 2])), Cond(labels=torch.tensor([0, 0])))
    with pytest.raises(ValueError):
        guided(torch.zeros(3, 2), torch.tensor(1.0))


def test_cfg_drives_a_sampler():
    cond, uncond = Cond(labels=torch.tensor([1, 2])), Cond(labels=torch.tensor([0, 0]))
    x = SIGMA_MAX * torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    out = heun(cfg(ToyModel(), 2.0, cond, uncond), x, karras_sigmas(5, SIGMA_MIN, SIGMA_MAX))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_inversion_is_undone_by_euler_and_follows_the_exact_flow():
    """Golden (closed form): for Gaussian data the probability-flow ODE is x(sigma) = MU + (x0 - MU)
    sqrt(S^2 + sigma^2) / S.  Inverting x0 lands near that flow at SIGMA_MAX (Euler's own path, a first-order
    distance away); Euler on the same schedule paints x0 back, to 1e-2 with the fixed-point refinement (measured
    1.6e-3 at 80 steps) and only to 0.14 without it (plain DDIM inversion)."""
    x0 = MU + S * prior_noise(3)
    sigmas = karras_sigmas(80, SIGMA_MIN, SIGMA_MAX)
    start = invert(gauss_denoise, x0, sigmas, iterations=2)
    exact = gauss_flow(x0, float(sigmas[-2]), SIGMA_MAX)
    assert ((start - exact).abs() / exact.abs().clamp_min(1)).max().item() < 0.1
    assert (euler(gauss_denoise, start, sigmas) - x0).abs().max().item() < 1e-2
    plain = euler(gauss_denoise, invert(gauss_denoise, x0, sigmas, iterations=0), sigmas)
    assert (plain - x0).abs().max().item() > 0.1
