"""Paired data: the two sides (a, b) of the same pictures, for picture-to-picture translation.

A paired source is one of:

* a folder with sub-folders ``A/`` and ``B/`` (any case; also ``trainA/`` and ``trainB/``, the layout of
  CycleGAN's data sets), pictures matched by their path inside the side's folder without the extension
  (``A/shoes/1.jpg`` pairs with ``B/shoes/1.png``);
* a flat folder of side-by-side pictures, width == 2 x height (the layout of pix2pix's data sets): the left
  half is a, the right half b;
* a built-in paired set (``PAIRED_BUILTINS``: digit-sketch; and the fetched emoji-sketch, emoji-styles).

``DataConfig.pair`` picks the side to load.  Both sides come out in the same order, sorted by pair name,
because the trainer draws a paired role with the main data's indices; so both sides are built together, into
two caches, and a pair one of whose pictures cannot be used is left out of both.  Pictures without a partner
are left out and counted.  ``DataConfig.half`` keeps the pairs whose name hashes into the first or second
half, so that an unpaired method can train on a of one half and b of the other and never see a true pair.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..progress import counting_bar
from . import skips, transforms
from .base import DataError, cache_root
from .builtin_sets import FETCHED_FOLDERS, digit_images
from .cache import CacheWriter, file_stat, fingerprint
from .transforms import IMAGE_EXTENSIONS, SVG_EXTENSIONS, SkipImage

__all__ = ["PAIRED_BUILTINS", "PAIRED_SETS", "PairScan", "describe_pairs", "half_of", "is_paired",
           "pair_cache", "scan_pairs"]

HALF_SALT = "danqing-pair-half-v1"     # changing it reshuffles the halves: bump only on purpose
SIDE_FOLDERS = {"a": ("a", "traina"), "b": ("b", "trainb")}   # lower-cased folder names of each side
NAMED = 5                              # names shown per list in `data info`
NO_PARTNER = "without a partner"       # the skip reason of a picture whose other side is missing


def half_of(name: str) -> int:
    """1 or 2: the half a pair belongs to, from the SHA-256 of its name (the same on every machine)."""
    digest = hashlib.sha256(f"{HALF_SALT}:{name}".encode()).digest()
    return 1 if int.from_bytes(digest[:8], "big") < 2 ** 63 else 2


# ---------------------------------------------------------------- built-in paired sets

@dataclass(frozen=True)
class PairedBuiltin:
    description: str
    stamp: str                                   # changes when the data would
    load: Callable[[], tuple[list[str], list[np.ndarray], list[np.ndarray]]]   # names, a and b (H, W[, 3]) uint8


@functools.lru_cache(maxsize=1)     # both halves and both sizes of a run draw the same sketches once
def _digit_sketch() -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    from .sketch import sketch
    digits, _ = digit_images()
    # Drawn at 32 px: Canny needs more than the 8x8 pixels of the originals to find two sides of a stroke.
    big = [np.asarray(Image.fromarray(d, "L").resize((32, 32), Image.Resampling.BICUBIC)) for d in digits]
    return [f"{i:04d}" for i in range(len(big))], [sketch(d, i) for i, d in enumerate(big)], big


PAIRED_BUILTINS: dict[str, PairedBuiltin] = {
    "digit-sketch": PairedBuiltin("scikit-learn digits at 32x32 (b) and line drawings of them (a)",
                                  "digit-sketch-v1", _digit_sketch),
}
# Every name that is a paired set: these refuse to load without data.pair.
PAIRED_SETS = (*PAIRED_BUILTINS, *(n for n, f in FETCHED_FOLDERS.items() if f.paired))


# ---------------------------------------------------------------- folders

@dataclass
class PairScan:
    root: Path
    layout: str                                  # "folders" or "side-by-side"
    pairs: list[tuple[str, str, str]]            # (name, a's path, b's path) relative to root, sorted by name
    only: dict[str, list[str]] = field(default_factory=lambda: {"a": [], "b": []})   # paths without a partner
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)    # (name, a's WxH, b's WxH)
    not_split: list[str] = field(default_factory=list)   # side-by-side: pictures whose width is not 2 x height
    unreadable: list[str] = field(default_factory=list)  # headers that could not be read


def _pictures(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Relative POSIX paths of the pictures under ``folder`` (hidden files and folders left out), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath).relative_to(folder).as_posix()
        found += [name if base == "." else f"{base}/{name}" for name in filenames
                  if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions]
    return sorted(found)


def _side_folders(folder: Path) -> tuple[str, str] | None:
    """The names of the a and b sub-folders of ``folder``, or None when it has not both."""
    try:
        subs = {p.name.lower(): p.name for p in folder.iterdir() if p.is_dir()}
    except OSError:
        return None
    a = next((subs[n] for n in SIDE_FOLDERS["a"] if n in subs), None)
    b = next((subs[n] for n in SIDE_FOLDERS["b"] if n in subs), None)
    return (a, b) if a and b else None


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable file: it is reported, and the decoder says why
        return None


def scan_pairs(folder: Path) -> PairScan | None:
    """The pairs of a paired folder (reading only the pictures' headers), or None when it is not one."""
    sides = _side_folders(folder)
    if sides is not None:
        found = {side: {os.path.splitext(rel)[0]: f"{sub}/{rel}"
                        for rel in reversed(_pictures(folder / sub, IMAGE_EXTENSIONS + SVG_EXTENSIONS))}
                 for side, sub in zip("ab", sides)}    # reversed: of a.png and a.jpg, the first sorted wins
        names = sorted(found["a"].keys() & found["b"].keys())
        scan = PairScan(folder, "folders", [(n, found["a"][n], found["b"][n]) for n in names])
        for side, other in (("a", "b"), ("b", "a")):
            scan.only[side] = sorted(rel for n, rel in found[side].items() if n not in found[other])
        for name, a, b in scan.pairs:
            sa, sb = _header_size(folder / a), _header_size(folder / b)
            if sa and sb and sa != sb:
                scan.mismatched.append((name, "x".join(map(str, sa)), "x".join(map(str, sb))))
        return scan
    files = _pictures(folder, IMAGE_EXTENSIONS)
    sizes = {rel: _header_size(folder / rel) for rel in files}
    split = [rel for rel, s in sizes.items() if s is not None and s[0] == 2 * s[1]]
    if not split or 2 * len(split) <= len([s for s in sizes.values() if s is not None]):
        return None                                # most pictures are not A|B: an ordinary folder
    scan = PairScan(folder, "side-by-side", [(os.path.splitext(rel)[0], rel, rel) for rel in split])
    scan.not_split = [rel for rel, s in sizes.items() if s is not None and s[0] != 2 * s[1]]
    scan.unreadable = [rel for rel, s in sizes.items() if s is None]
    return scan


def _folder_of(source: str) -> Path | None:
    fetched = FETCHED_FOLDERS.get(source)
    if fetched is not None:
        return cache_root() / fetched.path
    folder = Path(source).expanduser()
    return folder if folder.is_dir() else None


def is_paired(source: str) -> bool:
    """Whether ``source`` is a paired set: a built-in one, or a folder laid out as A/ + B/ or A|B pictures."""
    if source in PAIRED_SETS:
        return True
    folder = _folder_of(source)
    return folder is not None and scan_pairs(folder) is not None


def _scan_source(source: str, root: Path | None = None) -> PairScan:
    fetched = FETCHED_FOLDERS.get(source)
    folder = fetched.folder(root or cache_root()) if fetched else Path(source).expanduser()    # "fetch it first"
    if not folder.is_dir():
        raise DataError(f"paired data source {source!r} is neither a paired built-in "
                        f"({', '.join(PAIRED_SETS)}) nor an existing folder; give one of those or a folder "
                        "with A/ and B/ sub-folders or side-by-side A|B pictures")
    scan = scan_pairs(folder)
    if scan is None:
        raise DataError(_not_paired(source, "data.pair loads one side of a pair"))
    if not scan.pairs:
        raise DataError(f"{folder} holds no pairs: no picture in its A/ folder has a partner of the same name in "
                        "its B/ folder; name both sides' pictures alike (A/1.png and B/1.jpg)")
    return scan


def _not_paired(source: str, what: str) -> str:
    return (f"{source} is not paired: {what} (A/ and B/ folders with matching names, side-by-side A|B "
            f"pictures, or a paired built-in set such as digit-sketch)")


# ---------------------------------------------------------------- loading one side

def pair_cache(cfg: DataConfig, root: Path, progress: bool) -> tuple[str, str]:
    """(cache fingerprint, description) of side ``cfg.pair`` of ``cfg.source``, built with its other side
    when missing; sources.load_dataset opens it like any cache."""
    settings = {"size": cfg.size, "channels": cfg.channels, "fit": cfg.fit, "max_pixels": cfg.max_pixels,
                "half": cfg.half}
    halved = "" if not cfg.half else f", half {cfg.half} of the pairs"
    if cfg.source in PAIRED_BUILTINS:
        builtin = PAIRED_BUILTINS[cfg.source]
        fps = {side: fingerprint(["pair-named", side, cfg.source, builtin.stamp, settings]) for side in "ab"}
        sources = {side: f"{cfg.source} ({builtin.description}), side {side}{halved}" for side in "ab"}
        if not (root / "datasets" / fps[cfg.pair] / "meta.json").is_file():
            names, a, b = builtin.load()
            _write_sides(cfg, root, fps, sources, [(n, a[i], b[i]) for i, n in enumerate(names)], [], progress)
        return fps[cfg.pair], sources[cfg.pair]
    scan = _scan_source(cfg.source, root)
    listing = [[rel, *file_stat(scan.root / rel)] for rel in sorted({p for _, a, b in scan.pairs for p in (a, b)})]
    if any(rel.lower().endswith(SVG_EXTENSIONS) for _, a, b in scan.pairs for rel in (a, b)):
        settings["svg"] = transforms.svg_renderer()
    fps = {side: fingerprint(["pair-named", side, scan.layout, str(scan.root.resolve()), settings, listing,
                       scan.only, scan.not_split]) for side in "ab"}
    fetched = FETCHED_FOLDERS.get(cfg.source)
    where = f"{cfg.source} ({fetched.description})" if fetched else f"paired folder {scan.root.resolve()}"
    sources = {side: f"{where}, side {side}{halved}" for side in "ab"}
    if not (root / "datasets" / fps[cfg.pair] / "meta.json").is_file():
        entries = [[rel, NO_PARTNER, f"no {'b' if side == 'a' else 'a'} picture of the same name"]
                   for side in "ab" for rel in scan.only[side]]
        entries += [[rel, "not side by side", "its width is not twice its height"] for rel in scan.not_split]
        split = scan.layout == "side-by-side"
        items = [(n, (scan.root / a, "left" if split else ""), (scan.root / b, "right" if split else ""))
                 for n, a, b in scan.pairs]
        _write_sides(cfg, root, fps, sources, items, entries, progress)
    return fps[cfg.pair], sources[cfg.pair]


def _decode(cfg: DataConfig, item: Any) -> np.ndarray | SkipImage:
    """One side of one pair as uint8 (C, size, size): from a file (path, part) or an array (H, W[, 3])."""
    try:
        if isinstance(item, np.ndarray):
            pil = transforms.to_8bit(Image.fromarray(item, "L" if item.ndim == 2 else "RGB"), cfg.channels)
            return transforms.to_chw(transforms.fit_image(pil, cfg.size, cfg.fit))
        path, part = item
        return transforms.load_image(path, size=cfg.size, channels=cfg.channels, fit=cfg.fit,
                                     max_pixels=cfg.max_pixels, part=part)
    except SkipImage as e:
        return e


def _write_sides(cfg: DataConfig, root: Path, fps: dict[str, str], sources: dict[str, str],
                 items: list[tuple[str, Any, Any]], entries: list[list[str]], progress: bool) -> None:
    """Decode the pairs of ``cfg.half`` and write both sides' caches, in the order of ``items`` (by name)."""
    items = [it for it in items if not cfg.half or half_of(it[0]) == cfg.half]
    entries = [list(e) for e in entries]
    kept: list[str] = []                     # the pairs' names: each side's captions, so data.select picks pairs
    with CacheWriter(root / "datasets" / fps["a"]) as out_a, CacheWriter(root / "datasets" / fps["b"]) as out_b, \
            counting_bar(len(items), progress, "decoding pairs") as tick, warnings.catch_warnings(), \
            ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)    # max_pixels is the rule (sources.py)
        for start in range(0, len(items), 256):
            chunk = items[start:start + 256]
            both = zip(pool.map(lambda it: _decode(cfg, it[1]), chunk), pool.map(lambda it: _decode(cfg, it[2]), chunk))
            for (name, a_item, b_item), (a, b) in zip(chunk, both):
                bad = [(side, r, it) for side, r, it in (("a", a, a_item), ("b", b, b_item)) if isinstance(r, SkipImage)]
                if bad:     # both sides leave: the two caches must hold the same pairs in the same order
                    for side, r, it in bad:
                        assert isinstance(r, SkipImage)
                        label = _label(name, side, it)
                        entries.append([skips.printable(label), r.reason, skips.printable(r.detail)])
                    continue
                assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                out_a.add(a)
                out_b.add(b)
                kept.append(name)
            tick(len(chunk))
        if not kept:
            raise DataError(f"no usable pairs in {sources[cfg.pair]}" + (f": {skips.counts(dict(Counter(e[1] for e in entries)))}"
                                                              if entries else "") + "; see `danqing data info`")
        skipped = dict(Counter(e[1] for e in entries))
        chw = (cfg.channels, cfg.size, cfg.size)
        out_a.commit(chw, None, [], kept, skipped, sources["a"], skipped_files=entries)
        out_b.commit(chw, None, [], kept, skipped, sources["b"], skipped_files=entries)


