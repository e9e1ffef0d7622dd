"""Training images: folders and built-in sets, preprocessed once into a memory-mapped cache.

``load_dataset(cfg.data)`` returns an ``ImageDataset``; ``fetch("mnist")`` and
``fetch("emoji")`` download the built-ins that do not ship with a Python package;
``write_skipped(ds, folder)`` names every file ``ds`` could not use in ``folder/skipped.txt``.
"""
from .base import DataError, DataWarning, cache_root
from .fetch import fetch
from .skips import write_skipped
from .sources import BUILTINS, ImageDataset, describe, load_dataset, preview_grid

__all__ = ["BUILTINS", "DataError", "DataWarning", "ImageDataset", "cache_root", "describe", "fetch",
           "load_dataset", "preview_grid", "write_skipped"]
