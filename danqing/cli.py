"""The ``danqing`` command: one subcommand per verb.

    danqing train FAMILY --data SRC --preset P [--steps N] [--out DIR] [--resume] [--model.x=..]
    danqing sample CKPT -n 64 --seed S [--sampler heun] [--steps K] [--guidance G] [--class C] -o grid.png
    danqing data info|preview|fetch SRC
    danqing models

Every user mistake ends in one line on stderr saying what was wrong and what
to do, with exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Sequence

from .config import ConfigError, DataConfig, TrainConfig, override


class UsageError(Exception):
    pass


def _split_overrides(extra: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--model.channels=64`` / ``--train.lr 1e-3`` -> {"model": {"channels": "64"}, ...}."""
    out: dict[str, dict[str, str]] = {"model": {}, "train": {}, "data": {}}
    it = iter(extra)
    for tok in it:
        if not tok.startswith("--") or "." not in tok.split("=")[0]:
            raise UsageError(f"unrecognised argument {tok!r}; settings look like --model.NAME=VALUE, "
                             "--train.NAME=VALUE or --data.NAME=VALUE")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            value = next(it, None)
            if value is None:
                raise UsageError(f"--{key} needs a value, e.g. --{key}=VALUE")
        group, _, name = key.partition(".")
        if group not in out:
            raise UsageError(f"unknown setting group in --{key}; use --model.*, --train.* or --data.*")
        out[group][name] = value
    return out


# ---------------------------------------------------------------- train

def cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from .data import load_dataset
    from .families import FAMILIES
    from .train import Run, train

    fam = FAMILIES[args.family]
    if args.preset not in fam.PRESETS:
        raise UsageError(f"{args.family} has no preset {args.preset!r}; choose one of {', '.join(fam.PRESETS)}")
    ov = _split_overrides(extra)
    model_cfg = override(fam.PRESETS[args.preset], ov["model"], prefix="model.")

    flags = {"steps": args.steps, "batch_size": args.batch_size, "bf16": args.bf16, "seed": args.seed,
             "time_limit": args.minutes}
    train_cfg = dataclasses.replace(TrainConfig(), **getattr(fam, "TRAIN_DEFAULTS", {}))
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in flags.items() if v is not None})
    train_cfg = override(train_cfg, ov["train"], prefix="train.")
    for k in ("size", "channels"):
        if k in ov["data"]:
            raise UsageError(f"--data.{k} follows the model; set --model.image_{k} instead")
    data_cfg = override(DataConfig(source=args.data, size=model_cfg.image_size, channels=model_cfg.image_channels,
                                   flip=args.flip), ov["data"], prefix="data.")

    if hasattr(model_cfg, "num_classes") and "num_classes" not in ov["model"] and not getattr(model_cfg, "text_dim", 0):
        ds = load_dataset(data_cfg, progress=not args.quiet)
        n = len(ds.class_names) if ds.labels is not None else 0
        if n != model_cfg.num_classes:
            print(f"note: {args.data} has {n or 'no'} classes; training with --model.num_classes={n} "
                  f"(the preset had {model_cfg.num_classes})", file=sys.stderr)
            model_cfg = dataclasses.replace(model_cfg, num_classes=n)

    init_from = {}
    if getattr(model_cfg, "ae", None) is not None:     # latent diffusion: start from a trained autoencoder
        model_cfg, init_from = _with_autoencoder(model_cfg, args.autoencoder, args.family)
    elif args.autoencoder:
        raise UsageError(f"--autoencoder applies to latent models; {args.family}:{args.preset} works in pixels")
    if args.init:                                       # fine-tune, or continue from exported weights
        init_from = {**init_from, "": args.init}

    out = Path(args.out or f"runs/{args.family}-{args.preset}-{Path(args.data).name}")
    last = train(Run(args.family, model_cfg, data_cfg, train_cfg, args.preset, init_from), out, resume=args.resume,
                 device=args.device, progress=not args.quiet)
    print(f"checkpoint: {last}")
    grids = sorted((out / "samples").glob("*.png"))
    if grids:
        print(f"samples:    {grids[-1]}")


