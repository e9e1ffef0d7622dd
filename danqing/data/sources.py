"""Where training images come from: a folder or a built-in set, preprocessed once
into a uint8 cache that later runs memory-map instead of decoding again.

Folder rules (documented here because users meet them):

* Files are found recursively; hidden files and folders (``.name``) are
  ignored, which also keeps out macOS ``._x.jpg`` resource forks.  Order is
  the sorted relative path, so runs are reproducible.  SVGs are drawn when
  resvg is installed and skipped as "unsupported format (svg)" when not.
* Every skipped file is kept by name with its reason (skips.py): the warning,
  ``danqing data info`` and ``write_skipped`` (a run's ``skipped.txt``) show them.
* Class labels come from the first sub-folder level, but only when *every*
  usable image lies in a sub-folder and there are at least two of them; a
  single wrapper folder such as ``photos/`` is organisation, not a class.
  Otherwise ``labels`` is None (no error).
* Captions: ``NAME.txt`` beside ``NAME.png``, or ``metadata.jsonl`` lines
  ``{"file_name": "rel/path.png", "text": "..."}`` (key ``caption`` also
  accepted; paths relative to the metadata file's folder).  The source
  closest to the image wins: ``NAME.txt`` first, then the deepest
  ``metadata.jsonl``.  Images without any caption get "" when others have one.
  A metadata line may add ``"variants": ["a cat", ...]``: other phrasings of
  the same caption, which text-to-image training draws at times instead of
  it (``--train.variants``); evaluation and ``--train.balance`` use the caption.

The cache lives in ``cache_root()/datasets/<fingerprint>/`` (``images.npy`` +
``meta.json``).  The fingerprint covers every file's relative path, size and
mtime plus the output settings (and, with SVGs, the resvg version or its
absence), so editing, adding or removing a file or installing resvg makes a
new cache.  ``flip`` is applied per batch and is not part of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import shutil
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..pixels import from_uint8
from ..progress import counting_bar
from ..protocol import Batch
from . import skips, transforms
from .base import DataError, DataWarning, cache_root
from .builtin_sets import BUILTINS, FETCHED_FOLDERS, Builtin
from .cache import CacheWriter, read_cache
from .cache import file_stat as _stat
from .cache import fingerprint as _fingerprint
from .pairs import PAIRED_BUILTINS, PAIRED_SETS, pair_cache
from .transforms import IMAGE_EXTENSIONS, SVG_EXTENSIONS, SkipImage

_CHUNK = 256                # files handed to the decoding threads at a time


@dataclass
class ImageDataset:
    images: np.ndarray              # uint8 (N, C, H, W), memory-mapped from the cache
    labels: np.ndarray | None       # int64 (N,) or None
    class_names: list[str]          # index -> name, [] without classes
    captions: list[str] | None      # one per image, or None when no image has one
    skipped: dict[str, int]         # reason -> number of files skipped
    source: str                     # human-readable origin
    fingerprint: str
    variants: list[list[str]] | None = None   # other phrasings of each caption, or None when none has any
    # [relative path, reason, detail] of the first skips.MAX_LISTED skipped files; skipped_list names them all
    skipped_files: list[list[str]] = field(default_factory=list)
    skipped_list: Path | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: np.ndarray | Sequence[int], *, flip: torch.Tensor | None = None) -> Batch:
        """Images ``idx`` as floats in [-1, 1]; rows where ``flip`` is True are mirrored left-right.

        The dataset holds no random state: the caller draws ``flip``.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"idx must be a 1-D list of indices, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must be in 0..{len(self) - 1}, got {idx.min()}..{idx.max()}")
        x = from_uint8(torch.from_numpy(np.take(self.images, idx, axis=0)))
        if flip is not None:
            if flip.dtype != torch.bool or tuple(flip.shape) != (len(idx),):
                raise ValueError(f"flip must be a bool tensor of shape ({len(idx)},), "
                                 f"got {flip.dtype} {tuple(flip.shape)}")
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        labels = None if self.labels is None else torch.from_numpy(np.take(self.labels, idx))
        captions = None if self.captions is None else [self.captions[i] for i in idx.tolist()]
        return Batch(x, labels, captions)


# ---------------------------------------------------------------- entry point

