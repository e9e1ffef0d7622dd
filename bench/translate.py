"""Picture-to-picture translation: Pix2Pix, CycleGAN, CUT and FastCUT trained for the same CPU minutes on the same
pairs, scored against the held-out pairs' true targets beside two floors.

    python bench/translate.py --minutes 10                                   # 4 runs of 10 min on emoji-sketch
    python bench/translate.py --pairs emoji-styles --minutes 10 --out runs/bench-translate-styles
    python bench/translate.py --minutes 0.3 --families pix2pix,cut --out /tmp/bench-translate-smoke   # smoke

Data.  ``--pairs`` is a paired built-in set (domain A = side a, the inputs; domain B = side b, what the model
paints), cut down by ``--select`` (a regex on the pair names; by default the fluent-3d pairs of emoji-sketch, all of
emoji-styles).  Pix2Pix trains on all the pairs; CycleGAN and CUT train unpaired on the two halves, A from half 1
and B from half 2, so they never see a true pair (the trainer does this itself, see ``train._paired_sides``).

Training.  Each family's ``emoji`` preset (at ``--size``) and its TRAIN_DEFAULTS, seed 0, ``--minutes`` of wall
time through ``TrainConfig.time_limit`` with a million steps, so the time limit ends every run.  The papers' rate
is constant for the first half of the steps and decays linearly over the second; with a million steps the decay
never starts, so this compares the families at equal time, not at the papers' full schedules.  A run folder that
already holds a finished run is scored again without training (only the final checkpoint is written, so a
checkpoint means a finished run): run the bench again to rescore.

Scores, on the ``<pairs>-heldout`` pairs with the same select (side a the inputs, side b the true targets):
VGG distance (LPIPS-style on the offline VGG19, no pixel term) and PSNR of each translation against its target
(mean ± std over pictures); FID and KID of the translations against the held-out targets (TF-FID Inception; from
a few hundred pictures FID is biased upwards: compare rows, not papers); the share of pictures whose translation
is closer (VGG) to its input than to its target (a generator that copies its input); the mean brightness of the
translations beside the targets' (a colour-inverting generator shows here); and the translation time per
picture (batch 1, median of 20 after a warm-up) at the trained size, and at 128 px for the same preset built at
image_size=128 with random weights (the time does not depend on the weights).  Two floors share the table: the
input copied unchanged, and the nearest training target (for each held-out input, the training target whose
training input is nearest in pixels, over all the training pairs: a retrieval baseline).  A contact sheet per
model (8 held-out inputs, their translations, their true targets, one row each) is written under ``--out``.

Threads.  On a machine another job shares, torch's default of one thread a core is ruinous: every small operator
waits at a barrier for a thread the other job has descheduled (the CUT generator at 64 px took 1.1 s a picture
with 2 threads on 2 busy cores, 35 ms with 1).  Pass ``--threads 1`` there; the header prints the count.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from danqing import checkpoint
from danqing.config import DataConfig, TrainConfig, to_dict
from danqing.data import ImageDataset, load_dataset
from danqing.evaluate import features
from danqing.families import spec
from danqing.generate import Painter, Request
from danqing.images import save_grid
from danqing.metrics.features import Inception
from danqing.metrics.scores import fid, kid
from danqing.pixels import from_uint8, to_uint8
from danqing.projection import perceptual, psnr
from danqing.train import Run, train

FAMILIES = {"pix2pix": ("pix2pix", {}), "cyclegan": ("cyclegan", {}), "cut": ("cut", {}),
            "fastcut": ("cut", {"fast": True})}          # name -> (family, changes to its emoji preset)
SELECT = {"emoji-sketch": "^fluent-3d/", "emoji-styles": ""}
SHEET = 8                                                  # held-out pictures on a contact sheet
BATCH = 32                                                 # pictures a forward pass when scoring


@dataclasses.dataclass
class Pairs:
    """One side each of a paired set, in the same order: inputs (A) and targets (B), (N, 3, S, S) in [-1, 1]."""

    inputs: Tensor
    targets: Tensor
    names: list[str]
    target_set: ImageDataset                               # B as loaded: its Inception features are cached


def load_pairs(source: str, size: int, select: str) -> Pairs:
    a, b = (load_dataset(DataConfig(source, size=size, pair=side, select=select), progress=False) for side in "ab")
    if list(a.captions) != list(b.captions):               # the loader promises one order for both sides
        raise SystemExit(f"{source}: the two sides' pairs come out in different orders; rebuild the cache")
    if not len(a):
        raise SystemExit(f"{source} has no pairs matching --select {select!r}")
    return Pairs(from_uint8(torch.from_numpy(np.array(a.images))), from_uint8(torch.from_numpy(np.array(b.images))),
                 list(a.captions), b)


# ---------------------------------------------------------------- training

def model_config(name: str, size: int):
    family, changes = FAMILIES[name]
    return dataclasses.replace(spec(family).presets["emoji"], image_size=size, **changes)


def train_config(family: str, minutes: float, threads: int) -> TrainConfig:
    # A million steps so that the time limit ends the run (and the linear decay never begins); ckpt_every=0
    # writes only the final checkpoint, so a checkpoint in the folder means the run finished.
    tc = dataclasses.replace(TrainConfig(), **spec(family).train_defaults)
    return dataclasses.replace(tc, steps=1_000_000, time_limit=minutes, seed=0, sample_every=0, ckpt_every=0,
                               threads=threads)


def finished(run_dir: Path) -> bool:
    try:
        checkpoint.resolve(run_dir)
        return True
    except checkpoint.CheckpointError:
        return False


def trained(name: str, a: argparse.Namespace) -> Path:
    """The run folder of ``name``, trained now unless it holds a finished run of the same model and data."""
    family, _ = FAMILIES[name]
    run_dir = Path(a.out) / f"{name}-{a.pairs}-{a.size}"
    cfg, data = model_config(name, a.size), DataConfig(a.pairs, size=a.size, select=a.select)
    if finished(run_dir):
        old = json.loads((run_dir / "config.json").read_text())
        same = old["model"] == to_dict(cfg) and all(old["data"][k] == getattr(data, k) for k in ("source", "select"))
        if not same:                                       # scoring another model against these pairs would mislead
            raise SystemExit(f"{run_dir} holds a run of another model or data; choose another --out or delete it")
        if old["train"]["time_limit"] != a.minutes:
            print(f"  ({name}: reusing a finished run of {old['train']['time_limit']:g} min, not {a.minutes:g})")
        return run_dir
    print(f"  training {name} for {a.minutes:g} min -> {run_dir}", flush=True)
    train(Run(family, cfg, data, train_config(family, a.minutes, a.threads), "emoji"), run_dir, progress=False)
    return run_dir


# ---------------------------------------------------------------- translating and timing

def translate(painter: Painter, inputs: Tensor) -> Tensor:
    # Seed i for picture i: Pix2Pix's test-time dropout is drawn from it, so a rescore paints the same pictures.
    return painter(Request(list(range(len(inputs))), image=inputs), batch_size=BATCH)


def seconds_per_picture(painter: Painter, picture: Tensor, rounds: int = 20) -> float:
    """Median wall time of one picture at batch 1, after a warm-up (the first call pays for allocations)."""
    req = Request([0], image=picture[None])
    painter(req)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        painter(req)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def seconds_at(name: str, size: int, picture: Tensor) -> float:
    """Time per picture of ``name``'s preset built at ``size`` with random weights (the time does not need
    trained ones), translating ``picture`` resized to that size."""
    family, _ = FAMILIES[name]
    model = spec(family).Model(model_config(name, size)).eval()
    big = F.interpolate(picture[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return seconds_per_picture(Painter(model, spec(family), name=name), big)


# ---------------------------------------------------------------- scoring

class Judge:
    """The distances and features every row is scored with, and the held-out pairs they compare against."""

    def __init__(self, held: Pairs):
        self.held = held
        self.vgg = perceptual(pixel_weight=0.0)
        self.inception = Inception()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.ref = features(held.target_set, self.inception)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.vgg(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)])

    def row(self, pictures: Tensor, *, copies: bool = True) -> dict[str, str]:
        """The table's score cells for ``pictures`` (N, 3, S, S) in [-1, 1], one per held-out pair."""
        held, pictures = self.held, pictures.float().clamp(-1, 1)
        d, p = self.distance(pictures, held.targets), psnr(pictures, held.targets)
        gen = features(np.ascontiguousarray(to_uint8(pictures).numpy()), self.inception, key=None)
        with warnings.catch_warnings():                    # the small-sample warnings: the header says so once
            warnings.simplefilter("ignore")
            f, (k, k_std) = fid(gen, self.ref), kid(gen, self.ref, subset_size=max(2, len(self.ref) // 2))
        copy = "(it is the input)"
        if copies:
            copy = f"{(self.distance(pictures, held.inputs) < d).float().mean().item():.0%}"
        return {"vgg": f"{d.mean():.3f} ± {d.std():.3f}", "psnr": f"{p.mean():.2f} ± {p.std():.2f}",
                "fid": f"{f:.1f}", "kid": f"{1000 * k:.1f} ± {1000 * k_std:.1f}", "copies": copy,
                "bright": f"{brightness(pictures):.0f}"}


def brightness(pictures: Tensor) -> float:
    """Mean pixel value on 0..255 over every picture and channel."""
    return ((pictures.float().clamp(-1, 1) + 1) * 127.5).mean().item()


def nearest_targets(train: Pairs, inputs: Tensor) -> Tensor:
    """For each input, the training target whose training input is nearest in squared pixel distance."""
    x, t = inputs.flatten(1), train.inputs.flatten(1)           # (N, D), (M, D)
    d = x.square().sum(1, keepdim=True) - 2 * x @ t.T + t.square().sum(1)[None]    # (N, M)
    return train.targets[d.argmin(1)]


def contact_sheet(held: Pairs, pictures: Tensor, path: Path) -> None:
    idx = torch.linspace(0, len(pictures) - 1, min(SHEET, len(pictures))).long()
    rows = torch.cat([held.inputs[idx], pictures[idx].float().clamp(-1, 1), held.targets[idx]])
    save_grid(rows, path, nrow=len(idx))


# ---------------------------------------------------------------- the table

COLUMNS = [("model", "model"), ("steps", "steps"), ("vgg", "VGG distance ↓"), ("psnr", "PSNR (dB) ↑"),
           ("fid", "FID ↓"), ("kid", "KID ×1000 ↓"), ("copies", "closer to input"), ("bright", "brightness"),
           ("ms", "ms/picture"), ("ms128", "ms/picture 128 px")]


def print_row(cells: dict[str, str]) -> None:
    print("| " + " | ".join(cells.get(k, "") for k, _ in COLUMNS) + " |", flush=True)


def score_model(name: str, run_dir: Path, judge: Judge, a: argparse.Namespace) -> dict[str, str]:
    family, _ = FAMILIES[name]
    model, meta = checkpoint.load(run_dir)
    painter = Painter(model, spec(family), name=name)
    pictures = translate(painter, judge.held.inputs)
    contact_sheet(judge.held, pictures, Path(a.out) / f"sheet-{name}-{a.pairs}-{a.size}.png")
    label = name + (" (unpaired)" if family != "pix2pix" else "")
    ms = 1000 * seconds_per_picture(painter, judge.held.inputs[0])
    ms128 = 1000 * seconds_at(name, 128, judge.held.inputs[0])
    return {"model": label, "steps": f"{meta['step']:,}", **judge.row(pictures), "ms": f"{ms:.1f}",
            "ms128": f"{ms128:.1f}"}


def parse_families(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise SystemExit(f"--families takes a comma-separated list of {', '.join(FAMILIES)}; got {text!r}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall time of each run")
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    ap.add_argument("--pairs", default="emoji-sketch", choices=sorted(SELECT), help="the paired built-in set")
    ap.add_argument("--select", default=None, help="regex on pair names (default: ^fluent-3d/ for emoji-sketch, "
                                                   "all pairs for emoji-styles)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default="runs/bench-translate")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training, scoring and timing "
                    "(0: torch's default); 1 on a machine another job shares (see the docstring)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.select = SELECT[a.pairs] if a.select is None else a.select
    names = parse_families(a.families)
    print(f"{a.pairs} (select {a.select or 'all'!r}) at {a.size} px; {a.minutes:g} min of training a run; "
          f"{torch.get_num_threads()} threads", flush=True)
    runs = {name: trained(name, a) for name in names}        # all training first, so scoring never shares the CPU
    held = load_pairs(f"{a.pairs}-heldout", a.size, a.select)
    training = load_pairs(a.pairs, a.size, a.select)
    judge = Judge(held)
    print(f"\n{len(held.names)} held-out pairs scored (FID and KID against these {len(held.names)} targets: "
          f"biased upwards at this size, compare rows); {len(training.names)} training pairs (pix2pix: all; "
          f"unpaired: A from half 1, B from half 2); targets' mean brightness {brightness(held.targets):.0f}, "
          f"inputs' {brightness(held.inputs):.0f} (0..255); ms/picture at batch 1, median of 20; 128 px: the "
          "preset built at 128 px with random weights\n")
    print("| " + " | ".join(h for _, h in COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    print_row({"model": "floor: input copied unchanged", **judge.row(held.inputs, copies=False)})
    print_row({"model": "floor: nearest training target (pixels)", **judge.row(nearest_targets(training, held.inputs))})
    for name in names:
        print_row(score_model(name, runs[name], judge, a))
    print(f"\ncontact sheets (inputs, translations, targets): {Path(a.out)}/sheet-*.png")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
