"""Cheap quality checks during training: diversity (the mode-collapse alarm) and KID.

Every ``train.eval_every`` steps the trainer paints ``train.eval_n`` images with
the EMA weights (seeds 0..n-1; the classes or captions of a fixed, evenly spaced
subset of the training images) and compares them with that subset in
EfficientNet-Lite0 feature space, about 15x cheaper per image than Inception:

- ``eval/diversity``: mean pairwise feature distance of the samples over the
  real subset's, within each class for class-conditional models.  A generator
  that draws one picture per class scores far below 1; below
  ``train.collapse_alarm`` the trainer warns (the mode-collapse alarm),
  because a collapsed GAN keeps a low loss and a high accuracy.
- ``eval/kid``: KID (Bińkowski et al. 2018) between the two sets; with
  ``train.best=kid`` the checkpoint with the lowest value is kept as ``best``.

The numbers are for watching a run and for choosing among its checkpoints; they
are not the full-size FID/KID a report needs (``danqing eval``).  Nothing here
draws from torch's global random state, so monitoring does not change training.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from .config import ConfigError, TrainConfig
from .generate import Painter, Request
from .metrics import MetricsError, SmallSampleWarning, diversity_ratio, kid, to_uint8
from .protocol import Cond

METRICS = ("diversity", "kid")


class CollapseWarning(UserWarning):
    """Samples are far less diverse than the data: the generator may be collapsing."""


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class Monitor:
    def __init__(self, ds, tc: TrainConfig, *, num_classes: int, embed: Callable[[list[str]], Cond] | None,
                 device: torch.device):
        from .metrics.efficientnet import EfficientNetLite0
        wanted = [m for m in tc.eval_metrics.split(",") if m]
        unknown = set(wanted) - set(METRICS)
        if unknown:
            raise ConfigError(f"unknown train.eval_metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
        if tc.best and tc.best not in wanted:
            raise ConfigError(f"train.best={tc.best} needs {tc.best} in train.eval_metrics")
        if tc.eval_n > len(ds):
            raise ConfigError(f"train.eval_n={tc.eval_n} is more than the {len(ds)} training images")
        try:
            self.net = EfficientNetLite0().to(device)
        except MetricsError as e:
            raise ConfigError(f"train.eval_every needs the EfficientNet-Lite0 weights: {e}") from None
        self.tc, self.metrics, self.device = tc, wanted, device
        idx = np.linspace(0, len(ds) - 1, tc.eval_n).round().astype(np.int64)
        self.real = self._features(_rgb(torch.from_numpy(np.take(ds.images, idx, axis=0))))
        self.captions, self.labels, self.groups = None, None, None
        if embed is not None:
            self.captions = [ds.captions[i] for i in idx.tolist()]
        elif num_classes:                  # samples of class c are compared with real images of class c
            self.groups = ds.labels[idx] if ds.labels is not None else np.arange(tc.eval_n) % num_classes
            self.labels = self.groups.tolist()

    def _features(self, uint8: torch.Tensor) -> np.ndarray:
        return np.concatenate([self.net(b.to(self.device)).cpu().numpy() for b in uint8.split(64)])

    @torch.no_grad()
    def __call__(self, painter: Painter, *, bf16: bool = False) -> dict[str, float]:
        n = self.tc.eval_n
        with torch.random.fork_rng(devices=[]):
            images = painter(Request(list(range(n)), self.captions, self.labels), bf16=bf16, batch_size=64)
        fake = self._features(_rgb(to_uint8(images).cpu()))
        out = {}
        if "diversity" in self.metrics:
            out["eval/diversity"] = diversity_ratio(fake, self.real, self.groups, self.groups)
            if out["eval/diversity"] < self.tc.collapse_alarm:
                warnings.warn(f"mode collapse? the samples' diversity is {out['eval/diversity']:.2f}x the data's "
                              f"(alarm below {self.tc.collapse_alarm:g}); look at the sample grid, and lower the "
                              "learning rate or add regularisation (e.g. R1) if they repeat", CollapseWarning,
                              stacklevel=2)
        if "kid" in self.metrics:
            with warnings.catch_warnings():              # small subsets by design: a trend, not a report
                warnings.simplefilter("ignore", SmallSampleWarning)
                out["eval/kid"] = kid(fake, self.real, subsets=20, subset_size=min(n, 100))[0]
        return out
