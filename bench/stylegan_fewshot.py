"""GANs on few pictures: StyleGAN with no augmentation, DiffAugment and ADA on 100 and 1,000 digits, and DCGAN on
the same data, each for the same minutes of CPU.

    python bench/stylegan_fewshot.py --minutes 5                 # 7 runs, about 45 minutes on 2 cores
    python bench/stylegan_fewshot.py --runs stylegan:1000:none:uncond --minutes 5 \
        --folder peer=runs/bench-peer/pictures                    # against the peer (bench/stylegan_peer.py)

The 1,797 built-in digits (32x32) are split once (seed 0): 797 held out as the reference, the first 100 or 1,000
of the others for training (class folders, so every model is class-conditional).  Each run trains with the
family's `digits` preset and its training defaults, plus the augmentation: none, DiffAugment (colour, translation,
cutout at p = 1) or ADA (the same transforms at an adaptive p, target 0.6).  Then 1,000 EMA pictures (the ten
classes in turn, seeds 0..999) are scored: FID and KID against the 797 held-out digits (TF-FID Inception;
FID from 797 reference pictures is biased upwards, so compare rows, not papers), and the memorisation report
against the run's own training pictures (the share of pictures closer to a training picture than the 1%
quantile of the training pictures' own nearest-neighbour distances).  A fourth field ``uncond`` trains the model
without classes (as the peer, which is unconditional), scored on 1,000 pictures of seeds 0..999; ``--folder
NAME=DIR`` scores the pictures of another program (e.g. the peer's) the same way, against the 1,000 training
digits for memorisation.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from danqing import checkpoint
from danqing.config import DataConfig, TrainConfig
from danqing.data import load_dataset
from danqing.evaluate import features
from danqing.families import spec
from danqing.generate import Painter, Request
from danqing.metrics.features import Inception
from danqing.metrics.diversity import memorisation
from danqing.metrics.scores import fid, kid
from danqing.pixels import to_uint8
from danqing.train import Run, train

AUGMENT = {"none": {}, "diffaugment": {"augment": "color,translation,cutout"},
           "ada": {"augment": "color,translation,cutout", "ada": True}}
DEFAULT_RUNS = [f"stylegan:{n}:{a}" for n in (100, 1000) for a in AUGMENT] + ["dcgan:1000:none"]


def split(root: Path) -> tuple[dict[int, Path], np.ndarray]:
    """Class folders of the first 100 and 1,000 training digits, and the held-out digits (uint8, N x 1 x 32 x 32)."""
    ds = load_dataset(DataConfig("digits", size=32, channels=1), progress=False)
    order = np.random.default_rng(0).permutation(len(ds))
    held, train_idx = order[1000:], order[:1000]
    folders = {}
    for n in (100, 1000):
        folder = root / f"digits-{n}"
        if not folder.is_dir():
            for i in train_idx[:n]:
                (folder / str(ds.labels[i])).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(ds.images[i, 0])).save(folder / str(ds.labels[i]) / f"{i}.png")
        folders[n] = folder
    return folders, np.asarray(ds.images[held])


def rgb(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(x, 3, axis=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall time of each run")
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="FAMILY:N:AUGMENT, AUGMENT in none, "
                    "diffaugment, ada")
    ap.add_argument("--out", default="runs/bench-fewshot")
    ap.add_argument("-n", type=int, default=1000, help="pictures scored per run")
    ap.add_argument("--resume", action="store_true", help="score the existing runs without training")
    ap.add_argument("--folder", action="append", default=[], metavar="NAME=DIR", help="also score these pictures")
    a = ap.parse_args()
    out = Path(a.out)
    folders, held = split(out / "data")
    inception = Inception()
    ref = features(rgb(held), inception)
    print(f"{len(held)} held-out digits; {a.minutes:g} min of training a run; {a.n} pictures scored a run")
    print("| family | pictures | augmentation | steps | FID | KID (x1000) | copy rate | final ADA p |")
    print("|---|---|---|---|---|---|---|---|")
    def score(name: str, n: int, aug: str, steps: str, pictures: np.ndarray, p: float | None, t0: float) -> None:
        gen = features(rgb(pictures), inception)
        trained = load_dataset(DataConfig(str(folders[n]), size=32, channels=1), progress=False)
        copies = memorisation(gen, features(rgb(np.asarray(trained.images)), inception, key=None))
        k_mean, k_std = kid(gen, ref, subset_size=min(1000, len(ref) // 2))
        print(f"| {name} | {n} | {aug} | {steps} | {fid(gen, ref):.1f} | {1000 * k_mean:.1f} ± {1000 * k_std:.1f} | "
              f"{copies.rate:.1%} | {'' if p is None else f'{p:.2f}'} |  ({time.perf_counter() - t0:.0f} s to score)",
              flush=True)

    for item in a.folder:
        name, _, where = item.partition("=")
        pics = load_dataset(DataConfig(where, size=32, channels=1), progress=False)
        score(name, 1000, "(its own)", "", np.asarray(pics.images[:a.n]), None, time.perf_counter())
    for item in a.runs:
        family, n, aug, *more = item.split(":")
        fam, folder, uncond = spec(family), folders[int(n)], more == ["uncond"]
        run_dir = out / (f"{family}-{n}-{aug}" + ("-uncond" if uncond else ""))
        if not a.resume:
            cfg = dataclasses.replace(fam.presets["digits"], **AUGMENT[aug], **({"num_classes": 0} if uncond else {}))
            tc = dataclasses.replace(TrainConfig(), **fam.train_defaults)
            tc = dataclasses.replace(tc, steps=1_000_000, time_limit=a.minutes, sample_every=0, ckpt_every=2000,
                                     batch_size=32)
            train(Run(family, cfg, DataConfig(str(folder), size=32, channels=1), tc, "digits"), run_dir,
                  progress=False)
        model, meta = checkpoint.load(run_dir)
        painter = Painter(model, fam, class_names=meta.get("class_names"))
        seeds = list(range(a.n))
        t0 = time.perf_counter()
        labels = None if uncond else [s % 10 for s in seeds]
        pictures = to_uint8(painter(Request(seeds, labels=labels), batch_size=100)).numpy()
        p = model.aug.p.item() if getattr(model, "aug", None) is not None else None
        score(family + (" (no classes)" if uncond else ""), int(n), aug, f"{meta['step']:,}", pictures, p, t0)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