def load_dataset(cfg: DataConfig, *, cache_dir: str | Path | None = None, progress: bool = True) -> ImageDataset:
    """Load ``cfg.source`` at ``cfg.size`` / ``cfg.channels`` / ``cfg.fit``, from the cache when possible.

    ``cache_dir`` replaces ``cache_root()``.  Built-in names win over folders
    of the same name; write ``./digits`` to mean a folder.
    """
    root = cache_root() if cache_dir is None else Path(cache_dir).expanduser()
    settings = {"size": cfg.size, "channels": cfg.channels, "fit": cfg.fit, "max_pixels": cfg.max_pixels}
    if cfg.pair:        # one side of a paired source, both sides built together (pairs.py)
        ds = (_open_cache(root, *pair_cache(cfg, root, progress))
              or _open_cache(root, *pair_cache(cfg, root, progress), rebuild_if_damaged=False))
        assert ds is not None                   # the second open raises rather than return None
    elif cfg.source in PAIRED_SETS:
        raise DataError(f"{cfg.source} is a paired set: load one side with data.pair=a or data.pair=b "
                        "(--data.pair=b), or train a family that takes pairs (pix2pix, cyclegan, cut)")
    elif cfg.source in BUILTINS:
        builtin = BUILTINS[cfg.source]
        fp = _fingerprint(["builtin", cfg.source, builtin.stamp(root), settings])
        source = f"{cfg.source} ({builtin.description})"
        ds = _open_cache(root, fp, source) or _build_builtin(builtin, cfg, root, fp, source, progress)
    else:
        fetched = FETCHED_FOLDERS.get(cfg.source)
        folder = fetched.folder(root) if fetched else Path(cfg.source).expanduser()
        if not folder.exists():
            raise DataError(f"data source {cfg.source!r} is neither a built-in "
                            f"({', '.join([*BUILTINS, *PAIRED_BUILTINS, *FETCHED_FOLDERS])}) "
                            "nor an existing folder; give a built-in name or the path of a folder of images")
        if not folder.is_dir():
            raise DataError(f"data source {cfg.source!r} is a file; give the folder that contains the images")
        scan = scan_folder(folder)
        if not scan.files():
            raise DataError(_nothing_usable(scan, []))
        if scan.svgs:       # whether they are drawn or skipped, and how, depends on resvg
            settings["svg"] = transforms.svg_renderer()
        fp = _fingerprint(["folder", settings, [[rel, *_stat(folder / rel)] for rel in scan.fingerprinted()]])
        source = f"{cfg.source} ({fetched.description})" if fetched else f"folder {folder.resolve()}"
        ds = _open_cache(root, fp, source) or _build_folder(scan, cfg, root, fp, source, progress)
    if ds.skipped:
        skips.warn_once(skips.report(ds), stacklevel=2)
    return select(ds, cfg.select) if cfg.select else ds


def select(ds: ImageDataset, pattern: str) -> ImageDataset:
    """The pictures of ``ds`` whose caption ``pattern`` matches (``re.search``), in their order, held in memory;
    the class names stay as they are, so class ids mean the same with and without the selection."""
    if ds.captions is None:
        raise DataError(f"data.select picks pictures by caption, but {ds.source} has no captions; add a "
                        "metadata.jsonl or .txt captions, or leave data.select out")
    wanted = re.compile(pattern)
    keep = np.array([i for i, c in enumerate(ds.captions) if wanted.search(c)], dtype=np.int64)
    if not keep.size:
        raise DataError(f"data.select {pattern!r} matches none of the {len(ds)} captions of {ds.source}; "
                        f"for example {ds.captions[0]!r}")
    return dataclasses.replace(
        ds, images=np.take(ds.images, keep, axis=0), labels=None if ds.labels is None else ds.labels[keep],
        captions=[ds.captions[i] for i in keep],
        variants=None if ds.variants is None else [ds.variants[i] for i in keep],
        source=f"{ds.source}, the {keep.size} of {len(ds)} pictures whose caption matches {pattern!r}",
        fingerprint=hashlib.sha256(f"{ds.fingerprint}/{pattern}".encode()).hexdigest()[:32])


# ---------------------------------------------------------------- folders

@dataclass
class _Scan:
    root: Path
    images: list[str]       # relative POSIX paths with a raster image extension, sorted
    texts: set[str]         # relative paths of .txt files (caption candidates)
    metadata: list[str]     # relative paths of metadata.jsonl files
    other: int              # files with any other extension
    bad_folders: list[list[str]]    # [relative path + "/", error] of sub-folders that could not be listed
    svgs: list[str] = field(default_factory=list)   # relative paths of SVG files, sorted

    def files(self) -> list[str]:
        """What the data set is made of, in its order: the raster images and the SVGs."""
        return sorted([*self.images, *self.svgs])

    def fingerprinted(self) -> list[str]:
        return sorted([*self.images, *self.svgs, *self.texts, *self.metadata])


