"""Line drawings of pictures: the input side (A) of the built-in paired sets digit-sketch and emoji-sketch.

``sketch(picture, seed)`` is a pure function: the same picture and seed give the same drawing, byte for byte.

1. Edges: Canny (Canny 1986) on the luminance, on each colour channel (two flat colours of equal brightness
   still meet at an outline) and on the alpha channel when there is one (a drawing's silhouette).
2. The edge maps are merged, closed by a 3x3 dilation (the channels' edges lie a pixel apart) and thinned back
   to one-pixel lines by skeletonisation (Zhang and Suen 1984).
3. Then it is made to look drawn by hand, so that a model trained on it also takes real sketches: the lines
   are moved by a small smooth random displacement field (a coarse grid of random offsets, interpolated
   bicubically: a slow wobble, not jitter), drawn 1 or 2 px thick (a smooth random field decides where), and
   broken by a few short gaps.

scikit-image does the image processing because it is maintained, ships pure pip wheels for every platform
(no system library, no compiler) and covers all of this; OpenCV's wheels carry a large native binary that
danqing otherwise never needs.  It is imported lazily: only building the sketch sets needs it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .base import DataError

__all__ = ["sketch"]

WOBBLE = 0.012          # the displacement field's largest offset, as a share of the picture's side (1.5 px at 128)
WOBBLE_GRID = 4         # the displacement field is random on this many points a side, smooth in between
THICK_SHARE = 0.5       # about this share of the lines is drawn 2 px thick
GAP_EVERY = 120         # one gap per this many line pixels on average (at most MAX_GAPS)
MAX_GAPS = 6


def _skimage() -> Any:
    try:
        import skimage.feature
        import skimage.morphology
    except ImportError:
        raise DataError("drawing sketches needs scikit-image, which is not installed; run "
                        "`pip install 'danqing[datasets]'` (or `pip install scikit-image`)") from None
    return skimage


def sketch(picture: Image.Image | np.ndarray, seed: int) -> np.ndarray:
    """Black lines on white, RGB uint8 (H, W, 3), of ``picture`` (a PIL image of any mode, or a uint8 array
    (H, W), (H, W, 3) or (H, W, 4)); ``seed`` picks the hand-drawn wobble, thickness and gaps."""
    rgba = _as_rgba(picture)
    lines = _edges(rgba)
    rng = np.random.default_rng(seed)
    h, w = lines.shape
    if lines.any():
        lines = _perturb(lines, rng)
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    out[lines] = 0
    return out


def _as_rgba(picture: Image.Image | np.ndarray) -> np.ndarray:
    """float (H, W, 4) in [0, 1]; pictures without alpha are opaque."""
    if isinstance(picture, Image.Image):
        picture = np.asarray(picture.convert("RGBA"))
    arr = np.asarray(picture)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"sketch takes a PIL image or a uint8 (H, W[, 1|3|4]) array, got {arr.dtype} {arr.shape}")
    if arr.ndim == 2 or arr.shape[2] == 1:
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return arr.astype(np.float64) / 255.0


def _edges(rgba: np.ndarray) -> np.ndarray:
    """bool (H, W): one-pixel lines where luminance, colour or alpha changes."""
    sk = _skimage()
    alpha = rgba[..., 3:]
    on_white = rgba[..., :3] * alpha + (1.0 - alpha)          # what the picture looks like on paper
    luma = on_white @ np.array([0.299, 0.587, 0.114])         # ITU-R BT.601 luma
    sigma = max(1.0, min(luma.shape) / 128)                   # smooth more on big pictures, as a pen is wider
    grey = bool((on_white[..., :1] == on_white).all())       # then the colour channels hold no other edge
    channels = [luma, *([] if grey else np.moveaxis(on_white, 2, 0))] + ([alpha[..., 0]] if (alpha < 1).any() else [])
    # mode="nearest": the picture continues past its border, so the border itself is no edge.
    found = np.zeros(luma.shape, dtype=bool)
    for channel in channels:
        found |= sk.feature.canny(channel, sigma=sigma, low_threshold=0.08, high_threshold=0.2, mode="nearest")
    if not found.any():
        return found
    closed = sk.morphology.dilation(found, np.ones((3, 3), dtype=bool))
    return sk.morphology.skeletonize(closed)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int) -> np.ndarray:
    """float (H, W): random values on a grid x grid lattice in [-1, 1], bicubically interpolated."""
    coarse = rng.uniform(-1.0, 1.0, size=(grid, grid)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def _perturb(lines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sk = _skimage()
    h, w = lines.shape
    amp = WOBBLE * max(h, w)
    dy, dx = (amp * _smooth_field(rng, (h, w), WOBBLE_GRID) for _ in range(2))
    # Inverse warping by nearest neighbour keeps lines binary; warping the dilated lines and thinning again
    # keeps them connected where the field stretches them.
    ys, xs = np.mgrid[0:h, 0:w]
    src_y = np.clip(np.rint(ys - dy), 0, h - 1).astype(np.intp)
    src_x = np.clip(np.rint(xs - dx), 0, w - 1).astype(np.intp)
    wide = sk.morphology.dilation(lines, np.ones((3, 3), dtype=bool))
    moved = sk.morphology.skeletonize(wide[src_y, src_x])
    # Thickness: where a smooth field is high the line gets a second pixel (a 2x2 dilation: 1 px -> 2 px).
    thick = _smooth_field(rng, (h, w), WOBBLE_GRID) > (1.0 - 2.0 * THICK_SHARE)
    drawn = moved | (sk.morphology.dilation(moved, np.ones((2, 2), dtype=bool)) & thick)
    # A few short gaps, as where a pen lifts: a 2 or 3 px square cleared around random line pixels.
    on = np.argwhere(moved)
    gaps = min(MAX_GAPS, int(rng.poisson(len(on) / GAP_EVERY)))
    for y, x in on[rng.choice(len(on), size=min(gaps, len(on)), replace=False)]:
        side = int(rng.integers(2, 4))
        y0, x0 = max(0, y - (side - 1) // 2), max(0, x - (side - 1) // 2)
        drawn[y0:y0 + side, x0:x0 + side] = False
    return drawn
