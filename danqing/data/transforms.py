"""Small pure functions that turn one image file into a uint8 (C, H, W) array.

The path from file to array is: check the header (refuse empty files and
decompression bombs before any pixel is decoded), decode, apply the EXIF
orientation, convert to 8-bit ``L`` or ``RGB`` (alpha composited on white,
16-bit scaled rather than clipped), then resize and centre-crop or pad.
SVG files take the same path, drawn by resvg (the ``emoji`` extra) at twice
the target size; the canvas counts against ``max_pixels`` like a header.

A file that cannot be used raises ``SkipImage`` with a short, stable reason
("empty file", "not an image", ...).  The caller counts reasons; nothing here
prints, warns or touches global PIL settings.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Lower-case suffixes the folder scanner accepts.  GIF and multi-page TIFF use their first frame.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SVG_EXTENSIONS = (".svg",)     # drawn when resvg is installed, else skipped as an unsupported format
SVG_ADVICE = "install resvg to draw them: `pip install 'danqing[emoji]'` (or `pip install resvg`)"

# Resizing first shrinks by an integer factor with a box filter while the
# image stays at least this many times the target, then finishes with the
# real filter: near-identical quality, much faster on big photos.
REDUCING_GAP = 3.0

Fit = Literal["crop", "pad"]


class SkipImage(Exception):
    """This file cannot be used.  ``reason`` is a short label used for counting;
    ``detail`` says more (for a single-file message)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def load_image(path: str | Path, *, size: int, channels: int, fit: Fit, max_pixels: int,
               part: Literal["", "left", "right"] = "") -> np.ndarray:
    """Decode one file into a uint8 array of shape (channels, size, size); with ``part``, only its left or right
    half (a side-by-side A|B picture of a paired data set, pairs.py).

    Raises ``SkipImage`` for empty, unreadable, non-image, truncated or
    oversized files.  Never raises anything else for a bad file.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise SkipImage("empty file")
    except OSError as e:
        raise SkipImage("unreadable", str(e)) from None
    if path.suffix.lower() in SVG_EXTENSIONS:
        return to_chw(fit_image(to_8bit(draw_svg(path, size=size, fit=fit, max_pixels=max_pixels), channels),
                                size, fit))
    try:
        with Image.open(path) as img:
            # Image.open reads only the header, so this check costs no decoding.
            w, h = img.size
            if w * h > max_pixels:
                raise SkipImage("too many pixels", f"{w}x{h} = {w * h:,} pixels is over max_pixels={max_pixels:,}")
            if img.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is
                # small; it keeps at least twice the target on every side.
                img.draft(None, (2 * size, 2 * size))
            img.load()
            img = ImageOps.exif_transpose(img)
        if part:
            half = img.size[0] // 2
            img = img.crop((0, 0, half, img.size[1]) if part == "left" else (half, 0, 2 * half, img.size[1]))
        img = to_8bit(img, channels)
        return to_chw(fit_image(img, size, fit))
    except SkipImage:
        raise
    except Image.DecompressionBombError as e:
        # PIL's own hard limit (about 179 M pixels), which applies whatever max_pixels says.
        raise SkipImage("too many pixels", str(e)) from None
    except UnidentifiedImageError:
        raise SkipImage("not an image", "PIL does not recognise the content") from None
    except OSError as e:
        text = str(e)
        reason = "truncated" if ("truncated" in text or "broken data stream" in text) else "could not decode"
        raise SkipImage(reason, text) from None
    except Exception as e:  # noqa: BLE001 - malformed files make plugins raise all sorts; a bad file must not stop a scan
        raise SkipImage("could not decode", f"{type(e).__name__}: {e}") from None


def svg_renderer() -> str | None:
    """"resvg VERSION" when SVGs can be drawn, else None (part of the cache fingerprint of folders with SVGs)."""
    if find_spec("resvg") is None:
        return None
    try:
        return f"resvg {metadata.version('resvg')}"
    except metadata.PackageNotFoundError:
        return "resvg"


def draw_svg(path: Path, *, size: int, fit: Fit, max_pixels: int) -> Image.Image:
    """An SVG file drawn as RGBA, its short (crop) or long (pad) side twice ``size``; raises ``SkipImage``."""
    if find_spec("resvg") is None:
        raise SkipImage("unsupported format (svg)", SVG_ADVICE)
    import resvg
    try:
        text = path.read_bytes().decode("utf-8-sig")
        # Python's XML parser first: resvg reports bad input by a Rust panic, which prints a backtrace on
        # stderr, and this also refuses entity bombs (expat's amplification limit).
        root = ElementTree.fromstring(text)
    except (UnicodeDecodeError, ElementTree.ParseError) as e:
        raise SkipImage("not an image", f"not SVG: {e}") from None
    except OSError as e:
        raise SkipImage("unreadable", str(e)) from None
    if root.tag.rpartition("}")[2] != "svg":
        raise SkipImage("not an image", f"the XML root is <{root.tag}>, not <svg>")
    options = tree = None
    try:
        options = resvg.usvg.Options.default()
        options.load_system_fonts()      # without fonts, <text> would be left out without a word
        tree = resvg.usvg.Tree.from_str(text, options)
        w, h = tree.int_size()
        scale = 2 * size / max(1, min(w, h) if fit == "crop" else max(w, h))
        cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
        if cw * ch > max_pixels:        # resvg allocates the whole canvas first, and aborts when it cannot
            raise SkipImage("too many pixels", f"{w}x{h} drawn at {cw}x{ch} = {cw * ch:,} pixels is over "
                                               f"max_pixels={max_pixels:,}")
        png = resvg.render(tree, (scale, 0, 0, 0, scale, 0), bg_size=(cw, ch))
        with Image.open(io.BytesIO(bytes(png))) as img:
            return img.convert("RGBA")
    except SkipImage:
        raise
    except Exception as e:  # noqa: BLE001 - as for raster files: a bad file must not stop a scan
        raise SkipImage("could not decode", f"{type(e).__name__}: {e}") from None
    except BaseException as e:
        if type(e).__name__ != "PanicException":   # pyo3's panics derive from BaseException, not Exception
            raise
        raise SkipImage("could not decode", f"resvg: {e}") from None
    finally:
        # resvg's objects may only be freed on the thread that made them; a SkipImage's traceback keeps this
        # frame alive and travels to the thread that collects the results.
        options = tree = None  # noqa: F841


def to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to 8-bit ``L`` (channels=1) or ``RGB`` (channels=3).

    Transparent pixels become white.  16-bit images (``I;16*``, ``I``) are
    scaled by 255/65535 so that full white stays white; ``I`` values outside
    0..65535 are clipped.  Float (``F``) images are refused with ``SkipImage``:
    their range (0..1? 0..255? HDR?) is not recorded in the file.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if img.mode.startswith("I;16") or img.mode == "I":
        wide = np.clip(np.asarray(img, dtype=np.float64), 0, 65535)
        img = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8), "L")
    elif img.mode == "F":
        raise SkipImage("unsupported pixel format", "32-bit float pixels; save the image as 8- or 16-bit")
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode not in ("L", "RGB"):
        # Palette, CMYK, YCbCr, 1-bit, RGBA after compositing: all go via RGB.
        img = img.convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def _has_alpha(img: Image.Image) -> bool:
    # "transparency" in info marks a palette entry or a colour key (P, L, RGB PNGs and GIFs).
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def fit_image(img: Image.Image, size: int, fit: Fit, *, resample: Image.Resampling | None = None) -> Image.Image:
    """Resize to size x size.

    ``crop``: the short side becomes ``size`` and the centre square is kept.
    ``pad``:  the long side becomes ``size`` and the rest is filled with white.
    The default filter is Lanczos when shrinking and bicubic when enlarging
    (Lanczos rings visibly on big enlargements).
    """
    if fit not in ("crop", "pad"):
        raise ValueError(f"fit must be 'crop' or 'pad', got {fit!r}")
    w, h = img.size
    if fit == "crop":
        side = min(w, h)
        filt = resample if resample is not None else _filter(side, size)
        left, top = (w - side) / 2, (h - side) / 2
        # Resizing only the centre box avoids a second resampling pass.
        return img.resize((size, size), filt, box=(left, top, left + side, top + side), reducing_gap=REDUCING_GAP)
    longest = max(w, h)
    nw, nh = max(1, round(w * size / longest)), max(1, round(h * size / longest))
    filt = resample if resample is not None else _filter(longest, size)
    inner = img.resize((nw, nh), filt, reducing_gap=REDUCING_GAP)
    canvas = Image.new(img.mode, (size, size), 255 if img.mode == "L" else (255, 255, 255))
    canvas.paste(inner, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def _filter(src: int, dst: int) -> Image.Resampling:
    return Image.Resampling.LANCZOS if dst < src else Image.Resampling.BICUBIC


def to_chw(img: Image.Image) -> np.ndarray:
    """An ``L`` or ``RGB`` image as a contiguous uint8 (C, H, W) array."""
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)

