"""FID and KID of text-to-image models against the emoji held-out split, and a same-budget peer.

    python bench/t2i_quality.py --model emoji                 # the bundled painter (2000 samples)
    python bench/t2i_quality.py --model runs/a --model runs/b # several models, one set of real features
    python bench/t2i_quality.py --baseline 30 -n 1000         # danqing's UNet vs diffusers' UNet2DConditionModel,
                                                              # each trained 30 min from scratch, then scored
    python bench/t2i_quality.py --baseline 30 --threads 1     # the same on one thread (another job on the other core)

Samples: image i is painted from held-out caption i mod 1251 with seed i, at the
model's default sampler, steps and guidance (what `danqing paint` does).  Real:
the 1251 held-out images (whole held-out subjects and held-out (subject, style)
pairs), so the scores measure generalisation to prompts never trained on.
Features: the TF-FID Inception (pool3, TF1 bilinear resize to 299).  With 1251
real images FID is biased upwards (it warns); KID is unbiased, so compare KID.

--baseline trains both networks with the same trainer, data, preconditioning,
recipe and wall-clock budget (the bundled recipe's settings), one after the
other in this process's machine, then scores both on the same prompts and seeds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import danqing
from danqing.config import DataConfig
from danqing.data import load_dataset
from danqing.hardware import cpu_has_bf16
from danqing.images import save_grid
from danqing.metrics import (
    INCEPTION_RESIZE,
    Inception,
    SmallSampleWarning,
    extract,
    fid,
    kid,
)
from danqing.pixels import from_uint8, to_uint8
from danqing.protocol import generators

AE = "danqing/weights/emoji-autoencoder"
RECIPE = ["--steps", "40000", "--batch-size", "32", "--train.lr=4e-4", "--train.warmup=500",
          "--train.ema_decay=0.9995", "--train.ckpt_every=500", "--train.sample_every=0"]


def heldout_features(inception: Inception, out: Path) -> tuple[np.ndarray, list[str]]:
    """Inception features of the held-out images (cached in ``out`` per data fingerprint) and their captions."""
    ds = load_dataset(DataConfig("emoji-heldout", size=64, channels=3), progress=False)
    cache = out / f"real-{ds.fingerprint[:12]}-{inception.name}.npy"
    if cache.is_file():
        return np.load(cache), list(ds.captions)
    f = extract(inception, batches(torch.from_numpy(np.array(ds.images))), progress=True, total=len(ds))
    np.save(cache, f)
    return f, list(ds.captions)


def paint(pipe, prompts: list[str], batch: int = 50) -> torch.Tensor:
    """uint8 (N, 3, 64, 64): image i from prompts[i] with seed i, at the model's defaults."""
    c = pipe.model.config
    out = []
    t0 = time.perf_counter()
    with torch.autocast("cpu", torch.bfloat16, enabled=cpu_has_bf16()):
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            cond = pipe.encode_prompt(chunk)
            x = pipe.model.sample(len(chunk), cond, generator=generators(range(i, i + len(chunk))))
            out.append(to_uint8(x))
            done = i + len(chunk)
            print(f"\r  painted {done}/{len(prompts)} ({(time.perf_counter() - t0) / done:.2f} s/image)",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"  {c.sampler}, {c.steps} steps, guidance {c.guidance:g}: {time.perf_counter() - t0:.0f} s")
    return torch.cat(out)


def batches(images: torch.Tensor, size: int = 50):
    for i in range(0, len(images), size):
        yield images[i:i + size]


def score(name: str, model: str, prompts: list[str], real_f: np.ndarray, inception: Inception, out: Path) -> dict:
    print(f"{name}: {model}")
    pipe = danqing.load(model)
    fake = paint(pipe, prompts)
    save_grid(from_uint8(fake[:64]), out / f"{name}-samples.png", nrow=8)
    fake_f = extract(inception, batches(fake), progress=True, total=len(fake))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)      # said once, in the report's header
        f = fid(fake_f, real_f)
    k, k_std = kid(fake_f, real_f, subset_size=1000)
    row = {"name": name, "model": model, "n": len(fake), "fid": f, "kid": k, "kid_std": k_std,
           "sampler": pipe.model.config.sampler, "steps": pipe.model.config.steps,
           "guidance": pipe.model.config.guidance}
    print(f"  FID {f:.2f}   KID {k * 1e3:.2f} ± {k_std * 1e3:.2f} (×1e-3)")
    return row


def train_for(minutes: float, out: Path, backbone: str, threads: int) -> str:
    cmd = [str(Path(sys.executable).with_name("danqing")), "train", "t2i", "--preset", "emoji", "--data", "emoji",
           "--autoencoder", AE, "--out", str(out), *RECIPE, f"--train.time_limit={minutes}",
           f"--train.threads={threads}", f"--model.backbone={backbone}"]
    print(" ".join(cmd[1:]))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    step = (out / "latest").read_text().strip()
    print(f"  {backbone}: {(time.perf_counter() - t0) / 60:.1f} min, last checkpoint {step}")
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="a bundled name or run folder (repeatable)")
    ap.add_argument("--baseline", type=float, metavar="MINUTES", help="train danqing and diffusers this long each")
    ap.add_argument("-n", type=int, default=2000, help="samples per model")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training and painting (0: torch's default)")
    ap.add_argument("--out", default="runs/bench-t2i-quality")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    inception = Inception()
    real_f, captions = heldout_features(inception, out)
    prompts = [captions[i % len(captions)] for i in range(a.n)]
    print(f"real: {len(real_f)} held-out images; samples: {a.n} per model; features: {inception.name}, "
          f"resize {INCEPTION_RESIZE}; FID with fewer than 2048 images is biased upwards: compare KID")

    models = [(Path(m).name if "/" in m else m, m) for m in a.model]
    if a.baseline:
        models += [(bb, train_for(a.baseline, out / bb, bb, a.threads)) for bb in ("unet", "diffusers")]
    rows = [score(name, m, prompts, real_f, inception, out) for name, m in models]

    print(f"\n{'model':24s}{'n':>6s}{'FID':>9s}{'KID ×1e3':>16s}")
    for r in rows:
        print(f"{r['name']:24s}{r['n']:6d}{r['fid']:9.2f}{r['kid'] * 1e3:9.2f} ± {r['kid_std'] * 1e3:4.2f}")
    if a.baseline:
        d, p = rows[-2], rows[-1]
        print(f"danqing / diffusers after {a.baseline:g} min each: FID {d['fid'] / p['fid']:.2f}×, "
              f"KID {d['kid'] / p['kid']:.2f}× (below 1: danqing better)")
    (out / "report.json").write_text(json.dumps(rows, indent=1))
    print(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    main()
