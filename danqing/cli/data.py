"""danqing data | eval."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..config import DataConfig
from .common import UsageError

SKIPPED_SHOWN = 20          # `data info` names this many skipped files, then says where the full list is

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
    policy: tuple[str, ...] = ()                   # preview --augment's transforms
    if args.action == "preview":                   # refused before the data is read
        from pathlib import Path

        from ..fileio import check_writable
        if args.n < 1:
            raise UsageError(f"-n must be at least 1, got {args.n}")
        if args.augment is not None:
            from ..nn.augment import parse_policy
            try:
                policy = parse_policy(args.augment)
            except ValueError as e:
                raise UsageError(f"--augment: {e}") from None
        check_writable(Path(args.output).parent, "the folder of -o")
    from ..data.pairs import describe_pairs, is_paired
    paired = is_paired(args.source)     # info and preview show side b of a paired source, info its pairing too
    ds = load_dataset(DataConfig(source=args.source, size=args.size, channels=args.channels,
                                 pair="b" if paired else ""))
    if args.action == "info":
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from ..data.skips import advice, listing
        info = describe(ds)
        if paired:
            info = {**describe_pairs(args.source), **info}
        t = Table(title=Text(args.source), show_header=False)
        for k, v in info.items():
            t.add_row(Text(str(k)), Text(str(v)))   # Text: file names with [brackets] are not markup
        console = Console()
        console.print(t)
        if ds.skipped:
            console.print(Text(f"skipped files ({sum(ds.skipped.values())}), relative to the folder:"))
            for line in listing(ds, SKIPPED_SHOWN) + [f"to do: {tip}" for tip in advice(sorted(ds.skipped))]:
                console.print(Text(f"  {line}"), soft_wrap=True)
    else:
        from ..images import save_image
        if args.augment is not None:
            out = save_image(_augmented(ds, args.n, policy, args.seed), args.output)
        else:
            out = save_image(preview_grid(ds, args.n), args.output)
        print(f"wrote {out}")


def _augmented(ds, n: int, policy: tuple[str, ...], seed: int):
    """The first n pictures as a GAN's discriminator sees them with ``policy`` (nn.augment), on a grid."""
    import numpy as np
    import torch

    from ..images import make_grid
    from ..nn.augment import augment
    with torch.random.fork_rng(devices=[]):                      # the caller's random state is left alone
        torch.manual_seed(seed)
        x = augment(ds.batch(np.arange(min(n, len(ds)))).images, policy, 1.0)
    return make_grid(x)


# ---------------------------------------------------------------- eval

def cmd_eval(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from ..report import run
    run(args, extra)
