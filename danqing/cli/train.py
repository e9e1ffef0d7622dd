"""danqing train | export | models."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import DataConfig, TrainConfig, override
from ..protocol import Encoder, FamilySpec, FrozenEncoding
from .common import UsageError


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
    from ..data import load_dataset
    from ..estimate import check_training
    from ..families import spec
    from ..train import Run, train

    fam = spec(args.family)
    args.data = _data_source(args, fam)
    roles = _roles(args, fam)
    if args.preset not in fam.presets:
        raise UsageError(f"{args.family} has no preset {args.preset!r}; choose one of {', '.join(fam.presets)}")
    ov = _split_overrides(extra)
    model_cfg = override(fam.presets[args.preset], ov["model"], prefix="model.")

    flags = {"steps": args.steps, "batch_size": args.batch_size, "bf16": args.bf16, "seed": args.seed,
             "time_limit": args.minutes}
    train_cfg = dataclasses.replace(TrainConfig(), **fam.train_defaults)
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in flags.items() if v is not None})
    train_cfg = override(train_cfg, ov["train"], prefix="train.")
    for k in ("size", "channels"):
        if k in ov["data"]:
            raise UsageError(f"--data.{k} follows the model; set --model.image_{k} instead")
    facts = fam.facts(model_cfg)
    data_cfg = override(DataConfig(source=args.data, size=facts.image_size, channels=facts.image_channels,
                                   flip=args.flip), ov["data"], prefix="data.")

    # a config with a num_classes field is class-conditional when it is above 0: follow the data's classes
    takes_classes = "num_classes" in {f.name for f in dataclasses.fields(model_cfg)}
    if takes_classes and "num_classes" not in ov["model"] and fam.facts(model_cfg).text is None:
        check_training(fam, model_cfg, train_cfg.batch_size)  # before the data is loaded at the model's size
        ds = load_dataset(data_cfg, progress=not args.quiet)
        n = len(ds.class_names) if ds.labels is not None else 0
        if n != model_cfg.num_classes:
            print(f"note: {args.data} has {n or 'no'} classes; training with --model.num_classes={n} "
                  f"(the preset had {model_cfg.num_classes})", file=sys.stderr)
            model_cfg = dataclasses.replace(model_cfg, num_classes=n)

    init_from = {}
    if fam.facts(model_cfg).latent_factor > 1 and fam.can(FrozenEncoding):   # latent diffusion: a trained encoder
        model_cfg, init_from = _with_autoencoder(model_cfg, args.autoencoder, args.family)
    elif args.autoencoder:
        raise UsageError(f"--autoencoder applies to latent models; {args.family}:{args.preset} works in pixels")
    if args.init:                                       # fine-tune, or continue from exported weights
        init_from = {**init_from, "": args.init}

    out = Path(args.out or f"runs/{args.family}-{args.preset}-{Path(args.data).name}")
    last = train(Run(args.family, model_cfg, data_cfg, train_cfg, args.preset, init_from, roles), out,
                 resume=args.resume, device=args.device, progress=not args.quiet)
    print(f"checkpoint: {last}")
    grids = sorted((out / "samples").glob("*.png"))
    if grids:
        print(f"samples:    {grids[-1]}")


def _roles(args: argparse.Namespace, fam: FamilySpec) -> dict[str, str]:
    """--role NAME=SOURCE (and --style SOURCE for the role style), checked against the family's roles."""
    roles: dict[str, str] = {}
    for item in args.role:
        name, eq, source = item.partition("=")
        if not eq or not name or not source:
            raise UsageError(f"--role {item!r}: write it as --role NAME=DIR|DATASET")
        roles[name] = source
    if args.style is not None:
        roles["style"] = args.style
    known = [r.name for r in fam.roles]
    for name in roles:
        if name not in known:
            raise UsageError(f"{fam.name} trains on no data set called {name!r}"
                             f"{'; its roles: ' + ', '.join(known) if known else ' besides --data'}")
    return roles


def _data_source(args: argparse.Namespace, fam: FamilySpec) -> str:
    """--data, or --content for families trained on (content, style) pairs; --style only where it applies."""
    pairs = any(r.name == "style" for r in fam.roles)
    if args.style is not None and not pairs:
        raise UsageError(f"--style applies to families trained on (content, style) pairs (adain), not {args.family}")
    if args.content is not None and args.data is not None and args.content != args.data:
        raise UsageError("--content and --data name the same thing (the training pictures); give one of them")
    source = args.data or args.content
    if not source:
        raise UsageError(f"give the training pictures with --data DIR|DATASET"
                         f"{' (or --content DIR|DATASET --style DIR|DATASET)' if pairs else ''}")
    return source


def _with_autoencoder(model_cfg, path: str | None, family: str):
    """Put a trained autoencoder's config (with its measured latent scale) into a latent model's config."""
    from ..checkpoint import read_config, resolve
    from ..families import FAMILIES, spec

    if not path:
        raise UsageError(f"{family} works in an autoencoder's latent space: give --autoencoder RUN_OR_CHECKPOINT "
                         "(train one first: danqing train autoencoder --preset emoji --data emoji)")
    cfg = read_config(path)
    if cfg.get("family") not in FAMILIES or not spec(cfg["family"]).can(Encoder):
        raise UsageError(f"--autoencoder {path} is a {cfg.get('family')} checkpoint, not an autoencoder")
    ae = spec(cfg["family"]).config_from(cfg["model"])
    if not ae.latent_scale:
        raise UsageError(f"--autoencoder {path} has no measured latent scale; resume its training for a step "
                         "to write a checkpoint that has it")
    if ae.image_size != model_cfg.image_size:
        raise UsageError(f"--autoencoder {path} was trained at {ae.image_size}px but the model paints at "
                         f"{model_cfg.image_size}px")
    return dataclasses.replace(model_cfg, ae=ae, encoder=cfg["family"]), {"ae": str(resolve(path))}


# ---------------------------------------------------------------- export

def cmd_export(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import torch

    from ..checkpoint import export
    from ..fileio import check_writable

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    check_writable(Path(args.output).parent, "the folder of -o")
    out = export(args.checkpoint, args.output, dtype=None if args.fp32 else torch.float16)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB, {'fp32' if args.fp32 else 'fp16'} EMA weights, no training state)")


# ---------------------------------------------------------------- models

def cmd_models(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..families import specs
    from ..options import describe
    from ..protocol import CAPABILITIES

    t = Table(title="families and presets (danqing train FAMILY --preset P)")
    for col in ("family", "preset", "params", "image", "classes", "phases", "can", "options", "data"):
        t.add_column(col)
    for name, fam in specs().items():
        can = ", ".join(c.__name__ for c in CAPABILITIES if fam.can(c))
        options = ", ".join(i.name for i in describe(fam.Options)) or "-"
        data = ", ".join(["data", *(r.name for r in fam.roles)])
        for preset, c in fam.presets.items():
            m = fam.Model(c)
            facts = fam.facts(c)
            t.add_row(name, preset, f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f}M",
                      f"{facts.image_size}x{facts.image_size}x{facts.image_channels}",
                      str(facts.num_classes or ("text" if facts.text else "-")),
                      ",".join(p.name for p in m.phases()), can, options, data)
    Console(width=None if sys.stdout.isatty() else 200).print(t)      # piped: wide enough for every column
