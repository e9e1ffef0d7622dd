"""Painting speed of a text-to-image model on this machine.

cold: the whole `danqing paint "a red apple" -n 4` command in a fresh process
      (imports, model and text-encoder loading, 4 images), wall time.
warm: one loaded pipeline painting 4 images at 20 steps with guidance, median of --repeats.

    python bench/paint_speed.py [--model emoji|RUN] [--repeats 5]

Targets for the bundled painter on a 2-core CPU: cold <= 15 s, warm <= 3 s.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import danqing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt", default="a red apple")
    a = ap.parse_args()
    exe = Path(sys.executable).with_name("danqing")
    with tempfile.TemporaryDirectory() as out:
        cmd = [str(exe), "paint", a.prompt, "-n", "4", "--model", a.model, "-q", "-o", out, "--seed", "0"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe = danqing.load(a.model)
    pipe.text_encoder                                            # noqa: B018 - load it now, not inside the timing
    load = time.perf_counter() - t0
    c = pipe.model.config
    pipe(a.prompt, n=4, steps=20, seed=0)                        # warm-up
    times = []
    for r in range(a.repeats):
        t0 = time.perf_counter()
        pipe(a.prompt, n=4, steps=20, seed=r)
        times.append(time.perf_counter() - t0)
    warm = statistics.median(times)
    params = sum(p.numel() for p in pipe.model.parameters()) / 1e6
    print(f"model {a.model}: {params:.1f}M parameters, {c.image_size}px, sampler {c.sampler}, guidance {c.guidance:g}")
    print(f"cold `danqing paint -n 4`: {cold:.1f} s (target 15 s: {cold / 15:.2f}x of the budget)")
    print(f"load pipeline + text encoder in-process: {load:.1f} s")
    print(f"warm 4 images, 20 steps: {warm:.2f} s median of {a.repeats} (target 3 s: {warm / 3:.2f}x of the budget)")


if __name__ == "__main__":
    main()
