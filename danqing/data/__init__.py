"""Training images: folders and built-in sets, preprocessed once into a memory-mapped cache.

``load_dataset(cfg.data)`` returns an ``ImageDataset``; ``fetch("mnist")`` and
``fetch("emoji")`` download the built-ins that do not ship with a Python package.
"""
from .base import DataError, DataWarning, cache_root
from .fetch import fetch
from .sources import BUILTINS, ImageDataset, describe, load_dataset, preview_grid

__all__ = ["BUILTINS", "DataError", "DataWarning", "ImageDataset", "cache_root", "describe", "fetch",
           "load_dataset", "preview_grid"]
