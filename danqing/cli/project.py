"""danqing project: the latent of real pictures in a model's space (``danqing.projection``)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .common import UsageError, read_square

SNAPSHOTS = 8           # pictures of the search in the strip, besides the target


def cmd_project(args: argparse.Namespace, extra: Sequence[str]) -> None:
    import torch

    from ..checkpoint import read_config
    from ..families import spec, specs
    from ..fileio import check_writable
    from ..generate import Request
    from ..images import save_grid, save_image, to_pil
    from ..pipeline import load, resolve_model
    from ..projection import perceptual, pixel_distance, psnr, save_latent
    from ..protocol import Projects

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    if not 1 <= args.steps <= 10_000:
        raise UsageError(f"--steps must be between 1 and 10000, got {args.steps}")
    if not 1 <= len(args.pictures) <= 16:
        raise UsageError(f"project 1 to 16 pictures at a time, got {len(args.pictures)}")
    out = check_writable(args.output, "the folder of -o")
    fam = spec(read_config(resolve_model(args.model))["family"])
    if not fam.can(Projects):                       # before the weights load
        raise UsageError(f"{args.model} is a {fam.name} model, which cannot project pictures; families that can: "
                         f"{', '.join(n for n, f in specs().items() if f.can(Projects))}")
    pipe = load(args.model)
    painter = pipe.painter
    stems = [Path(p).stem for p in args.pictures]
    if len(set(stems)) != len(stems):
        raise UsageError("two pictures share a file name; their outputs would overwrite each other: rename one")
    images = torch.stack([_read(p, painter.facts.image_size, painter.facts.image_channels, args.fit)
                          for p in args.pictures])
    prompt = args.cls if args.cls is not None else args.prompt
    if painter.class_names and prompt is None:
        raise UsageError(f"{args.model} paints classes: say which one each picture is with --class "
                         f"({', '.join(painter.class_names)})")
    if painter.takes_text and not prompt:
        raise UsageError(f"{args.model} paints from text: describe the pictures with --prompt")
    req = Request([args.seed] * len(images), prompts=None if prompt is None else [prompt] * len(images),
                  image=images)
    distance = perceptual(args.pixel_weight) if args.distance == "vgg" else pixel_distance
    marks = {round(k * (args.steps - 1) / (SNAPSHOTS - 1)) for k in range(SNAPSHOTS)}
    shots: list[torch.Tensor] = []

    def keep(i: int, steps: int, pictures: torch.Tensor, loss: float) -> None:
        if i in marks:
            shots.append(pictures.float().clamp(-1, 1).cpu())
    latent = painter.project(req, steps=args.steps, space=args.space, distance=distance, callback=keep)
    space = args.space or fam.Model.spaces[0]
    with torch.no_grad():
        rebuilt = painter(Request(req.seeds, prompts=req.prompts, latent=latent)).cpu()
        close = psnr(rebuilt, images)
        far = distance(rebuilt, images) if args.distance == "vgg" else None
    for k, (stem, picture) in enumerate(zip(stems, args.pictures)):
        about = {"family": fam.name, "model": pipe.name, "space": space, "steps": args.steps,
                 "picture": Path(picture).name, "prompt": prompt or "", "psnr": round(float(close[k]), 3),
                 "distance": args.distance, "seed": args.seed}
        if far is not None:
            about["vgg_distance"] = round(float(far[k]), 5)
        save_latent(out / f"{stem}.latent.safetensors", {n: t[k:k + 1] for n, t in latent.items()}, about)
        save_image(to_pil(rebuilt[k:k + 1])[0], out / f"{stem}.png")
        strip = torch.cat([images[k:k + 1], *[s[k:k + 1] for s in shots]])
        save_grid(strip, out / f"{stem}-steps.png", nrow=len(strip))
        figures = f"PSNR {float(close[k]):.2f} dB" + ("" if far is None else f", VGG+pixel distance {float(far[k]):.4f}")
        print(f"{picture}: {out / (stem + '.latent.safetensors')}  ({space}, {args.steps} steps; {figures})")


def _read(path: str, side: int, channels: int, fit: Literal["crop", "pad"] | None):
    """A picture as a (C, side, side) tensor in [-1, 1]."""
    import torch

    from ..pixels import from_uint8

    return from_uint8(torch.from_numpy(read_square(path, side, channels, fit)))
