"""danqing style: paint a photo (or a folder of them) in the style of one or more paintings."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .common import UsageError


def cmd_style(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from ..data.sources import scan_folder
    from ..style import StyleError, load_decoder, save, transfer
    from ..style.transfer import PictureError

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    weights = _weights(args.style_weights, len(args.style))
    content = Path(args.content)
    if not content.exists():
        raise UsageError(f"the content {content} does not exist; give a picture or a folder of pictures")
    if content.is_dir():
        found = scan_folder(content).images
        if not found:
            raise UsageError(f"{content} holds no pictures (.png, .jpg, .webp, ...)")
        out_dir = Path(args.output or "styled")
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"{content} is a folder, so -o must be a folder too; {out_dir} is a file")
        jobs = [(content / rel, out_dir / Path(rel).with_suffix(".png")) for rel in found]
    else:
        out = Path(args.output or "styled.png")
        if out.is_dir():
            out = out / f"{content.stem}.png"
        elif out.suffix.lower() != ".png":
            raise UsageError(f"-o {out}: the output is a PNG (its parameters ride in PNG text chunks); end it in .png")
        jobs = [(content, out)]
    from ..fileio import check_writable
    for folder in {dest.parent for _, dest in jobs}:             # before any picture is painted
        check_writable(folder, "the folder of -o")
    gatys_only = {"steps": args.steps, "content_weight": args.content_weight, "style_weight": args.style_weight,
                  "tv_weight": args.tv_weight}
    if args.method == "adain" and any(v is not None for v in gatys_only.values()):
        given = ", ".join("--" + k.replace("_", "-") for k, v in gatys_only.items() if v is not None)
        raise UsageError(f"{given} apply to --method gatys; adain trades content for style with --alpha")
    if args.method == "gatys" and args.alpha is not None:
        raise UsageError("--alpha applies to --method adain; for gatys use --style-weight / --content-weight")
    if args.method == "gatys" and args.decoder:
        raise UsageError("--decoder applies to --method adain")
    kw = {k: v for k, v in gatys_only.items() if v is not None and k != "steps"}
    try:
        decoder = load_decoder(args.decoder) if args.method == "adain" else None
        done = 0
        for src, dst in jobs:
            t0 = time.perf_counter()
            try:
                with _progress(args.quiet or args.method != "gatys") as cb:
                    img = transfer(src, args.style, method=args.method, style_weights=weights,
                                   alpha=1.0 if args.alpha is None else args.alpha, preserve_color=args.preserve_color,
                                   size=args.size, steps=args.steps, optimizer=args.optimizer, decoder=decoder,
                                   bf16=args.bf16, callback=cb, **kw)
            except PictureError as e:
                if len(jobs) == 1 or e.what != "content":
                    raise
                print(f"skipped {src}: {e}", file=sys.stderr)      # one bad picture does not stop a folder
                continue
            for note in img.info["params"].notes:
                print(f"note: {note}", file=sys.stderr)
            path = save(img, dst)
            done += 1
            print(f"{path}  ({img.width}x{img.height}, {args.method}, {time.perf_counter() - t0:.1f} s)")
    except StyleError as e:
        raise UsageError(str(e)) from None
    if not done:
        raise UsageError(f"none of the {len(jobs)} picture(s) in {content} could be stylised (see above)")


def _weights(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--style-weights {text!r}: give numbers separated by commas, e.g. 0.7,0.3") from None
    if len(values) != n:
        raise UsageError(f"--style-weights has {len(values)} value(s) but there are {n} --style image(s); "
                         "give one weight per --style, in the same order")
    if min(values) < 0 or sum(values) <= 0:
        raise UsageError(f"--style-weights must be non-negative and not all zero, got {text}")
    return values


class _progress:
    """A bar over Gatys' loss evaluations; yields the transfer callback (None when quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        if self.quiet:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        self.bar = Progress(TextColumn("scale {task.fields[scale]}"), BarColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), transient=True)
        self.task = self.bar.add_task("", total=None, scale="-")
        self.bar.start()

        def update(p) -> None:
            self.bar.update(self.task, description=f"eval {p.evaluation}: style {p.style:.3g}, content {p.content:.3g}",
                            scale=f"{p.scale + 1}/{p.scales} {p.size[1]}x{p.size[0]}")
        return update

    def __exit__(self, *exc):
        if not self.quiet:
            self.bar.stop()
