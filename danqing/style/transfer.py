"""Pictures in, a stylised picture out: the style-transfer pipeline behind ``danqing style``.

    from danqing.style import transfer, save
    img = transfer("photo.jpg", ["starry_night.jpg"], method="gatys", size=512)
    save(img, "out.png")          # PNG with `parameters` (A1111-like text) and `danqing` (JSON) chunks

Input rules (the same for content and styles; each adjustment is recorded as a note, which the command line
prints and the PNG keeps):

* unreadable files, or pictures under 64 px on a side, are refused with a message naming the file;
* a picture larger than ``size`` on its long side is downscaled to it (but not below 64 px on the short
  side); sides are rounded down to a multiple of 8 (the AdaIN decoder's stride), so the output may be a
  few pixels smaller than the input;
* grey pictures become RGB and transparent ones are put on white;
* styles are resized so that their long side equals the output's.

A content PNG painted by danqing keeps its own parameters inside the new picture's (``content_params``).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..pixels import from_uint8, to_uint8
from ..version import __version__
from .color import PRESERVE_COLOR, luminance, match_colors, match_luminance, with_chroma
from .vgg import StyleError

__all__ = ["DECODER", "METHODS", "MIN_SIDE", "PictureError", "StyleParams", "load_decoder", "read_picture", "save",
           "transfer"]

METHODS = ("gatys", "adain")
MIN_SIDE = 64
DECODER = Path(__file__).resolve().parents[1] / "weights" / "adain-decoder"    # the bundled decoder
TRAIN_HINT = ("train one with `danqing train adain --content photos --style paintings` (docs/style.md) "
              "and pass its run folder with --decoder")


class PictureError(StyleError):
    """One input picture cannot be used; ``what`` says which ("content", "style", "style 2", ...)."""

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


@dataclass
class StyleParams:
    """Everything that made a stylised picture; stored as JSON in the PNG's ``danqing`` chunk."""

    method: str
    content: str                                         # file names only: metadata travels, paths say too much
    styles: list[str]
    style_weights: list[float]
    size: list[int]                                      # [width, height] of the output
    preserve_color: str = ""                             # "", "luminance" or "histogram"
    alpha: float = 1.0                                   # adain: content/style trade-off
    steps: int = 0                                       # gatys: L-BFGS iterations or Adam steps per scale
    optimizer: str = ""
    content_weight: float = 0.0
    style_weight: float = 0.0
    tv_weight: float = 0.0
    scales: list[float] = field(default_factory=list)
    decoder: str = ""                                    # adain: the decoder's name and weights hash
    decoder_weights: str = ""
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)       # what was done to the inputs
    content_params: dict[str, Any] | None = None         # the content picture's own danqing parameters
    kind: str = "style"
    version: str = __version__

    def a1111(self) -> str:
        """A `parameters` text in the layout A1111-style readers expect: a description line, then key: value pairs."""
        styles = ", ".join(f"{s} ({w:.3g})" if len(self.styles) > 1 else s
                           for s, w in zip(self.styles, self.style_weights))
        # A1111 readers find the settings line by its leading "Steps:"; adain is one forward pass
        size = f"{self.size[0]}x{self.size[1]}"
        if self.method == "gatys":
            pairs = {"Steps": self.steps, "Sampler": f"gatys {self.optimizer}", "Size": size, "Method": "gatys",
                     "Content weight": f"{self.content_weight:g}", "Style weight": f"{self.style_weight:g}",
                     "TV weight": f"{self.tv_weight:g}", "Scales": "/".join(f"{s:g}" for s in self.scales)}
        else:
            pairs = {"Steps": 1, "Sampler": "adain", "Size": size, "Method": "adain", "Alpha": f"{self.alpha:g}",
                     "Model hash": self.decoder_weights[:10], "Model": self.decoder}
        if self.preserve_color:
            pairs["Preserve color"] = self.preserve_color
        pairs["Version"] = f"danqing {self.version}"
        return (f"style transfer: {self.content} in the style of {styles}\n"
                + ", ".join(f"{k}: {v}" for k, v in pairs.items()))


# ---------------------------------------------------------------- reading pictures

