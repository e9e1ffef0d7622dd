"""danqing sample | paint."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import UsageError

# ---------------------------------------------------------------- options

def add_option_flags(parser: argparse.ArgumentParser, translating: bool = False) -> None:
    """A flag for every option of every family's Options (``--steps``, ``--guidance`` ...): a new family's knobs
    appear here without editing the CLI.  Whether the chosen model has an option is checked when it is loaded.
    ``translating``: the options of the families that translate pictures, else of those that paint from noise."""
    from ..families import specs
    from ..options import OptionInfo, describe
    from ..protocol import Generates, Translates

    found: dict[str, tuple[OptionInfo, list[str]]] = {}
    for fam in specs().values():
        if not fam.paints or (translating != (fam.can(Translates) and not fam.can(Generates))):
            continue
        for info in describe(fam.Options):
            found.setdefault(info.name, (info, []))[1].append(fam.name)
    kinds = {"int": int, "float": float, "str": str, "bool": _yes_no}
    for name, (info, families) in found.items():
        choices = f": {', '.join(info.choices)}" if info.choices else ""
        bounds = [f"at least {info.min:g}" if info.min is not None else "",
                  f"above {info.above:g}" if info.above is not None else "",
                  f"at most {info.max:g}" if info.max is not None else ""]
        span = (f", {info.min:g} to {info.max:g}" if info.min is not None and info.max is not None else
                "".join(f", {b}" for b in bounds if b))
        default = "the model's" if info.default is None else f"{info.default:g}" \
            if isinstance(info.default, float) else str(info.default)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", type=kinds[info.type],
                            metavar=info.type.upper() if not info.choices else "NAME",
                            help=f"{info.help}{choices}{span}; default: {default} "
                                 f"({', '.join(sorted(set(families)))})")


def _yes_no(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def chosen_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, by name."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}


# ---------------------------------------------------------------- sample

def cmd_sample(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from ..fileio import check_writable
    from ..generate import Request
    from ..hardware import use_bf16
    from ..images import save_grid
    from ..pipeline import load

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    if args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    check_writable(Path(args.output).parent, "the folder of -o")
    pipe = load(args.checkpoint)                   # a Pipeline: its painter has the model's text encoder
    painter, cfg = pipe.painter, pipe.config
    painter.check_count(args.n)                    # before the seeds and labels of n pictures are listed
    labels = None
    if args.cls is not None:
        names = painter.class_names
        if not names:
            raise UsageError(f"--class needs a class-conditional model; {args.checkpoint} is unconditional")
        if args.cls in names:
            c = names.index(args.cls)
        elif args.cls.isdigit() and int(args.cls) < len(names):
            c = int(args.cls)
        else:
            raise UsageError(f"unknown class {args.cls!r}; this model knows: {', '.join(names)}")
        labels = [c] * args.n
    elif painter.class_names:
        labels = [i % len(painter.class_names) for i in range(args.n)]     # one of each class, in turn
    bf16 = use_bf16(args.bf16, painter.device)
    if args.toward is not None and args.latent is None:
        raise UsageError("--toward moves a projected picture towards a seed's: give the picture with --latent")
    if args.latent is not None:
        pictures = _from_latent(painter, args, cfg["family"], None if args.cls is None else labels, bf16)
        path = save_grid(pictures, args.output, nrow=args.nrow or len(pictures))         # a strip
        print(f"wrote {path} ({args.latent}" + ("" if args.toward is None else f" to seed {args.toward} in "
                                                 f"{args.n} steps") + ")")
        return
    if args.mix_grid is not None:
        rows, cols = _seed_lists(args.mix_grid)
        path = save_grid(_mix_sheet(painter, rows, cols, labels, chosen_options(args), bf16), args.output,
                         nrow=len(cols) + 1)
        print(f"wrote {path} (rows: seeds {rows}; columns: seeds {cols}; each row seed with the "
              f"{chosen_options(args).get('mix_layers', 'fine')} styles of each column seed)")
        return
    seeds = list(range(args.seed, args.seed + args.n))
    images = painter(Request(seeds, labels=labels, options=chosen_options(args)), bf16=bf16,
                     batch_size=args.batch_size)
    path = save_grid(images, args.output, nrow=args.nrow)
    print(f"wrote {path} ({args.n} images, seeds {seeds[0]}..{seeds[-1]})")


def _from_latent(painter, args: argparse.Namespace, family: str, labels: list[int] | None, bf16: bool):
    """The pictures of a latent file: as projected (with the options given), or -n of them moving to --toward's."""
    from ..generate import Request
    from ..projection import ProjectionError, load_latent

    try:
        latent, about = load_latent(args.latent)
    except ProjectionError as e:
        raise UsageError(str(e)) from None
    if about.get("family") != family:
        raise UsageError(f"{args.latent} was projected with a {about.get('family')} model; {args.checkpoint} is a "
                         f"{family} model: paint it with the model it was projected with ({about.get('model')})")
    rows = len(next(iter(latent.values())))
    n = rows if args.toward is None else args.n
    if args.toward is not None and rows != 1:
        raise UsageError(f"{args.latent} holds {rows} pictures; --toward moves one")
    prompt = about.get("prompt") or None
    req = Request([args.seed] * n, prompts=None if labels is not None or prompt is None else [prompt] * n,
                  labels=None if labels is None else labels[:1] * n, options=chosen_options(args), latent=latent)
    if args.toward is not None:
        req.variation_seeds, req.variation_strengths = [args.toward] * n, [k / max(1, n - 1) for k in range(n)]
    return painter(req, bf16=bf16)


