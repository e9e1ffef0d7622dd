"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it.

A reader sees the old file or the new one, never half of one, and a crash leaves no partial file behind.
Files get the permissions the umask gives (unlike ``tempfile.mkstemp``'s private 0600 ones): a painting or
a shared cache stays readable by whoever could read its folder.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def temp_beside(path: Path) -> Path:
    """A unique hidden name in ``path``'s folder, for a file that is renamed over ``path`` once complete."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (before a rename makes it visible)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | Path, content: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with open(tmp, "xb") as f:                  # O_EXCL, mode 0666 less the umask
            if isinstance(content, bytes | bytearray):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class UnwritableError(OSError):
    """A folder danqing was asked to write into cannot be written; the message says which and why."""


def check_writable(folder: str | Path, what: str = "the output folder") -> Path:
    """Make sure files can be created in ``folder`` before any work is done, so that a run or a painting does
    not fail at its end.  Nothing is left behind: the nearest folder that exists gets a probe file, removed at
    once.  Raises UnwritableError with one line naming the folder."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UnwritableError(f"cannot write to {what} {folder}: {existing} is a file, not a folder; "
                              "choose another one")
    try:
        probe = temp_beside(existing / "write-test")
        with open(probe, "xb"):
            pass
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UnwritableError(f"cannot write to {what} {folder}: {reason}; choose another one") from None
    return folder
