"""Class-conditional quality on the built-in digits after a fixed CPU time budget.

1. Trains a small CNN classifier on 80% of the real digits (32x32) and reports
   its accuracy on the other 20%: the judge must itself be good.
2. Trains danqing's class-conditional model (diffusion or DCGAN, preset
   "digits") for --minutes of wall time on this machine.
3. Draws 256 images, 25.6 per class, and reports the share the classifier
   assigns to the requested class (target >= 90% for diffusion), per class.
4. Times DPM-Solver++(2M), 20 steps, 64 images (diffusion), fp32 and bf16.

    python bench/digits_quality.py --family diffusion --minutes 10
    python bench/digits_quality.py --family dcgan --minutes 10
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from danqing import checkpoint
from danqing.config import DataConfig, TrainConfig
from danqing.data import load_dataset
from danqing.families import spec
from danqing.hardware import cpu_has_bf16
from danqing.images import save_grid
from danqing.metrics.judge import train_judge
from danqing.pixels import from_uint8
from danqing.protocol import Cond, generators
from danqing.train import Run, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["diffusion", "dcgan"], default="diffusion")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", default=None, help="run folder (default runs/bench-digits-FAMILY)")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--sampler", default="dpmpp2m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--resume", action="store_true", help="skip training and evaluate the existing run")
    a = ap.parse_args()
    torch.manual_seed(0)                                  # a benchmark is a program: its judge is reproducible
    out = Path(a.out or f"runs/bench-digits-{a.family}")
    fam = spec(a.family)
    cfg = fam.presets["digits"]

    ds = load_dataset(DataConfig("digits", size=32, channels=1), progress=False)
    real = from_uint8(torch.from_numpy(np.array(ds.images)))
    t0 = time.perf_counter()
    judge, acc = train_judge(real, torch.from_numpy(ds.labels))
    print(f"judge: CNN trained on 80% of the real digits, held-out accuracy {acc:.1%} ({time.perf_counter() - t0:.0f} s)")

    if not a.resume:
        tc = dataclasses.replace(TrainConfig(), **fam.train_defaults)
        tc = dataclasses.replace(tc, steps=1_000_000, time_limit=a.minutes, sample_every=0, ckpt_every=1000)
        t0 = time.perf_counter()
        train(Run(a.family, cfg, DataConfig("digits", size=32, channels=1), tc, "digits"), out, progress=True)
        print(f"trained {a.family} for {(time.perf_counter() - t0) / 60:.1f} min")
    model, meta = checkpoint.load(out)
    print(f"checkpoint {checkpoint.resolve(out)} (step {meta['step']})")

    labels = torch.arange(a.n) % 10
    kw = {"options": fam.Options(sampler=a.sampler, steps=a.steps, guidance=a.guidance)} if a.family == "diffusion" else {}
    with torch.autocast("cpu", torch.bfloat16, enabled=cpu_has_bf16()):
        x = torch.cat([model.sample(len(labels[i:i + 64]), Cond(labels=labels[i:i + 64]),
                                    generator=generators(range(i, min(i + 64, a.n))), **kw) for i in range(0, a.n, 64)])
    save_grid(x[:100], out / "bench-samples.png", nrow=10)
    with torch.no_grad():
        pred = judge(x.float()).argmax(1)
    hit = (pred == labels).float()
    per = [hit[labels == c].mean().item() for c in range(10)]
    print(f"{a.family}: {hit.mean().item():.1%} of {a.n} samples classified as the requested digit "
          f"({', '.join(f'{c}:{p:.0%}' for c, p in enumerate(per))})"
          + (f"; {a.sampler} {a.steps} steps, guidance {a.guidance}" if kw else ""))
    # Accuracy alone rewards a collapsed model that draws one perfect digit per class: also compare the
    # spread within each class, as mean pairwise distance of the judge's features, with the real data's.
    with torch.no_grad():
        fake_f, real_f = judge.body(x.float()), judge.body(real)
    real_labels = torch.from_numpy(ds.labels)
    def spread(f, lab):
        return float(np.mean([torch.pdist(f[lab == c]).mean().item() for c in range(10)]))
    ratio = spread(fake_f, labels) / spread(real_f, real_labels)
    print(f"within-class diversity (judge features): {ratio:.2f} x the real data's")
    print(f"samples: {out / 'bench-samples.png'}")

    if a.family == "diffusion":
        lab = Cond(labels=torch.arange(64) % 10)
        for bf16 in (False, True):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                model.sample(8, lab.rows(slice(0, 8)), generator=generators(range(8)),
                             options=fam.Options(sampler="dpmpp2m", steps=4))
                t0 = time.perf_counter()
                model.sample(64, lab, generator=generators(range(64)),
                             options=fam.Options(sampler="dpmpp2m", steps=20, guidance=a.guidance))
                print(f"DPM++(2M) 20 steps, 64 images, guidance {a.guidance} ({'bf16' if bf16 else 'fp32'}): "
                      f"{time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
