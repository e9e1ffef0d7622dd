"""The on-disk dataset cache: ``images.npy`` (uint8, memory-mapped by readers) + ``meta.json``
(+ ``skipped.tsv``, every file the build skipped, when it skipped any).

A cache folder appears only complete: it is written in a temporary folder
beside its final place and renamed into place at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .skips import LIST_FILE, MAX_LISTED, tsv_line

FORMAT_VERSION = 1          # bump when the cached bytes for the same inputs would change


def fingerprint(parts: list[Any]) -> str:
    """The cache key of a data set: a hash of what it was made from (with the cache format)."""
    text = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_stat(path: Path) -> list[int]:
    """[size, mtime_ns] of a file for a cache key; [-1, -1] when it cannot be read (its decoder will say why)."""
    try:
        st = path.stat()
    except OSError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


class CacheWriter:
    """Writes ``images.npy`` + ``meta.json`` into a temporary folder next to
    ``final`` and renames it into place on ``commit``; anything else removes it,
    so readers only ever see complete caches."""

    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        self.raw = open(self.tmp / "images.raw", "wb")  # noqa: SIM115 - closed in commit/__exit__
        self.count = 0

    def __enter__(self) -> "CacheWriter":
        return self

    def add(self, chw: np.ndarray) -> None:
        self.raw.write(chw.tobytes())
        self.count += 1

    def commit(self, chw: tuple[int, int, int], labels: np.ndarray | None, class_names: list[str],
               captions: list[str] | None, skipped: dict[str, int], source: str, *,
               variants: list[list[str]] | None = None, skipped_files: Sequence[Sequence[str]] = ()) -> None:
        self.raw.close()
        # The count is only known at the end (files get skipped), so the raw
        # bytes are streamed behind a header rather than held in memory.
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *chw)}
        with open(self.tmp / "images.npy", "wb") as npy, open(self.tmp / "images.raw", "rb") as src:
            np.lib.format.write_array_header_1_0(npy, header)
            shutil.copyfileobj(src, npy, 1 << 24)
            npy.flush()
            os.fsync(npy.fileno())
        os.remove(self.tmp / "images.raw")
        meta = {"format": FORMAT_VERSION, "count": self.count, "source": source, "skipped": skipped,
                "labels": None if labels is None else labels.tolist(), "class_names": class_names,
                "captions": captions, "variants": variants,
                "skipped_files": [list(e) for e in skipped_files[:MAX_LISTED]]}
        if skipped_files:
            with open(self.tmp / LIST_FILE, "w", encoding="utf-8", errors="backslashreplace") as f:
                f.writelines(map(tsv_line, skipped_files))
        with open(self.tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not (self.final / "meta.json").is_file():
                raise
            # Another process finished the same cache first; theirs is identical.
        self.raw = None

    def __exit__(self, *exc: object) -> None:
        if self.raw is not None:
            self.raw.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_cache(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(images memory-mapped (N, C, H, W) uint8, meta); raises ValueError/OSError when damaged."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    images = np.load(folder / "images.npy", mmap_mode="r")
    n = images.shape[0]
    if images.dtype != np.uint8 or images.ndim != 4 or n != meta["count"]:
        raise ValueError(f"images.npy holds {images.dtype} {images.shape}, expected {meta['count']} uint8 images")
    if any(meta.get(k) is not None and len(meta[k]) != n for k in ("labels", "captions", "variants")):
        raise ValueError("labels or captions do not match the number of images")
    return images, meta
