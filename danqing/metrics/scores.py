"""Distribution scores as pure functions of feature matrices (N, D).

FID: Heusel et al. 2017, the Fréchet distance between Gaussians fitted to the
two feature sets,
    ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁ Σ₂)^½.
Σ₁Σ₂ has the same eigenvalues as the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½, so
the last trace is computed from that matrix's eigenvalues: no complex parts
to discard, no singular-matrix retries.  FID is biased upwards for small n;
below ``FID_MIN_N`` samples a warning points to KID.

KID: Bińkowski et al., "Demystifying MMD GANs" (ICLR 2018), the unbiased
estimate of the squared MMD under the cubic polynomial kernel
k(x, y) = (xᵀy / d + 1)³, averaged over random subsets, with its standard
deviation across subsets.

Precision and recall: Kynkäänniemi et al., "Improved Precision and Recall
Metric for Assessing Generative Models" (NeurIPS 2019): each set's manifold is
the union of balls around its points reaching their k-th nearest neighbour;
precision is the share of generated points inside the real manifold, recall the
share of real points inside the generated one.  Density and coverage: Naeem et
al., "Reliable Fidelity and Diversity Metrics for Generative Models" (ICML 2020),
which count how many real balls hold each generated point (density) and how many
real balls hold at least one (coverage), robust to outliers in the generated set.

Classifier score: Salimans et al. 2016's Inception Score, exp E_x KL(p(y|x) ‖ p(y)),
computed from another ImageNet classifier's probabilities.  It is **not** the
Inception Score (that needs the Inception classification head, which no offline
package ships) and its values are not comparable with published IS numbers.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["FID_MIN_N", "SmallSampleWarning", "bootstrap", "classifier_score", "density_coverage", "fid",
           "fid_from_stats", "fid_low_rank", "kid", "kth_neighbour_distance", "load_stats", "pairwise_distances",
           "precision_recall", "save_stats", "stats"]

FID_MIN_N = 2048        # below this, FID's bias dominates differences between models (use KID)


class SmallSampleWarning(UserWarning):
    """Too few samples for a score to mean much."""


def stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    s1 = _sqrtm_psd(sigma1)
    eig = np.linalg.eigvalsh(s1 @ sigma2 @ s1)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """FID through the (n1, n2) cross-Gram matrix, exact and fast when n < D: with centred features A1, A2,
    Σ1Σ2 = A1ᵀA1A2ᵀA2 / c, c = (n1-1)(n2-1), has the non-zero eigenvalues of MMᵀ / c for M = A1A2ᵀ."""
    a1, a2 = a - a.mean(0), b - b.mean(0)
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    d = a.mean(0) - b.mean(0)
    return float(d @ d + (a1 ** 2).sum() / (len(a) - 1) + (a2 ** 2).sum() / (len(b) - 1) - 2 * tr_covmean)


def fid(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D); warns when either is smaller than ``FID_MIN_N``."""
    n = min(len(features1), len(features2))
    if n < FID_MIN_N:
        warnings.warn(f"FID from {n} samples is biased upwards and noisy (it needs {FID_MIN_N} or more to compare "
                      "models); use KID, which is unbiased, for small sets", SmallSampleWarning, stacklevel=2)
    return fid_from_stats(*stats(features1), *stats(features2))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² under k(a, b) = (aᵀb / d + 1)³ for equal-sized x, y (m, d)."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    off = m * (m - 1)
    return float((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())


def kid(features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets): ``subsets`` draws of ``subset_size`` rows from each set without replacement."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    if m < 100:
        warnings.warn(f"KID from subsets of {m} samples has a large variance", SmallSampleWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    vals = [_mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def save_stats(path: str | Path, features: np.ndarray, **meta: str) -> Path:
    """Write mean, covariance and n of ``features`` (plus string metadata) to an .npz file."""
    mu, sigma = stats(features)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, n=len(features), **{k: np.array(v) for k, v in meta.items()})
    return path


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, n) from a file written by :func:`save_stats`."""
    with np.load(path) as z:
        return z["mu"], z["sigma"], int(z["n"])


# ---------------------------------------------------------------- k-NN manifolds

def pairwise_distances(a: np.ndarray, b: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances (N, M) between rows of a (N, D) and b (M, D), in float64, computed in row chunks."""
    ta, tb = torch.from_numpy(np.asarray(a, np.float64)), torch.from_numpy(np.asarray(b, np.float64))
    return torch.cat([torch.cdist(ta[i:i + chunk], tb) for i in range(0, len(ta), chunk)]).numpy()


def kth_neighbour_distance(x: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance from each row of x to its k-th nearest other row (the point itself not counted)."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in 1..{len(x) - 1} for {len(x)} points, got {k}")
    d = pairwise_distances(x, x)
    return np.partition(d, k, axis=1)[:, k]          # column 0 of the sorted row is the point itself (0)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls; both in [0, 1]."""
    d = pairwise_distances(real, fake)                                   # (N_real, N_fake)
    r_real, r_fake = kth_neighbour_distance(real, k), kth_neighbour_distance(fake, k)
    precision = (d <= r_real[:, None]).any(axis=0).mean()                # fake j inside some real ball
    recall = (d <= r_fake[None, :]).any(axis=1).mean()                   # real i inside some fake ball
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density (unbounded, ~1 when the distributions match) and coverage in [0, 1] (Naeem et al. 2020)."""
    d = pairwise_distances(real, fake)
    inside = d <= kth_neighbour_distance(real, k)[:, None]               # (N_real, N_fake)
    density = inside.sum() / (k * d.shape[1])
    coverage = inside.any(axis=1).mean()
    return float(density), float(coverage)


# ---------------------------------------------------------------- classifier score and intervals

def classifier_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp E KL(p(y|x) ‖ p(y)) from class probabilities (N, K): mean and std over ``splits`` parts."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) < splits:
        raise ValueError(f"probabilities must be (N >= {splits}, K), got shape {p.shape}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def bootstrap(score: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray, *,
              rounds: int = 20, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of ``score(a, b)``: estimate ± z·sd, sd over ``rounds`` resamplings of both sets.

    Centred on the estimate from the full sets, not on the resampled values: a resample repeats pictures,
    which biases FID upwards (by a few units at n = 1000), so percentile intervals would sit above the
    estimate.  The resamples measure the spread only.
    """
    from statistics import NormalDist
    rng = np.random.default_rng(seed)
    vals = [score(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(rounds)]
    est, half = score(a, b), NormalDist().inv_cdf((1 + level) / 2) * float(np.std(vals, ddof=1))
    return float(est - half), float(est + half)