def _seed_lists(text: str) -> tuple[list[int], list[int]]:
    """"1,2,3/7,8" -> ([1, 2, 3], [7, 8])."""
    try:
        rows, cols = ([int(v) for v in part.split(",") if v.strip()] for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--mix-grid {text!r}: give the row seeds and the column seeds, e.g. 1,2,3/7,8,9") from None
    if not rows or not cols or len(rows) * len(cols) > 256 or min(rows + cols) < 0:
        raise UsageError("--mix-grid: 1 to 256 cells of seeds 0 and up, e.g. 1,2,3/7,8,9")
    return rows, cols


def _mix_sheet(painter, rows: list[int], cols: list[int], labels: list[int] | None, options: dict[str, Any],
               bf16: bool):
    """(rows + 1) x (cols + 1) pictures: a blank corner, the column seeds' own pictures along the top, and each
    row: the row seed's own picture, then the row seed mixed with each column seed (the ``mix_seed`` option)."""
    import torch

    from ..generate import Request

    def row_labels(seeds: list[int], i: int) -> list[int] | None:
        return None if labels is None else [labels[i % len(labels)]] * len(seeds)
    plain = {k: v for k, v in options.items() if k != "mix_seed"}
    top = painter(Request(cols, labels=None if labels is None else [labels[0]] * len(cols), options=plain), bf16=bf16)
    out = [torch.ones_like(top[:1]), top]
    for i, seed in enumerate(rows):
        out.append(painter(Request([seed], labels=row_labels([seed], i), options=plain), bf16=bf16))
        out += [painter(Request([seed], labels=row_labels([seed], i), options={**plain, "mix_seed": c}), bf16=bf16)
                for c in cols]
    return torch.cat(out)


# ---------------------------------------------------------------- paint

def cmd_paint(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import numpy as np
    from PIL import Image

    from ..fileio import check_writable
    from ..pipeline import PipelineError, load, next_paths, precheck, read_parameters

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")

    def open_image(path: str | None, what: str):
        if path is None:
            return None
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (OSError, ValueError) as e:
            raise PipelineError(f"cannot read the {what} {path}: {e}") from None

    init, mask = open_image(args.init, "init image"), open_image(args.mask, "mask")
    if mask is not None and init is None:
        raise UsageError("--mask paints into an image: give it with --init")
    check_writable(args.output)                    # before painting, not after
    params = read_parameters(args.source) if args.source else None
    model = args.model if args.model else (params.model if params and params.model else "emoji")
    if params is None:                             # what can be refused is refused before the weights load
        precheck(model, n=args.n, best_of=args.best_of, size=args.size, options=chosen_options(args))
    pipe = load(model, **({"scorer": args.scorer} if args.scorer else {}))
    with _step_bar(quiet=args.quiet) as cb:
        if params is not None:
            images = [pipe.regenerate(params, init, mask, callback=cb)]
        else:
            images = pipe(args.prompt or "", args.negative, args.n, seed=args.seed, size=args.size, init_image=init,
                          mask=mask, bf16=args.bf16, best_of=args.best_of, callback=cb, **chosen_options(args))
    for img, path in zip(images, next_paths(args.output, len(images))):
        pipe.save(img, path)
        score = img.info["params"].score
        print(path if score is None or params is not None else f"{path}  (prompt score {score:.3f}, best of "
                                                                f"{args.best_of})")
    if params is not None:
        with Image.open(args.source) as orig:
            a, b = np.asarray(orig.convert("RGB"), np.int16), np.asarray(images[0].convert("RGB"), np.int16)
        same = a.shape == b.shape and not np.abs(a - b).any()
        print("identical to the original pixels" if same else
              f"differs from the original (max difference {np.abs(a - b).max() if a.shape == b.shape else 'size'}): "
              "a different machine, torch build or precision gives slightly different numbers", file=sys.stderr)


class _step_bar:
    """A progress bar over denoising steps (its length comes with the first step); yields the sampler callback."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        if self.quiet:
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        self.bar = Progress(TextColumn("painting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            transient=True)
        self.task = self.bar.add_task("paint", total=None)
        self.bar.start()
        return lambda i, n, x, denoised: self.bar.update(self.task, completed=i + 1, total=n)

    def __exit__(self, *exc):
        if not self.quiet:
            self.bar.stop()
