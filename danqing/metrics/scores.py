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
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["FID_MIN_N", "SmallSampleWarning", "fid", "fid_from_stats", "kid", "load_stats", "save_stats", "stats"]

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
