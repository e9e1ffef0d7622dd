"""danqing studio: serve the web studio (docs/studio.md)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Sequence

from .common import UsageError

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]
TOKEN_ENV = "DANQING_STUDIO_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def studio_token(args: argparse.Namespace) -> str | None:
    """``--token``, else $DANQING_STUDIO_TOKEN; checked for a usable shape."""
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is not None and not re.fullmatch(r"[\x21-\x7e]{8,}", token):
        raise UsageError("--token must be 8 or more visible ASCII characters without spaces, e.g. the output of "
                         "python -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


def cmd_studio(args: argparse.Namespace, extra: Sequence[str]) -> None:
    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    token = studio_token(args)
    if not 1 <= args.queue <= 10_000:
        raise UsageError("--queue must be between 1 and 10000")
    if not 0 < args.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    from ..fileio import check_writable
    check_writable(args.data_dir, "the studio's --data-dir")
    try:
        import uvicorn

        from ..studio.server import create_app
    except ImportError as e:
        raise UsageError(f"the studio needs its extra dependencies ({e.name} is missing): "
                         "pip install 'danqing[studio]'") from None
    loopback = is_loopback(args.host)
    if not loopback and token is None:
        raise UsageError(f"serving on {args.host} lets other machines use the studio: pass --token TOKEN (or set "
                         f"{TOKEN_ENV}) so that only those who have it can, or keep --host 127.0.0.1")
    shown = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    if not loopback:
        print(f"warning: serving on {args.host} over plain HTTP: the token and the pictures cross the network "
              "unencrypted; put an HTTPS proxy in front of it beyond a network you trust", file=sys.stderr)
    app = create_app(args.data_dir, runs_dir=args.runs, queue_size=args.queue, decoder=args.decoder, token=token,
                     # on loopback, refuse other Host names (port included): a web page elsewhere cannot rebind
                     # its name to us.  Beyond loopback the machine's names are unknown; the token guards it there.
                     allowed_hosts=[f"{h}:{args.port}" for h in {*LOOPBACK_NAMES, shown}] if loopback else None)
    print(f"danqing studio on http://{shown}:{args.port}/  (data: {args.data_dir}, runs: {args.runs})"
          + (f"; it needs its token: open http://{shown}:{args.port}/?token=TOKEN once" if token else ""),
          file=sys.stderr)
    # open event streams would hold a shutdown forever: give them a few seconds, then close them
    uvicorn.run(app, host=args.host.strip("[]"), port=args.port, workers=1, log_level="warning", timeout_graceful_shutdown=3)