def _with_autoencoder(model_cfg, path: str | None, family: str):
    """Put a trained autoencoder's config (with its measured latent scale) into a latent model's config."""
    from .checkpoint import read_config, resolve
    from .families import autoencoder

    if not path:
        raise UsageError(f"{family} works in an autoencoder's latent space: give --autoencoder RUN_OR_CHECKPOINT "
                         "(train one first: danqing train autoencoder --preset emoji --data emoji)")
    cfg = read_config(path)
    if cfg.get("family") != "autoencoder":
        raise UsageError(f"--autoencoder {path} is a {cfg.get('family')} checkpoint, not an autoencoder")
    from .config import from_dict
    ae = from_dict(autoencoder.Config, cfg["model"])
    if not ae.latent_scale:
        raise UsageError(f"--autoencoder {path} has no measured latent scale; resume its training for a step "
                         "to write a checkpoint that has it")
    if ae.image_size != model_cfg.image_size:
        raise UsageError(f"--autoencoder {path} was trained at {ae.image_size}px but the model paints at "
                         f"{model_cfg.image_size}px")
    return dataclasses.replace(model_cfg, ae=ae), {"ae": str(resolve(path))}


# ---------------------------------------------------------------- sample

def cmd_sample(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import torch

    from .checkpoint import load
    from .hardware import use_bf16
    from .images import save_grid
    from .protocol import Cond, generators

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
        from .sampling import SAMPLERS
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

    from .pipeline import PipelineError, load, next_paths, read_parameters

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


# ---------------------------------------------------------------- export

def cmd_export(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import torch

    from .checkpoint import export

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    out = export(args.checkpoint, args.output, dtype=None if args.fp32 else torch.float16)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB, {'fp32' if args.fp32 else 'fp16'} EMA weights, no training state)")


# ---------------------------------------------------------------- data

def cmd_data(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from .data import describe, fetch, load_dataset, preview_grid

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
        from .images import save_image
        out = save_image(preview_grid(ds, args.n), args.output)
        print(f"wrote {out}")


# ---------------------------------------------------------------- eval

def cmd_eval(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from .report import run
    run(args, extra)


# ---------------------------------------------------------------- models

def cmd_models(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from .families import FAMILIES

    t = Table(title="families and presets (danqing train FAMILY --preset P)")
    for col in ("family", "preset", "params", "image", "classes", "phases"):
        t.add_column(col)
    for name, fam in FAMILIES.items():
        for preset, c in fam.PRESETS.items():
            m = fam.Model(c)
            t.add_row(name, preset, f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f}M",
                      f"{c.image_size}x{c.image_size}x{c.image_channels}", str(getattr(c, "num_classes", 0) or "-"),
                      ",".join(p.name for p in m.phases()))
    Console().print(t)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from .families import FAMILIES
    from .sampling import SAMPLERS

    p = argparse.ArgumentParser(prog="danqing", description="danqing: AI painting under one protocol")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on a folder of images or a built-in dataset",
                       description="Extra settings: --model.NAME=VALUE, --train.NAME=VALUE, --data.NAME=VALUE "
                                   "(see `danqing models` and docs/ARCHITECTURE.md).")
    t.add_argument("family", choices=list(FAMILIES), help="model family")
    t.add_argument("--data", required=True, help="a folder of images or a built-in source (digits, mnist)")
    t.add_argument("--preset", default="small", help="model size preset (see `danqing models`)")
    t.add_argument("--steps", type=int, help="training steps")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    t.add_argument("--out", help="run folder (default runs/FAMILY-PRESET-DATA)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--bf16", choices=["auto", "on", "off"], help="bf16 autocast (auto: only where the hardware runs it natively)")
    t.add_argument("--seed", type=int)
    t.add_argument("--flip", action="store_true", help="random horizontal flips")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--autoencoder", help="latent models: the trained autoencoder (run or checkpoint folder)")
    t.add_argument("--init", help="start from the weights of this checkpoint (same model settings), "
                                  "with a fresh optimiser: fine-tuning, or continuing an exported model")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="draw pictures from a trained model")
    s.add_argument("checkpoint", help="a run folder or a checkpoint folder")
    s.add_argument("-n", type=int, default=64, help="number of images")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i")
    s.add_argument("--sampler", help=f"diffusion sampler: {', '.join(SAMPLERS)}")
    s.add_argument("--steps", type=int, help="sampler steps")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = off)")
    s.add_argument("--class", dest="cls", help="class name or id (default: cycle through the classes)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast (auto: where the hardware runs it natively; off: the fp32 reference)")
    s.add_argument("--nrow", type=int, help="images per row of the grid")
    s.add_argument("-o", "--output", default="samples.png")
    s.set_defaults(fn=cmd_sample)

    pt = sub.add_parser("paint", help="paint pictures from a text prompt (the bundled model by default)")
    pt.add_argument("prompt", nargs="?", help='what to paint, e.g. "a fox face, 3d style"')
    pt.add_argument("-n", type=int, default=4, help="number of pictures (1-16)")
    pt.add_argument("--seed", type=int, help="picture i uses seed SEED+i (default: random)")
    pt.add_argument("--steps", type=int, help="denoising steps (1-200)")
    pt.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = off)")
    pt.add_argument("--negative", default="", help="negative prompt: what the picture should not be")
    pt.add_argument("--sampler", help=f"{', '.join(SAMPLERS)}")
    pt.add_argument("--size", type=int, help="picture side in pixels (a multiple of the model's stride)")
    pt.add_argument("--init", help="image-to-image: start from this picture")
    pt.add_argument("--strength", type=float, default=0.6, help="image-to-image: how much to change (0-1]")
    pt.add_argument("--mask", help="inpainting: white = repaint, black = keep (needs --init)")
    pt.add_argument("--model", help="a bundled model name or a run/checkpoint folder (default: emoji)")
    pt.add_argument("--from", dest="source", help="repaint the picture whose parameters this PNG carries")
    pt.add_argument("--best-of", type=int, default=1, metavar="N",
                    help="paint N candidates per picture and keep the one the prompt-consistency scorer rates best")
    pt.add_argument("--scorer", help="the scorer for --best-of: a run/checkpoint folder (default: the bundled one)")
    pt.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    pt.add_argument("-o", "--output", default="paintings", help="folder for numbered PNGs")
    pt.add_argument("-q", "--quiet", action="store_true")
    pt.set_defaults(fn=cmd_paint)

    e = sub.add_parser("export", help="write a weights-only copy of a checkpoint (EMA, fp16) for shipping")
    e.add_argument("checkpoint", help="a run folder or a checkpoint folder")
    e.add_argument("-o", "--output", required=True, help="the folder to write")
    e.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    e.set_defaults(fn=cmd_export)

    d = sub.add_parser("data", help="inspect, preview or fetch a dataset")
    d.add_argument("action", choices=["info", "preview", "fetch"])
    d.add_argument("source", help="a folder or a built-in source (digits, mnist)")
    d.add_argument("--size", type=int, default=32)
    d.add_argument("--channels", type=int, choices=[1, 3], default=3)
    d.add_argument("-n", type=int, default=64, help="preview: number of images")
    d.add_argument("-o", "--output", default="preview.png")
    d.add_argument("--force", action="store_true", help="fetch: download and rebuild even if the data is there")
    d.add_argument("--only", help="fetch emoji: only these styles, e.g. twemoji,noto,openmoji,fluent-flat,fluent-3d")
    d.set_defaults(fn=cmd_data)

    ev = sub.add_parser("eval", help="score generated pictures against reference data (FID, KID, precision/recall...)")
    ev.add_argument("--generated", required=True, metavar="DIR|MODEL",
                    help="a folder of pictures, or a model: a bundled name or a run/checkpoint folder")
    ev.add_argument("--reference", required=True, metavar="DIR|DATASET", help="a folder or a built-in data set")
    ev.add_argument("--metrics", default="fid,kid,pr", help="any of fid,kid,pr,clip,diversity,memorisation,isc")
    ev.add_argument("--prompts", metavar="FILE", help="one prompt per line: what a text model paints, or a folder's")
    ev.add_argument("--train", metavar="DATASET", help="memorisation: the training data (default: the model's)")
    ev.add_argument("-n", type=int, help="pictures a model paints (default 1000), or the first N of a folder")
    ev.add_argument("--scorer", metavar="RUN_FOLDER", help="clip: a prompt-consistency scorer (danqing train scorer)")
    ev.add_argument("--report", metavar="OUT_DIR", help="write report.json, report.html and the plots here")
    ev.add_argument("--bootstrap", type=int, default=10, metavar="R", help="FID bootstrap rounds (0: no interval)")
    ev.set_defaults(fn=cmd_eval)

    m = sub.add_parser("models", help="list model families and presets")
    m.set_defaults(fn=cmd_models)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from .checkpoint import CheckpointError
    from .data import DataError
    from .metrics import MetricsError
    from .pipeline import PipelineError
    from .text import TextEncoderError

    warnings.formatwarning = lambda message, category, *rest, **kw: f"warning: {message}\n"

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "models":
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        args.fn(args, extra)
    except (UsageError, ConfigError, DataError, CheckpointError, PipelineError, TextEncoderError, MetricsError) as e:
        print(f"danqing {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
