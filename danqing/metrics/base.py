"""What the metric networks share: the error every metric raises, finding pretrained weights, and the check on
the pictures a feature extractor is given.

The lowest module of ``danqing.metrics``: the networks (inception.py, efficientnet.py) and the extractors
built on them (features.py) all use these, so they cannot live in any one of them.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["MetricsError", "check_pictures", "find_weights"]


class MetricsError(ValueError):
    """A metric cannot be computed as asked; the message says what to do."""


def find_weights(path: str | Path | None, env: str, package: str, file: str, what: str, install: str) -> Path:
    """A weights file: ``path``, else ``$env``, else ``file`` inside the installed ``package`` (found without
    importing it); a clear error naming ``what`` and the ``install`` advice when there is none."""
    for candidate in (path, os.environ.get(env)):
        if candidate:
            p = Path(candidate).expanduser()
            if not p.is_file():
                raise MetricsError(f"no {what} weights at {p}: {install}")
            return p
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (p := Path(folder) / file).is_file():
            return p
    raise MetricsError(f"the {what} weights are not installed: {install}")


def check_pictures(images: Tensor, who: str) -> None:
    """Feature extractors read pictures as saved: uint8 RGB (B, 3, H, W); ``who`` names the extractor."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise MetricsError(f"{who} takes uint8 (B, 3, H, W) pictures, got {images.dtype} {tuple(images.shape)}; "
                           "convert generated tensors with to_uint8")