def read_picture(source: str | Path | Image.Image, what: str, size: int,
                 notes: list[str]) -> tuple[torch.Tensor, str, dict[str, Any] | None]:
    """A picture -> ((1, 3, H, W) in [-1, 1] with long side <= size, name, its danqing parameters or None).

    Appends what was done to it to ``notes``; raises StyleError for unreadable or too small pictures.
    """
    name = Path(source).name if not isinstance(source, Image.Image) else what
    if isinstance(source, Image.Image):
        img = source
        params = source.info.get("danqing")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(source) as opened:
                    if opened.format == "JPEG":
                        opened.draft("RGB", (size, size))                 # decode huge JPEGs at a fraction
                    opened.load()
                    img = ImageOps.exif_transpose(opened)
                    params = opened.info.get("danqing")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PictureError(what, f"the {what} {source} has too many pixels to open safely; shrink it first"
                               ) from None
        except FileNotFoundError:
            raise PictureError(what, f"the {what} {source} does not exist") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise PictureError(what, f"cannot read the {what} {source}: {e}") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise PictureError(what, f"the {what} {name} is {w}x{h}; style transfer needs at least {MIN_SIDE} px "
                                 "on each side")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
        notes.append(f"{name} has transparency: put on white")
    if img.mode in ("L", "1", "I", "I;16", "F") or (img.mode == "P" and _grey_palette(img)):
        notes.append(f"{name} is greyscale: converted to RGB")
    img = img.convert("RGB")
    scale = min(1.0, max(size / max(w, h), MIN_SIDE / min(w, h)))      # the short side stays >= MIN_SIDE
    nw, nh = max(MIN_SIDE, int(w * scale) // 8 * 8), max(MIN_SIDE, int(h * scale) // 8 * 8)
    if scale < 1:
        notes.append(f"{name} is {w}x{h}: downscaled to {nw}x{nh} (size {size})")
    if (nw, nh) != img.size:
        img = img.resize((nw, nh), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    x = from_uint8(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None])
    parsed = None
    if params:
        try:
            parsed = json.loads(params)
        except (TypeError, ValueError):
            parsed = None
    return x.contiguous(), name, parsed if isinstance(parsed, dict) else None


def _grey_palette(img: Image.Image) -> bool:
    pal = np.array(img.getpalette() or [0, 0, 0], dtype=np.int32).reshape(-1, 3)
    return bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())


def _fit_long_side(x: torch.Tensor, long: int) -> torch.Tensor:
    """Resize (1, 3, h, w) so that its long side is ``long`` (at least 64 px on the short side)."""
    h, w = x.shape[-2:]
    s = long / max(h, w)
    size = (max(MIN_SIDE, round(h * s)), max(MIN_SIDE, round(w * s)))
    if size == (h, w):
        return x
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)


# ---------------------------------------------------------------- the decoder

