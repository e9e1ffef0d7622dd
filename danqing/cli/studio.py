"""danqing studio: serve the web studio (docs/studio.md)."""
from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from collections.abc import Sequence

from .common import UsageError

LOOPBACK_NAMES = ["127.0.0.1", "localhost"]


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


def cmd_studio(args: argparse.Namespace, extra: Sequence[str]) -> None:
    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    if not 1 <= args.queue <= 10_000:
        raise UsageError("--queue must be between 1 and 10000")
    if not 0 < args.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    try:
        import uvicorn

        from ..studio.server import create_app
    except ImportError as e:
        raise UsageError(f"the studio needs its extra dependencies ({e.name} is missing): "
                         "pip install 'danqing[studio]'") from None
    loopback = is_loopback(args.host)
    if not loopback:
        print(f"warning: serving on {args.host}, which other machines can reach: anyone who can connect can "
              "paint, read the history and upload files (there is no login). Use --host 127.0.0.1 to keep it "
              "private.", file=sys.stderr)
    app = create_app(args.data_dir, runs_dir=args.runs, queue_size=args.queue, decoder=args.decoder,
                     # on loopback, refuse other Host names: a web page elsewhere cannot rebind a name to us
                     allowed_hosts=[*LOOPBACK_NAMES, args.host] if loopback and ":" not in args.host else None)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"danqing studio on http://{shown}:{args.port}  (data: {args.data_dir}, runs: {args.runs})", file=sys.stderr)
    # open event streams would hold a shutdown forever: give them a few seconds, then close them
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning", timeout_graceful_shutdown=3)
