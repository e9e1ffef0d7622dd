"""Tensors <-> pictures: uint8 conversion, grids, atomic PNG writes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from .pixels import to_uint8


def _hwc_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C) on the CPU, the layout PIL and the grids take."""
    return to_uint8(x.detach().cpu()).permute(0, 2, 3, 1).numpy()


def to_pil(x: Tensor) -> list[Image.Image]:
    arr = _hwc_uint8(x)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def make_grid(x: Tensor, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """Tile (B, C, H, W) images in [-1, 1] row-major into one picture with a white gutter."""
    return grid_uint8(_hwc_uint8(x), nrow, pad)


def grid_uint8(arr: np.ndarray, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """Tile uint8 (B, H, W, C) images row-major (near-square by default) with a white gutter."""
    b, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    sheet = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, a in enumerate(arr):
        r, q = divmod(i, nrow)
        sheet[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = a
    return Image.fromarray(sheet[..., 0] if c == 1 else sheet)


def save_image(img: Image.Image, path: str | Path, **kw) -> Path:
    """Write a PNG atomically (temp file + rename), creating parent folders."""
    from .fileio import atomic_write
    return atomic_write(path, lambda f: img.save(f, format="PNG", **kw))


def save_with_params(img: Image.Image, path: str | Path) -> Path:
    """Write a picture whose ``info["params"]`` is a parameters dataclass with ``a1111()``, as PNG with two
    text chunks: ``parameters`` (the A1111 text other tools read) and ``danqing`` (every field, JSON)."""
    import json
    from dataclasses import asdict

    from PIL import PngImagePlugin
    p = img.info["params"]
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", p.a1111())
    info.add_text("danqing", json.dumps(asdict(p)))
    return save_image(img, path, pnginfo=info)


def save_grid(x: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    return save_image(make_grid(x, nrow), path)
