"""danqing translate: pictures through a picture-to-picture model (Pix2Pix, CycleGAN, CUT), a file or a folder."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .common import UsageError, read_square
from .paint import chosen_options

MAX_PICTURES = 10_000          # pictures one command translates


def inputs(given: Sequence[str]) -> list[Path]:
    """The picture files named, with the pictures (not recursively) of the folders named, in order."""
    from ..data.transforms import IMAGE_EXTENSIONS

    out: list[Path] = []
    for g in given:
        p = Path(g)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UsageError(f"{p} holds no pictures ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        else:
            out.append(p)
    if len(out) > MAX_PICTURES:
        raise UsageError(f"{len(out)} pictures in one command; translate at most {MAX_PICTURES} at a time")
    stems = [p.stem for p in out]
    if len(set(stems)) != len(stems):
        raise UsageError("two pictures share a file name; their outputs would overwrite each other: rename one")
    return out


def cmd_translate(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from PIL import Image

    from ..checkpoint import read_config
    from ..families import spec, specs
    from ..fileio import check_writable
    from ..pipeline import load, resolve_model
    from ..protocol import Generates, Translates

    if extra:
        raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    pictures = inputs(args.pictures)
    out = check_writable(args.output, "the folder of -o")
    fam = spec(read_config(resolve_model(args.model))["family"])
    if not fam.can(Translates) or fam.can(Generates):          # before the weights load
        raise UsageError(f"{args.model} is a {fam.name} model, which paints from noise; translate with a model of "
                         f"{', '.join(n for n, f in specs().items() if f.can(Translates) and not f.can(Generates))}")
    pipe = load(args.model)
    facts = pipe.painter.facts
    options = chosen_options(args)
    # every picture is read and checked before any is painted: (C, S, S) uint8 each
    arrays = [read_square(str(path), facts.image_size, facts.image_channels, args.fit) for path in pictures]
    for path, array in zip(pictures, arrays):
        picture = Image.fromarray(array[0] if len(array) == 1 else array.transpose(1, 2, 0))
        image = pipe("", n=1, seed=args.seed, init_image=picture, bf16=args.bf16, **options)[0]
        target = out / f"{path.stem}.png"
        pipe.save(image, target)
        print(f"{path}: {target}")
