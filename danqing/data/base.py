"""What every module of ``danqing.data`` shares: its errors and where the cache lives.

The lowest module of the package (it imports nothing from danqing), so that the readers of built-in sets
(sources.py, mnist.py) and the downloaders (fetch.py, pictures.py, debian.py, emoji.py) can all raise the same
error without importing each other.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataError", "DataWarning", "cache_root"]


class DataError(ValueError):
    """The data source cannot be used; the message says what is wrong and what to do."""


class DataWarning(UserWarning):
    """Some files were skipped or some metadata was not used."""


def cache_root() -> Path:
    """``$DANQING_CACHE`` if set, else ``~/.cache/danqing``."""
    env = os.environ.get("DANQING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "danqing"
