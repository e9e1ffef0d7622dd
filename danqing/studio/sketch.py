"""The sketch pad's live pictures: a drawing, translated at once by a picture-to-picture model, never queued and
never kept in history (the page asks again after every stroke; a picture worth keeping goes through a
``translate`` job like any other).

    pad = SketchPad(device="cpu")
    png = pad.translate(entry, picture, seed=0)     # entry: a catalog entry of a model that translates

The last translator used stays loaded; a lock keeps two strokes from loading or running it at once.
"""
from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
from PIL import Image

from .. import pipeline as pl


class SketchError(ValueError):
    """A drawing the model cannot translate; the message says what to do."""


def check_sketch(picture: Image.Image, side: int) -> None:
    """The pad draws at the model's size; a blank pad has nothing to translate."""
    if picture.size != (side, side):
        raise SketchError(f"the sketch is {picture.size[0]}x{picture.size[1]}; this model translates {side}x{side} "
                          "pictures: draw on a pad of that size (or send it as a translate job, which fits it)")
    values = np.asarray(picture.convert("L"))
    if values.min() == values.max():
        raise SketchError("the sketch is empty: draw something first")


class SketchPad:
    def __init__(self, device: str = "cpu"):
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, pl.Pipeline] | None = None

    def _pipeline(self, entry: dict[str, Any]) -> pl.Pipeline:
        from .. import checkpoint as ckpt
        folder = ckpt.resolve(entry["_folder"])
        key = (entry["name"], str(folder), (folder / ckpt.MODEL).stat().st_mtime_ns)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = (key, pl.load(entry["_folder"], device=self.device))
        return self._loaded[1]

    def translate(self, entry: dict[str, Any], picture: Image.Image, seed: int = 0, **options: Any) -> bytes:
        """The model's picture of ``picture``, as PNG bytes."""
        if not entry["supports"].get("translate"):
            raise SketchError(f"{entry['name']} is a {entry['family']} model; the sketch pad needs a "
                              "picture-to-picture model (Pix2Pix, CycleGAN, CUT)")
        check_sketch(picture, entry["image_size"])
        with self._lock:
            pipe = self._pipeline(entry)
            image = pipe("", n=1, seed=seed, init_image=picture, **options)[0]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
