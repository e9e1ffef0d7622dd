"""``danqing data fetch emoji-sketch | emoji-styles``: paired sets with ground truth, made from the emoji set.

emoji-sketch   a = a line drawing of an emoji (sketch.py), b = the emoji on white; every style folder of the
               emoji set, pair names ``<style folder>/<key>``
emoji-styles   a = the fluent-flat picture of a subject, b = its fluent-3d picture, paired by key (codepoints);
               only subjects drawn in both

Both keep the emoji set's split: a pair is held out when either of its pictures is (emoji.py's SPLIT.md), so
the held-out sets measure subjects (and subject-style pairs) never trained on.  Output, under the cache root:
``sources/<name>/{train,heldout}/{A,B}/...png`` (the A/ + B/ layout of pairs.py) and LICENSES.md (the emoji
set's: the pictures are adaptations of those).  Built in a temporary folder and renamed into place, so an
interrupted build leaves the previous set, or none, never half of one.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .base import DataError
from .emoji import _swap_into_place, emoji_dir
from .pairs import pair_seed

__all__ = ["PAIRED_FETCHES", "build_paired", "fetch_paired"]

PAIRED_FETCHES = ("emoji-sketch", "emoji-styles")
STYLES_PAIR = ("fluent-flat", "fluent-3d")       # emoji-styles' a and b folders in the emoji set


def fetch_paired(name: str, root: Path, fetch_emoji: Callable[[Path], Path], *, force: bool = False) -> Path:
    """Build ``root/sources/<name>`` from the fetched emoji set (fetching that first, with ``fetch_emoji``, when
    it is missing)."""
    target = root / "sources" / name
    emoji = emoji_dir(root)
    if not force and (target / "LICENSES.md").is_file():
        print(f"{name} is already in {target}; to build it again, fetch with --force", file=sys.stderr)
        built, source = (target / "LICENSES.md").stat().st_mtime, emoji / "licenses.json"
        if source.is_file() and source.stat().st_mtime > built:
            print(f"{name} was made from an older build of the emoji set than the one in {emoji}: fetch "
                  f"{name} again with --force", file=sys.stderr)
        return target
    if not (emoji / "licenses.json").is_file():
        print(f"{name} is made from the emoji set, which is not fetched yet: fetching it first "
              "(`danqing data fetch emoji`)", file=sys.stderr)
        fetch_emoji(root)
    start = time.monotonic()
    counts = build_paired(name, emoji, target)
    print(f"{name}: wrote {target} in {time.monotonic() - start:.0f} s ({counts['train']} training pairs, "
          f"{counts['heldout']} held out)", file=sys.stderr)
    return target


def build_paired(name: str, emoji: Path, target: Path) -> dict[str, int]:
    """Write the paired set ``name`` made from the emoji folder ``emoji`` (its train/ and heldout/) to
    ``target``, atomically; returns the number of pairs per split."""
    if name not in PAIRED_FETCHES:
        raise DataError(f"unknown paired set {name!r}; choose from {', '.join(PAIRED_FETCHES)}")
    pictures = {split: {rel.as_posix(): emoji / split / rel for rel in _pngs(emoji / split)}
                for split in ("train", "heldout")}
    if name == "emoji-sketch":
        plan = {split: [(rel[:-4], path, path) for rel, path in sorted(found.items())]
                for split, found in pictures.items()}
    else:
        plan = _styles_plan(pictures, emoji)
    if not any(plan.values()):
        raise DataError(f"the emoji set in {emoji} holds no pictures; run `danqing data fetch emoji --force`")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        # Processes, not threads: Canny and skeletonize hold the GIL, and 17,000 sketches take minutes on one core.
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            for split, items in plan.items():
                for side in "AB":
                    (tmp / split / side).mkdir(parents=True)
                list(pool.map(partial(_write_pair, name, folder=tmp / split), items, chunksize=64))
        if (emoji / "LICENSES.md").is_file():
            shutil.copyfile(emoji / "LICENSES.md", tmp / "LICENSES.md")
        else:
            (tmp / "LICENSES.md").write_text("Adapted from the emoji set's pictures; see its LICENSES.md.\n")
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {split: len(items) for split, items in plan.items()}


def _pngs(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.glob("*/*.png")) if folder.is_dir() else []


def _styles_plan(pictures: dict[str, dict[str, Path]], emoji: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """emoji-styles: (key, flat picture, 3d picture) per split; held out when either picture is."""
    a, b = STYLES_PAIR
    where: dict[tuple[str, str], tuple[str, Path]] = {}
    for split, found in pictures.items():
        for rel, path in found.items():
            folder, _, file = rel.partition("/")
            if folder in STYLES_PAIR:
                where[folder, file[:-4]] = (split, path)
    missing = [s for s in STYLES_PAIR if not any(f == s for f, _ in where)]
    if missing:
        raise DataError(f"the emoji set in {emoji} has no {' or '.join(missing)} pictures (a tool was missing when "
                        "it was fetched); fix that and run `danqing data fetch emoji --force`")
    plan: dict[str, list[tuple[str, Path, Path]]] = {"train": [], "heldout": []}
    for key in sorted({k for f, k in where if f == a} & {k for f, k in where if f == b}):
        (split_a, path_a), (split_b, path_b) = where[a, key], where[b, key]
        plan["heldout" if "heldout" in (split_a, split_b) else "train"].append((key, path_a, path_b))
    return plan


def _write_pair(name: str, item: tuple[str, Path, Path], *, folder: Path) -> None:
    pair, a_path, b_path = item
    for side in "AB":
        (folder / side / pair).parent.mkdir(parents=True, exist_ok=True)
    if name == "emoji-sketch":
        from .sketch import sketch
        with Image.open(a_path) as img:
            drawing = sketch(img, pair_seed(pair))
        Image.fromarray(np.asarray(drawing)).save(folder / "A" / f"{pair}.png")
    else:
        shutil.copyfile(a_path, folder / "A" / f"{pair}.png")
    shutil.copyfile(b_path, folder / "B" / f"{pair}.png")
