"""The stored MNIST digits: ``danqing data fetch mnist`` (fetch.py) writes them, the ``mnist`` built-in
(sources.py) reads them from here."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, cache_root

__all__ = ["load_mnist", "mnist_path", "mnist_stamp"]


def mnist_path(root: Path | None = None) -> Path:
    """Where the converted digits are stored."""
    return (cache_root() if root is None else root) / "sources" / "mnist" / "mnist.npz"


def mnist_stamp(root: Path) -> str:
    """Size and mtime of the stored file (part of the dataset fingerprint)."""
    path = mnist_path(root)
    if not path.is_file():
        raise DataError(f"the mnist data set has not been downloaded yet (looked for {path}); "
                        "run `danqing data fetch mnist` once, then try again")
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def load_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The stored digits: uint8 images (N, 28, 28) and labels (N,)."""
    path = mnist_path(root)
    mnist_stamp(root)  # the "not downloaded yet" message
    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"unexpected arrays {images.dtype} {images.shape} / {labels.shape}")
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} looks damaged ({e}); delete it and run `danqing data fetch mnist` again") from None
    return images, labels