def scan_folder(root: Path) -> _Scan:
    images, svgs, texts, metadata, other, errors = [], [], set(), [], 0, []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            if name.startswith("."):
                continue
            rel = name if base == "." else f"{base}/{name}"
            ext = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS:
                images.append(rel)
            elif ext in SVG_EXTENSIONS:
                svgs.append(rel)
            elif ext == ".txt":
                texts.add(rel)
            elif name == "metadata.jsonl":
                metadata.append(rel)
            else:
                other += 1
    bad = [[skips.printable(os.path.relpath(e.filename, root) + "/" if e.filename else "?"),
            skips.printable(e.strerror or str(e))] for e in errors]
    return _Scan(root, sorted(images), texts, sorted(metadata), other, bad, sorted(svgs))


def _nothing_usable(scan: _Scan, entries: list[list[str]]) -> str:
    files = scan.files()
    seen = len(files) + len(scan.texts) + len(scan.metadata) + scan.other
    exts = " ".join([*IMAGE_EXTENSIONS, *SVG_EXTENSIONS])
    if not files:
        what = f"found {seen} file(s) but none has an image extension"
    else:
        reasons = Counter(e[1] for e in entries if e[1] != "unreadable folder")
        names = skips.named(entries, len(entries))
        what = (f"found {seen} file(s); all {len(files)} image file(s) were skipped ({skips.counts(reasons)})"
                + (f": {names}" if names else ""))
        what += "".join(f"; {line}" for line in skips.advice(sorted(reasons)))
    if scan.bad_folders:
        what += f"; {len(scan.bad_folders)} sub-folder(s) could not be read (check permissions)"
    return (f"no usable images in {scan.root}: {what}. Supported extensions (any case): {exts}; "
            "sub-folders are searched too. Add images there or point data.source at another folder.")


def _build_folder(scan: _Scan, cfg: DataConfig, root: Path, fp: str, source: str, progress: bool) -> ImageDataset:
    kept: list[str] = []
    entries = [[name, "unreadable folder", why] for name, why in scan.bad_folders]    # [path, reason, detail]
    files = scan.files()

    def decode(rel: str) -> np.ndarray | SkipImage:
        try:
            return transforms.load_image(scan.root / rel, size=cfg.size, channels=cfg.channels,
                                         fit=cfg.fit, max_pixels=cfg.max_pixels)
        except SkipImage as e:
            return e

    with CacheWriter(root / "datasets" / fp) as out, counting_bar(len(files), progress, "decoding images") as tick, \
            warnings.catch_warnings(), ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        # max_pixels is checked from the header and is the only size rule; PIL's
        # own warning above ~89 M pixels would only repeat it (or contradict a raised limit).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for start in range(0, len(files), _CHUNK):  # PIL releases the GIL while decoding
            chunk = files[start:start + _CHUNK]
            for rel, result in zip(chunk, pool.map(decode, chunk)):
                if isinstance(result, SkipImage):
                    entries.append([skips.printable(rel), result.reason, skips.printable(result.detail)])
                else:
                    out.add(result)
                    kept.append(rel)
            tick(len(chunk))
        if not kept:
            raise DataError(_nothing_usable(scan, entries))
        labels, class_names = _folder_labels(kept)
        captions, variants = _folder_captions(scan, kept)
        skipped = dict(Counter(e[1] for e in entries))
        out.commit((cfg.channels, cfg.size, cfg.size), labels, class_names, captions, skipped, source,
                   variants=variants, skipped_files=entries)
    return _open_cache(root, fp, source, rebuild_if_damaged=False)


def _folder_labels(kept: list[str]) -> tuple[np.ndarray | None, list[str]]:
    if any("/" not in rel for rel in kept):
        return None, []
    firsts = [rel.split("/", 1)[0] for rel in kept]
    names = sorted(set(firsts))
    if len(names) < 2:
        return None, []
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[f] for f in firsts], dtype=np.int64), names