def _label(name: str, side: str, item: Any) -> str:
    """How a skipped picture is named: its file (and half), or side/name for a built-in set's."""
    if isinstance(item, tuple):
        return f"{item[0].name} ({item[1]} half)" if item[1] else str(item[0])
    return f"{side}/{name}"


# ---------------------------------------------------------------- `danqing data info`

def describe_pairs(source: str) -> dict[str, Any]:
    """A JSON-ready summary of a paired source's pairing for ``danqing data info`` (headers only, no decoding)."""
    if source in PAIRED_BUILTINS:
        return {"layout": f"built-in paired set: {PAIRED_BUILTINS[source].description}"}
    scan = _scan_source(source)
    out: dict[str, Any] = {"layout": "A/ and B/ folders" if scan.layout == "folders" else "side-by-side A|B pictures",
                           "pairs": len(scan.pairs),
                           "halves (data.half=1 / 2)": "{} / {}".format(*np.bincount(
                               [half_of(n) for n, _, _ in scan.pairs], minlength=3)[1:].tolist())}
    for side in "ab":
        if scan.layout == "folders":
            out[f"only in {side.upper()} (no partner)"] = _first(scan.only[side])
    if scan.layout == "folders":
        out["size mismatches (resized alike)"] = _first([f"{n} ({a} vs {b})" for n, a, b in scan.mismatched])
    else:
        out["not side by side (left out)"] = _first(scan.not_split)
        out["unreadable"] = _first(scan.unreadable)
    return out


def _first(items: list[str]) -> str:
    if not items:
        return "0"
    more = f", ... ({len(items) - NAMED} more)" if len(items) > NAMED else ""
    return f"{len(items)}: {', '.join(items[:NAMED])}{more}"


def pair_seed(name: str) -> int:
    """A sketch's seed from its pair's name, so every picture gets its own wobble and gaps."""
    return zlib.crc32(name.encode())
