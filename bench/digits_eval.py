"""Evaluation on digits: FID/KID/precision-recall/coverage of trained models, and the mode-collapse alarm.

    python bench/digits_eval.py [--diffusion-steps 2213] [--dcgan-steps 14588] [--collapse-steps 3000] [-n 1000]

Trains, each with the trainer's quality checks on (every 250 steps, 256
samples, EfficientNet-Lite0 features):

- diffusion:  the `digits` preset for as many steps as the foundation benchmark's
              10 minutes gave on an idle machine (2,213), so a busy machine trains the same model;
- dcgan:      the `digits` preset (R1, gamma = 1), likewise (14,588 steps);
- collapsed:  the same DCGAN without R1 (--model.r1_gamma=0), which collapses to
              about one picture per class.

Then scores n samples of each against the 1,797 real digits with `danqing eval`'s
functions (Inception features; FID, KID, precision/recall, density/coverage,
diversity) and reports whether the alarm fired: it must fire on `collapsed`
and stay quiet on `diffusion`.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import time
import warnings
from pathlib import Path

from danqing.config import DataConfig, TrainConfig
from danqing.evaluate import evaluate
from danqing.families import spec
from danqing.monitor import CollapseWarning
from danqing.train import Run, train

EVAL_EVERY = 250


def train_run(name: str, family: str, steps: int, out: Path, **model: object) -> None:
    fam = spec(family)
    cfg = dataclasses.replace(fam.presets["digits"], **model)
    tc = dataclasses.replace(TrainConfig(), **fam.train_defaults)
    tc = dataclasses.replace(tc, steps=steps, sample_every=0, ckpt_every=1000, eval_every=EVAL_EVERY, eval_n=256)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)          # counted from the log below
        train(Run(family, cfg, DataConfig("digits", size=32, channels=1), tc, "digits"), out / name, progress=False)
    print(f"{name}: {steps} steps in {(time.perf_counter() - t0) / 60:.1f} min")


def alarm(name: str, out: Path, threshold: float = TrainConfig().collapse_alarm) -> bool:
    """Print the run's diversity checks and return whether the alarm fired (a check below the threshold)."""
    with open(out / name / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/diversity") and int(r["step"]) % EVAL_EVERY == 0]
    values = [float(r["eval/diversity"]) for r in rows]
    fired = sum(v < threshold for v in values)
    print(f"{name}: diversity checks every {EVAL_EVERY} steps: {', '.join(f'{v:.2f}' for v in values)}; "
          f"alarm {'FIRED' if fired else 'quiet'} ({fired} of {len(values)} checks below {threshold:g})")
    return bool(fired)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diffusion-steps", type=int, default=2213)
    ap.add_argument("--dcgan-steps", type=int, default=14588)
    ap.add_argument("--collapse-steps", type=int, default=3000)
    ap.add_argument("-n", type=int, default=1000, help="samples scored per model")
    ap.add_argument("--out", default="runs/bench-digits-eval")
    a = ap.parse_args()
    out = Path(a.out)
    runs = {"diffusion": ("diffusion", a.diffusion_steps, {}), "dcgan": ("dcgan", a.dcgan_steps, {}),
            "collapsed": ("dcgan", a.collapse_steps, {"r1_gamma": 0.0})}
    for name, (family, steps, model) in runs.items():
        if not (out / name).exists():
            train_run(name, family, steps, out, **model)
    alarms = {name: alarm(name, out) for name in runs}
    for name in runs:
        report = evaluate(str(out / name), "digits", "fid,kid,pr,diversity", n=a.n, rounds=10, progress=False)
        cells = "; ".join(f"{r.metric} {r.value:.4g}" + (f" [{r.interval[0]:.3g}, {r.interval[1]:.3g}]"
                                                          if r.interval else f" ± {r.std:.2g}" if r.std else "")
                          for r in report.rows)
        print(f"{name} ({a.n} samples vs {report.info['n_reference']} real): {cells}")
    ok = alarms["collapsed"] and not alarms["diffusion"]
    print(f"alarm fires on the collapsed DCGAN and stays quiet on diffusion: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