def _folder_captions(scan: _Scan, kept: list[str]) -> tuple[list[str] | None, list[list[str]] | None]:
    """(caption of each kept image, its other phrasings): each None when no image has one."""
    found: dict[str, str] = {}
    alternatives: dict[str, list[str]] = {}
    named: set[str] = set()
    # Shallow metadata files first, so deeper (closer) ones override them.
    for meta_rel in sorted(scan.metadata, key=lambda r: (r.count("/"), r)):
        folder = posixpath.dirname(meta_rel)
        for lineno, line in enumerate(_read_text(scan.root / meta_rel).splitlines(), 1):
            if not line.strip():
                continue
            where = f"{scan.root / meta_rel} line {lineno}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where} is not valid JSON ({e.msg}); fix or delete that line") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
                raise DataError(f'{where} needs a "file_name" string, e.g. {{"file_name": "a.png", "text": "a cat"}}')
            text = entry.get("text", entry.get("caption"))
            if text is None:
                continue  # metadata may carry other columns only
            if not isinstance(text, str):
                raise DataError(f'{where}: "text"/"caption" must be a string, got {type(text).__name__}')
            variants = entry.get("variants", [])
            if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
                raise DataError(f'{where}: "variants" must be a list of strings, e.g. ["a cat", "a kitten"]')
            target = posixpath.normpath(posixpath.join(folder, entry["file_name"]))
            found[target] = text.strip()
            alternatives[target] = [v.strip() for v in variants if v.strip()]
            named.add(target)
    for rel in kept:
        txt = os.path.splitext(rel)[0] + ".txt"
        if txt in scan.texts:
            found[rel] = _read_text(scan.root / txt).strip()
            alternatives.pop(rel, None)
    unmatched = len(named - set(scan.files()))
    if unmatched:
        warnings.warn(f"{unmatched} metadata.jsonl caption(s) in {scan.root} name files that were not found; "
                      "file_name is relative to the folder holding metadata.jsonl", DataWarning, stacklevel=4)
    if not any(rel in found for rel in kept):
        return None, None
    variants = [alternatives.get(rel, []) for rel in kept] if any(alternatives.get(rel) for rel in kept) else None
    return [found.get(rel, "") for rel in kept], variants


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; re-save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None


# ---------------------------------------------------------------- built-ins (builtin_sets.py)

def _build_builtin(builtin: Builtin, cfg: DataConfig, root: Path, fp: str, source: str,
                   progress: bool) -> ImageDataset:
    raw = builtin.load(root)
    with CacheWriter(root / "datasets" / fp) as out, counting_bar(len(raw.images), progress, "resizing") as tick:
        for img in raw.images:
            pil = transforms.to_8bit(Image.fromarray(img, "L"), cfg.channels)
            out.add(transforms.to_chw(transforms.fit_image(pil, cfg.size, cfg.fit, resample=Image.Resampling.BICUBIC)))
            tick(1)
        out.commit((cfg.channels, cfg.size, cfg.size), raw.labels, raw.class_names, raw.captions, {}, source)
    return _open_cache(root, fp, source, rebuild_if_damaged=False)


def _open_cache(root: Path, fp: str, source: str, *, rebuild_if_damaged: bool = True) -> ImageDataset | None:
    folder = root / "datasets" / fp
    if not (folder / "meta.json").is_file():
        return None
    try:
        images, meta = read_cache(folder)
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not rebuild_if_damaged:
            raise DataError(f"the cache just written to {folder} cannot be read back ({e}); "
                            "check the disk, or set DANQING_CACHE to another folder") from None
        warnings.warn(f"the cache in {folder} is damaged ({e}); rebuilding it", DataWarning, stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    if meta["skipped"] and "skipped_files" not in meta and rebuild_if_damaged:
        # Written before skipped files were recorded by name: the same images again, now with the names.
        shutil.rmtree(folder, ignore_errors=True)
        return None
    labels = None if meta["labels"] is None else np.asarray(meta["labels"], dtype=np.int64)
    full = folder / skips.LIST_FILE
    return ImageDataset(images, labels, list(meta["class_names"]), meta["captions"],
                        dict(meta["skipped"]), source, fp, meta.get("variants"),
                        [list(map(str, e)) for e in meta.get("skipped_files", [])], full if full.is_file() else None)


# ---------------------------------------------------------------- inspection

def describe(ds: ImageDataset) -> dict[str, Any]:
    """A JSON-ready summary for ``danqing data info``."""
    classes: dict[str, int] = {}
    if ds.labels is not None:
        counts = np.bincount(ds.labels, minlength=len(ds.class_names))
        classes = {name: int(c) for name, c in zip(ds.class_names, counts)}
    return {"source": ds.source, "count": len(ds), "shape": list(ds.images.shape[1:]), "classes": classes,
            "captions": ds.captions is not None,
            "caption variants": 0 if ds.variants is None else sum(map(len, ds.variants)),
            "skipped": dict(ds.skipped), "fingerprint": ds.fingerprint}


def preview_grid(ds: ImageDataset, n: int = 64) -> Image.Image:
    """The first ``n`` images in a near-square grid on white, for ``danqing data preview``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    from ..images import grid_uint8
    return grid_uint8(np.asarray(ds.images[:n]).transpose(0, 2, 3, 1))
