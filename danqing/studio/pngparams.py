"""Painting parameters read back from a PNG: danqing's own ``danqing`` chunk (a painting's or a style
picture's), else an A1111 ``parameters`` text.

The A1111 text (also written by danqing, ComfyUI exporters, civitai ...) is

    a prompt, possibly over several lines
    Negative prompt: what not to paint
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x512, Model: name, ...

and is mapped onto danqing's field names; keys without a counterpart are kept under ``extra``.

Both come from a stranger's file, so: a chunk over its size limit, JSON nested too deeply or holding NaN or
Infinity, and numbers that are not finite are refused or kept as text, never passed on (a reply cannot carry them).
"""
from __future__ import annotations

import io
import json
import math
import re
from dataclasses import asdict
from typing import Any

from PIL import Image

from ..pipeline import Params, PipelineError

# a key is short: bounding it keeps a long line without colons linear to scan
_PAIR = re.compile(r'\s*([\w][\w \-/()]{0,63}):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
MAX_OWN = 1024 * 1024            # the `danqing` chunk: a 64-cell grid sheet's is ~150 KB
MAX_TEXT = 64 * 1024             # the A1111 text: a prompt, a negative prompt and one line of settings
MAX_DEPTH = 32                   # danqing's chunk nests 4 deep (a grid's cells); JSON deeper than this is refused
_SAMPLERS = {"euler": "euler", "euler a": "euler_a", "euler_a": "euler_a", "heun": "heun", "ddim": "ddim",
             "dpm++ 2m": "dpmpp2m", "dpmpp_2m": "dpmpp2m", "dpmpp2m": "dpmpp2m"}
_FIELDS: dict[str, tuple[str, type]] = {
    "steps": ("steps", int), "cfg scale": ("guidance", float), "seed": ("seed", int), "model": ("model", str),
    "model hash": ("weights", str), "denoising strength": ("strength", float), "best of": ("best_of", int),
    "variation seed": ("variation_seed", int), "variation seed strength": ("variation_strength", float),
    "prompt score": ("score", float), "version": ("version", str),
}


def picture_error(e: BaseException) -> str:
    """What PIL said about a file, without the Python object it names (``<_io.BytesIO object at 0x...>``)."""
    from PIL import UnidentifiedImageError
    if isinstance(e, UnidentifiedImageError):
        return "its content is not a picture format PIL knows"
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(e)).strip()
    return text[:200] or type(e).__name__


def read_png_text(data: bytes) -> dict[str, str]:
    """The text chunks of an image file (header only: no pixels are decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)}
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise PipelineError(f"the file is not a picture PIL can read ({picture_error(e)})") from None


def parameters_from_png(data: bytes) -> dict[str, Any]:
    """``{"source": "danqing" | "a1111", ...fields}`` from a PNG; PipelineError when it carries neither, or only
    one that cannot be read (the message says why)."""
    text = read_png_text(data)
    own, a1111, damaged = text.get("danqing"), text.get("parameters"), None
    if own:
        try:
            return {"source": "danqing", **danqing_fields(strict_json(own, MAX_OWN))}
        except (ValueError, TypeError) as e:
            damaged = f"its danqing chunk cannot be read: {e}"     # fall back to the A1111 text when there is one
    if a1111 and len(a1111) > MAX_TEXT:
        raise PipelineError(f"the picture's `parameters` text is {len(a1111):,} characters; at most {MAX_TEXT:,} "
                            "are read" + (f" ({damaged})" if damaged else ""))
    if a1111:
        return {"source": "a1111", **parse_a1111(a1111)}
    if damaged:
        raise PipelineError(f"the picture carries no readable painting parameters: {damaged}")
    raise PipelineError("the picture carries no painting parameters (no danqing chunk and no A1111 `parameters` "
                        "text): it was not painted by danqing or A1111, or its metadata was stripped")


def strict_json(text: str, limit: int) -> Any:
    """JSON as a reply can carry it back: at most ``limit`` characters and MAX_DEPTH levels, finite numbers only
    (ValueError naming the problem otherwise)."""
    if len(text) > limit:
        raise ValueError(f"it is {len(text):,} characters; at most {limit:,}")

    def constant(name: str) -> Any:
        raise ValueError(f"it holds {name}, which JSON has not")

    def finite(number: str) -> float:
        if not math.isfinite(value := float(number)):
            raise ValueError(f"it holds the number {number[:40]}, too large for a reply")
        return value
    try:
        data = json.loads(text, parse_constant=constant, parse_float=finite)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    level, depth = [data], 0                  # the depth, level by level (a reply nests it a little deeper still)
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"it is nested more than {MAX_DEPTH} levels deep")
        level = [v for x in level if isinstance(x, dict | list) for v in (x.values() if isinstance(x, dict) else x)]
    return data


def danqing_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A ``danqing`` chunk as Params fields, or StyleParams fields for a style picture (``"kind": "style"``);
    unknown keys dropped; a grid sheet keeps its ``grid``."""
    if not isinstance(data, dict):
        raise TypeError(f"it is a JSON {type(data).__name__}, not an object of fields")
    if data.get("kind") == "style":
        from ..style import StyleParams
        return asdict(StyleParams(**{k: v for k, v in data.items() if k in StyleParams.__dataclass_fields__}))
    known = set(Params.__dataclass_fields__)
    out = asdict(Params(**{k: v for k, v in data.items() if k in known}))
    if isinstance(data.get("grid"), dict):
        out["grid"] = data["grid"]
    return out


def parse_a1111(text: str) -> dict[str, Any]:
    """An A1111 ``parameters`` text -> danqing field names (plus ``extra`` for the keys danqing has no name for)."""
    lines = text.strip().splitlines()
    pairs: list[tuple[str, str]] = []
    if lines and lines[-1].lstrip().lower().startswith(("steps:", "sampler:", "seed:", "cfg scale:", "size:")) \
            and len(found := _PAIR.findall(lines[-1])) >= 2:
        pairs = found
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    extra: dict[str, str] = {}
    for key, value in pairs:
        key, value = key.strip(), value.strip()
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value.strip('"')
        k = key.lower()
        try:
            if k == "sampler":
                name = value.lower().removesuffix(" karras").strip()
                out["sampler"] = _SAMPLERS.get(name, value)
            elif k == "size" and re.fullmatch(r"\d+x\d+", value):
                w, h = map(int, value.split("x"))
                out.update(size=w if w == h else max(w, h), width=w, height=h)
            elif k in _FIELDS:
                name, tp = _FIELDS[k]
                if tp is not str and not math.isfinite(float(value)):
                    raise ValueError(value)              # nan, inf, 1e999: kept as the text it is
                out[name] = tp(float(value)) if tp is int else tp(value)
                if name == "version":
                    out[name] = value.removeprefix("danqing ")
            else:
                extra[key] = value
        except ValueError:
            extra[key] = value
    out["extra"] = extra
    return out