def load_decoder(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """The AdaIN model of a run or checkpoint folder (default: the bundled decoder) -> (model, name, sha)."""
    from .. import checkpoint as ckpt

    folder = Path(path) if path is not None else DECODER
    if path is None and not (folder / ckpt.MODEL).is_file():
        raise StyleError(f"--method adain needs a trained decoder, and the bundled one ({folder.name}) is not part "
                         f"of this installation yet; {TRAIN_HINT}")
    try:
        model, cfg = ckpt.load(folder, device=device)
    except ckpt.CheckpointError as e:
        raise StyleError(f"cannot load the AdaIN decoder: {e}") from None
    if cfg.get("family") != "adain":
        raise StyleError(f"{folder} holds a {cfg.get('family')} model, not an AdaIN decoder; {TRAIN_HINT}")
    weights = ckpt.resolve(folder) / ckpt.MODEL
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    name = folder.name if path is None else Path(path).resolve().name
    return model, name, sha


# ---------------------------------------------------------------- the pipeline

def transfer(content: str | Path | Image.Image, styles: Sequence[str | Path | Image.Image], *,
             method: str = "gatys", style_weights: Sequence[float] | None = None, alpha: float = 1.0,
             preserve_color: str | None = None, size: int = 512, steps: int | None = None,
             optimizer: str = "lbfgs", decoder: str | Path | Any = None, bf16: str = "auto",
             device: str | torch.device = "cpu", callback: Callable[[Any], bool | None] | None = None,
             **gatys_settings: Any) -> Image.Image:
    """Paint ``content`` in the style of ``styles`` -> a PIL image whose ``info["params"]`` is a StyleParams.

    method: "gatys" (optimisation; ``steps``, ``optimizer`` and any ``gatys.Settings`` field as a keyword) or
    "adain" (one forward pass; ``alpha``; ``decoder`` = a run/checkpoint folder, a loaded model, what
    ``load_decoder`` returns, or None for the bundled one).  style_weights: one per style (normalised to
    sum 1).  preserve_color: None, "luminance" or "histogram".  size: the longest side of the output at most.
    ``callback`` (gatys): called with each ``gatys.Progress``; returning True stops early.
    """
    from ..hardware import use_bf16

    if method not in METHODS:
        raise StyleError(f"unknown method {method!r}; choose gatys or adain")
    if preserve_color not in (None, "", *PRESERVE_COLOR):
        raise StyleError(f"preserve_color must be luminance or histogram, got {preserve_color!r}")
    if isinstance(styles, (str, Path, Image.Image)):
        styles = [styles]
    if not styles:
        raise StyleError("give at least one style image")
    weights = [1.0] * len(styles) if style_weights is None else [float(w) for w in style_weights]
    if len(weights) != len(styles):
        raise StyleError(f"{len(weights)} style weight(s) for {len(styles)} style image(s); give one weight per style")
    if min(weights) < 0 or sum(weights) <= 0:
        raise StyleError(f"style weights must be non-negative and not all zero, got {weights}")
    weights = [w / sum(weights) for w in weights]
    if size < MIN_SIDE:
        raise StyleError(f"size must be at least {MIN_SIDE}, got {size}")
    if not 0 <= alpha <= 1:
        raise StyleError(f"alpha must be between 0 and 1, got {alpha}")
    if method == "gatys" and alpha != 1:
        raise StyleError("alpha applies to --method adain; for gatys, trade content for style with the weights")
    if method == "adain" and (steps is not None or gatys_settings):
        raise StyleError("steps and loss weights apply to --method gatys; adain takes alpha")

    notes: list[str] = []
    device = torch.device(device)
    c, c_name, c_params = read_picture(content, "content", size, notes)
    long = max(c.shape[-2:])
    s_list, s_names = [], []
    for i, s in enumerate(styles):
        t, name, _ = read_picture(s, f"style {i + 1}" if len(styles) > 1 else "style", long, notes)
        s_list.append(_fit_long_side(t, long))
        s_names.append(name)
    c, s_list = c.to(device), [s.to(device) for s in s_list]
    work_c, work_s = c, s_list
    if preserve_color == "luminance":
        work_c = luminance(c)
        work_s = [match_luminance(luminance(s), work_c) for s in s_list]
    elif preserve_color == "histogram":
        work_s = [match_colors(s, c) for s in s_list]
    half = use_bf16(bf16, device)
    p = StyleParams(method, c_name, s_names, weights, [c.shape[-1], c.shape[-2]], preserve_color or "",
                    notes=notes, content_params=c_params, precision="bf16" if half else "fp32")
    if method == "gatys":
        from .gatys import Settings, default_scales, gatys
        from .vgg import load_vgg19
        try:
            settings = Settings(steps=steps or 100, optimizer=optimizer, bf16=half, **gatys_settings)
        except TypeError as e:
            raise StyleError(f"unknown gatys setting: {e}") from None
        vgg = load_vgg19().to(device)
        out = gatys(vgg, work_c, work_s, weights, settings, callback)
        p.steps, p.optimizer = settings.steps, settings.optimizer
        p.content_weight, p.style_weight = settings.content_weight, settings.style_weight
        p.tv_weight = settings.tv_weight
        p.scales = list(settings.scales or default_scales(tuple(c.shape[-2:])))
    else:
        if isinstance(decoder, torch.nn.Module):
            model, name, sha = decoder, "model", ""
        elif isinstance(decoder, tuple):                       # what load_decoder returned, loaded once for many
            model, name, sha = decoder
        else:
            model, name, sha = load_decoder(decoder, device)
        out = model.stylize(work_c, work_s, weights, alpha, dtype=torch.bfloat16 if half else torch.float32)
        p.alpha, p.decoder, p.decoder_weights = float(alpha), name, sha
    if preserve_color == "luminance":
        out = with_chroma(out.float(), c).clamp(-1, 1)
    arr = to_uint8(out[0]).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(arr)
    img.info["params"] = p
    return img


def save(img: Image.Image, path: str | Path) -> Path:
    """Write a stylised picture as PNG with its parameters in two text chunks (``parameters``, ``danqing``)."""
    from ..images import save_with_params
    return save_with_params(img, path)

