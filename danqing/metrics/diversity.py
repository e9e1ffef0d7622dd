"""Diversity, mode collapse and memorisation, as pure functions of feature matrices (N, D).

Distances are Euclidean in a feature space (Inception pool3, VGG19 or a
classifier's penultimate layer).  Thresholds are calibrated on real data, never
absolute numbers, because every feature space has its own scale:

- **near-duplicates** among samples: a sample whose nearest other sample is
  closer than the ``quantile`` of the real images' nearest-neighbour distances;
- **copies** of training images: a sample closer to its nearest training image
  than the ``quantile`` of the distances from *held-out* real images to their
  nearest training image (held-out images are novel by construction, so they
  give the null distribution).  Without held-out images the training set's own
  leave-one-out distances stand in, which is stricter when training images
  repeat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scores import pairwise_distances

__all__ = ["Memorisation", "class_coverage", "diversity_ratio", "mean_pairwise_distance", "memorisation",
           "near_duplicate_rate", "nearest"]


def mean_pairwise_distance(f: np.ndarray) -> float:
    """Mean distance over all pairs i < j of rows of f (N >= 2, D)."""
    if len(f) < 2:
        raise ValueError("diversity needs at least 2 samples")
    d = pairwise_distances(f, f)
    return float(d[np.triu_indices(len(f), 1)].mean())


def diversity_ratio(fake: np.ndarray, real: np.ndarray, fake_groups: np.ndarray | None = None,
                    real_groups: np.ndarray | None = None) -> float:
    """Mean pairwise distance of samples over that of real images: ~1 matches the data, << 1 is mode collapse.

    With group labels (N,) (e.g. the classes a conditional model was asked for), distances are taken within
    each group and averaged over groups: a model that draws one picture per class has all the data's spread
    between classes, and is caught only by the spread within them.
    """
    if fake_groups is None or real_groups is None:
        return mean_pairwise_distance(fake) / mean_pairwise_distance(real)
    groups = [g for g in np.unique(real_groups) if (fake_groups == g).sum() >= 2 and (real_groups == g).sum() >= 2]
    if not groups:
        raise ValueError("within-group diversity needs at least 2 samples and 2 real images of some group")
    within = [mean_pairwise_distance(fake[fake_groups == g]) / mean_pairwise_distance(real[real_groups == g])
              for g in groups]
    return float(np.mean(within))


def nearest(queries: np.ndarray, pool: np.ndarray, *, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index (N,) and distance (N,) of each query's nearest row of ``pool`` (itself excluded when the same set)."""
    d = pairwise_distances(queries, pool)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    idx = d.argmin(1)
    return idx, d[np.arange(len(d)), idx]


def near_duplicate_rate(fake: np.ndarray, real: np.ndarray, quantile: float = 0.01) -> tuple[float, float]:
    """(share of samples with a near-duplicate among the other samples, the distance threshold used)."""
    _, real_nn = nearest(real, real, exclude_self=True)
    threshold = float(np.quantile(real_nn, quantile))
    _, fake_nn = nearest(fake, fake, exclude_self=True)
    return float((fake_nn < threshold).mean()), threshold


@dataclass
class Memorisation:
    index: np.ndarray           # (N,) nearest training image of each sample
    distance: np.ndarray        # (N,) its distance
    threshold: float            # closer than this counts as a copy
    copies: np.ndarray          # (N,) bool

    @property
    def rate(self) -> float:
        return float(self.copies.mean())

    def closest(self, k: int) -> np.ndarray:
        """Indices of the k samples closest to a training image, closest first."""
        return np.argsort(self.distance)[:k]


def memorisation(fake: np.ndarray, train: np.ndarray, heldout: np.ndarray | None = None,
                 quantile: float = 0.01) -> Memorisation:
    """Nearest training image of every sample and which samples count as copies (see the module docstring)."""
    if heldout is not None:
        _, null = nearest(heldout, train)
    else:
        _, null = nearest(train, train, exclude_self=True)
    threshold = float(np.quantile(null, quantile))
    idx, dist = nearest(fake, train)
    return Memorisation(idx, dist, threshold, dist < threshold)


def class_coverage(predicted: np.ndarray, num_classes: int, min_share: float = 0.0) -> tuple[float, np.ndarray]:
    """(share of the classes produced more than ``min_share`` of the time, per-class shares (K,))."""
    shares = np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes] / max(1, len(predicted))
    return float((shares > min_share).mean()), shares
