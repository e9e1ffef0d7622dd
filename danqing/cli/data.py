"""danqing data | eval."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..config import DataConfig
from .common import UsageError

# ---------------------------------------------------------------- data

def cmd_data(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from ..data import describe, fetch, load_dataset, preview_grid

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    if args.action == "fetch":
        kw = {"force": args.force} | ({"sources": args.only.split(",")} if args.only else {})
        path = fetch(args.source, **kw)
        if path is not None:
            print(f"{args.source} is ready in {path}; train with --data {args.source}")
        return
    ds = load_dataset(DataConfig(source=args.source, size=args.size, channels=args.channels))
    if args.action == "info":
        from rich.console import Console
        from rich.table import Table
        info = describe(ds)
        t = Table(title=f"{args.source}", show_header=False)
        for k, v in info.items():
            t.add_row(str(k), str(v))
        Console().print(t)
    else:
        from ..images import save_image
        out = save_image(preview_grid(ds, args.n), args.output)
        print(f"wrote {out}")


# ---------------------------------------------------------------- eval

def cmd_eval(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from ..report import run
    run(args, extra)
