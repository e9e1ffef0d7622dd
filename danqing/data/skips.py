"""The files a data set could not use, by name: the warning, the list ``danqing data info`` prints, ``skipped.txt``.

A build records every skipped file as (relative path, reason, detail).  The cache keeps the first
``MAX_LISTED`` in ``meta.json`` (read on every load) and all of them in ``skipped.tsv`` beside it, so a folder
with a million broken files neither bloats every load nor loses a name.
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from .base import DataWarning
from .transforms import SVG_ADVICE

__all__ = ["LIST_FILE", "MAX_LISTED", "advice", "counts", "listing", "named", "printable", "report", "tsv_line", "warn_once",
           "write_skipped"]

MAX_LISTED = 1000           # names kept in meta.json; skipped.tsv holds all
LIST_FILE = "skipped.tsv"   # in the cache folder: path <TAB> reason <TAB> detail, one file a line
_NAMED = 5                  # a warning names the files when it skips at most this many

# What to do about each reason; reasons without an action the user can take have none.
_ADVICE = {
    "unsupported format (svg)": SVG_ADVICE,
    "too many pixels": "shrink them, or raise --data.max_pixels to use them",
    "truncated": "copy or download them again (the copy was cut short)",
    "empty file": "copy them again (they hold 0 bytes)",
    "not an image": "check what they hold (a web page or text saved under a picture's name?); "
                    "re-save real pictures as PNG or JPEG",
    "could not decode": "re-save them as PNG or JPEG",
    "unsupported pixel format": "save them as 8- or 16-bit pictures",
    "unreadable": "check their permissions",
    "unreadable folder": "check the folders' permissions",
}

Entry = Sequence[str]       # (relative path, reason, detail)


class HasSkips(Protocol):
    """What of sources.ImageDataset this module reads (sources imports this module, not the other way)."""
    skipped: dict[str, int]
    skipped_files: list[list[str]]
    skipped_list: Path | None
    source: str

    def __len__(self) -> int: ...


def advice(reasons: Iterable[str]) -> list[str]:
    """One line of advice per reason that has one, in the order given."""
    return [f"{why}: {_ADVICE[why]}" for why in dict.fromkeys(reasons) if why in _ADVICE]


def counts(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))


def named(entries: Sequence[Entry], total: int, at_most: int = _NAMED) -> str:
    """'a.png (empty file), b.png (not an image)', or '' when ``total`` is over ``at_most``."""
    return ", ".join(f"{e[0]} ({e[1]})" for e in entries) if len(entries) >= total and total <= at_most else ""


def report(ds: HasSkips) -> str:
    """The warning for a data set that skipped files (``""`` when it skipped none)."""
    if not ds.skipped:
        return ""
    total = sum(ds.skipped.values())
    names = named(ds.skipped_files, total)
    where = names or f"{counts(ds.skipped)}; `danqing data info` names them" + (
        f", and {ds.skipped_list} lists them all" if ds.skipped_list else "")
    tips = "".join(f"; {line}" for line in advice(sorted(ds.skipped)))
    return f"skipped {total} of {total + len(ds)} image files in {ds.source}: {where}{tips}"


def warn_once(text: str, stacklevel: int = 2) -> None:
    """Warn ``text`` as a DataWarning, but only once per process where the filters would show it by default.

    One run reads a data set more than once (the CLI to count its classes, the trainer to train on it), and
    each read would repeat the same words.  Python's own "default" and "once" actions do not stop that: they
    remember per calling module, and forget whenever any code changes the filters.  A filter that asks for
    every warning ("always", "error": -W, PYTHONWARNINGS, pytest.warns) still gets every one.
    """
    frame = sys._getframe(stacklevel)
    where = (frame.f_globals.get("__name__", ""), frame.f_lineno)
    if text in _shown and _action(text, *where) in ("default", "module", "once"):
        return
    _shown.add(text)
    warnings.warn(text, DataWarning, stacklevel=stacklevel + 1)


_shown: set[str] = set()


def _action(text: str, module: str, lineno: int) -> str:
    """What the warning filters do with a DataWarning ``text`` raised from ``module`` line ``lineno``."""
    for action, message, category, mod, line in warnings.filters:
        if (issubclass(DataWarning, category) and (message is None or message.match(text))
                and (mod is None or mod.match(module)) and line in (0, lineno)):
            return action
    return getattr(warnings, "defaultaction", "default")


def listing(ds: HasSkips, limit: int | None = 20) -> list[str]:
    """One line per skipped file ('path: reason (detail)'), the first ``limit``, then where the rest are."""
    total = sum(ds.skipped.values())
    shown = list(ds.skipped_files)[:limit]
    lines = [f"{e[0]}: {e[1]}" + (f" ({e[2]})" if len(e) > 2 and e[2] else "") for e in shown]
    if total > len(shown):
        rest = f"... and {total - len(shown)} more"
        lines.append(f"{rest}; all {total} are in {ds.skipped_list}" if ds.skipped_list else rest)
    return lines


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot write (file names that are not UTF-8) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def tsv_line(entry: Entry) -> str:
    # Tabs and line breaks in a file name would break the columns; names are shown, not parsed back.
    return "\t".join(" ".join(str(part).split("\n")).replace("\t", " ").replace("\r", " ") for part in entry) + "\n"


def write_skipped(ds: HasSkips, folder: str | Path, name: str = "skipped.txt") -> Path | None:
    """Write every file ``ds`` skipped to ``folder/name`` (a header line, then path <TAB> reason <TAB> detail);
    returns the path, or None when nothing was skipped (an old list there is removed: it would mislead)."""
    from ..fileio import atomic_write

    path = Path(folder) / name
    if not ds.skipped:
        path.unlink(missing_ok=True)
        return None
    total = sum(ds.skipped.values())
    head = (f"# {total} of {total + len(ds)} image files in {ds.source} were skipped ({counts(ds.skipped)}); "
            "one a line: path (relative to the folder) <TAB> reason <TAB> detail\n")
    head += "".join(f"# {line}\n" for line in advice(sorted(ds.skipped)))
    full = ds.skipped_list if ds.skipped_list and ds.skipped_list.is_file() else None
    if full is not None:
        body = full.read_text(encoding="utf-8")
    else:
        body = "".join(tsv_line(e) for e in ds.skipped_files)
        if total > len(ds.skipped_files):
            body += f"# ... and {total - len(ds.skipped_files)} more, not recorded\n"
    return atomic_write(path, (head + body).encode("utf-8"))
