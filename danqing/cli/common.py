"""What every command shares: the usage error the CLI prints as one line."""
from __future__ import annotations


class UsageError(Exception):
    pass
