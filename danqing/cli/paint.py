"""danqing sample | paint."""
from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

from .common import UsageError

# ---------------------------------------------------------------- sample

def cmd_sample(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import torch

    from ..checkpoint import load
    from ..hardware import use_bf16
    from ..images import save_grid
    from ..protocol import Cond, generators

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    if args.n < 1:
        raise UsageError("-n must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    model, cfg = load(args.checkpoint)
    accepts = inspect.signature(model.sample).parameters
    for opt in ("sampler", "steps", "guidance"):
        if getattr(args, opt) is not None and opt not in accepts:
            raise UsageError(f"--{opt} does not apply to a {cfg['family']} model")
    if args.sampler is not None:
        from ..sampling import SAMPLERS
        if args.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be at least 1")
    cond = None
    num_classes = getattr(model.config, "num_classes", 0)
    if args.cls is not None:
        names = cfg.get("class_names") or [str(i) for i in range(num_classes)]
        if not num_classes:
            raise UsageError(f"--class needs a class-conditional model; {args.checkpoint} is unconditional")
        if args.cls in names:
            c = names.index(args.cls)
        elif args.cls.isdigit() and int(args.cls) < num_classes:
            c = int(args.cls)
        else:
            raise UsageError(f"unknown class {args.cls!r}; this model knows: {', '.join(names)}")
        cond = Cond(labels=torch.full((args.n,), c, dtype=torch.long))
    elif num_classes:
        cond = Cond(labels=torch.arange(args.n) % num_classes)     # one of each class, in turn
    kw = {k: getattr(args, k) for k in ("sampler", "steps", "guidance") if getattr(args, k) is not None}
    seeds = list(range(args.seed, args.seed + args.n))
    chunks = []
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(args.bf16, device)):
        for i in range(0, args.n, args.batch_size):
            sl = slice(i, i + args.batch_size)
            sub = None if cond is None else Cond(labels=cond.labels[sl])
            chunks.append(model.sample(len(seeds[sl]), sub, generator=generators(seeds[sl]), **kw))
    path = save_grid(torch.cat(chunks), args.output, nrow=args.nrow)
    print(f"wrote {path} ({args.n} images, seeds {seeds[0]}..{seeds[-1]})")


# ---------------------------------------------------------------- paint

def cmd_paint(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import numpy as np
    from PIL import Image

    from ..pipeline import PipelineError, load, next_paths, read_parameters

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
    params = read_parameters(args.source) if args.source else None
    pipe = load(args.model if args.model else (params.model if params and params.model else "emoji"),
                **({"scorer": args.scorer} if args.scorer else {}))
    with _step_bar(args.steps or (params.steps if params else pipe.model.config.steps), quiet=args.quiet) as cb:
        if params is not None:
            images = [pipe.regenerate(params, init, mask, callback=cb)]
        else:
            images = pipe(args.prompt or "", args.negative, args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
                          sampler=args.sampler, size=args.size, init_image=init, strength=args.strength, mask=mask,
                          bf16=args.bf16, best_of=args.best_of, callback=cb)
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
    """A progress bar over denoising steps; yields the sampler callback."""

    def __init__(self, steps: int, quiet: bool):
        self.steps, self.quiet = steps, quiet

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
        self.task = self.bar.add_task("paint", total=self.steps)
        self.bar.start()
        return lambda i, n, x, denoised: self.bar.update(self.task, completed=i + 1, total=n)

    def __exit__(self, *exc):
        if not self.quiet:
            self.bar.stop()
