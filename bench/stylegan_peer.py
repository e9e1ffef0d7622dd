"""A peer StyleGAN2 for comparison: lucidrains' ``stylegan2-pytorch==1.9.0`` (PyPI), trained by its own ``Trainer``
on the CPU for a fixed number of wall-clock minutes on a folder of pictures; then -n pictures into OUT/pictures.

    python bench/stylegan_peer.py --data runs/bench-fewshot/data/digits-1000 --minutes 5 -n 1000 \\
        --out runs/bench-peer --image-size 32
    danqing eval --generated runs/bench-peer/pictures --reference REFERENCE --metrics fid,kid

The peer is never a dependency of danqing: this script makes its own virtual environment (--venv, default
runs/peer-venv, 5.5 GB, 1.5 minutes here) on first use with torch 2.14.1 and torchvision 0.29.1, the imports
the peer really needs, and the peer itself with --no-deps (not ``aim``, a heavy logging package used only with
log=True, nor ``contrastive_learner``, used only with cl_reg=True).  A small runner program (RUNNER below) runs
in that environment and writes OUT/result.json, which this script prints as one line of JSON: {"steps",
"seconds", "images_per_second", "pictures", ...}, where images_per_second counts the real pictures the
discriminator is shown (steps x batch size).

Settings: image size --image-size, batch 32, gradient_accumulate_every 1, the learning rate and TTUR multiplier
of the peer's command line (2e-4, 1.5), its other Trainer defaults (style mixing 0.9, hinge loss, R1 every 4
steps, path length after 5,000 steps), its augmentation off unless --aug-prob > 0 (--aug-types as the peer names
them: translation, cutout, color).  The size is the peer's default (--capacity 16, --fmap-max 512, --latent-dim
512, --style-depth 8: at 32 px 5.3 M parameters in S+G and 15.3 M in D, some 20 and 50 times danqing's digits
preset); --capacity 4 --fmap-max 128 is the peer near danqing's size (G 0.36 M + the 2.1 M mapping network, D
0.96 M).  Keep the latent at 512: with a small one (64, 2 mapping layers) the peer's mapping network (lr_mul 0.1)
starts with pictures almost independent of the latent and they stay so (checked for 200 steps).  --fmap-max
must not cap the generator (the peer builds its EMA generator without fmap_max, so the two would not match).

Data: the peer trains unconditional RGB pictures (it converts every picture to RGB, so class folders are just
folders); when every training picture is single-channel the output is saved as grayscale (luma), unless
--keep-rgb.  Its data set reads *.jpg, *.jpeg and *.png (lower case) in the folder and every sub-folder; other
files are skipped (the count is printed).

Pictures: --generator auto (default) draws from the peer's EMA generator (GAN.SE/GAN.GE) only once the peer has
started its moving average: its Trainer updates the EMA from step 20,000 on and, up to then, merely copies the
live weights into GE at steps 2, 1002, 2002...; a CPU run of minutes never gets there, so auto takes the live
generator (GAN.S/GAN.G) below 20,000 steps (the EMA copy would be up to 1,000 steps stale).  No truncation
(psi 1, like danqing at psi 1), via the peer's own ``Trainer.generate_truncated``; noise and latents drawn by the
peer's ``noise_list``/``image_noise``, seeded with --seed.

Benchmark-only shims so that the peer runs on a CPU at all (in RUNNER; the peer's code is not changed):
  1. ``sys.modules['aim']`` is an empty stub module: the peer imports aim at module level, and touches it only
     when Trainer(log=True).
  2. ``torch.cuda.is_available`` returns True while the peer is imported (it asserts a GPU at import time), and
     is put back right after, so that the DataLoader's pin_memory=True (hard-coded in set_data_src) sees no GPU
     and does nothing.  Nothing on the training path calls it again.
  3. ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return self: the peer moves its modules, latents, noise
     and batches with ``.cuda(rank)``.  Nothing else on the path is CUDA-only: fp16 (apex, absent) stays off,
     no DDP (is_ddp False), torch.cuda.empty_cache only in calculate_fid (not used).
  4. The Trainer's periodic preview grids (``evaluate``, every 100 steps below 2,500) are switched off on this
     instance, as danqing's own runs use sample_every=0; checkpoints stay as the peer does them (step 0 and every
     --save-every steps, also what its NaN recovery reloads), in OUT/peer-work.
  5. num_workers=0 (the peer's default is one loader process per core), torch.set_num_threads(--threads).
The training loop is the peer's command-line loop: ``retry_call(trainer.train, tries=3, exceptions=NanException)``
until the minutes are up (the model is built before the clock starts).

Exit status 2, with one line, on bad input: a missing data folder, no pictures, fewer pictures than a batch, an
unreadable picture, an image size that is not a power of two.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

PEER = "stylegan2-pytorch==1.9.0"
PEER_ENV = ["torch==2.14.1", "torchvision==0.29.1", "einops>=0.8.0", "kornia", "fire", "retry", "tqdm", "numpy",
            "pillow", "vector-quantize-pytorch==0.1.0"]
EXTS = (".jpg", ".jpeg", ".png")          # the peer's Dataset: Path(folder).glob('**/*.{ext}'), case-sensitive
ROOT = Path(__file__).resolve().parent.parent

# the program run by the peer environment's python: argv[1] is the JSON of the settings
RUNNER = r'''
import json, random, sys, time, types
from pathlib import Path
a = json.loads(sys.argv[1])
import numpy as np
import torch
from PIL import Image
torch.set_num_threads(a["threads"])
torch.set_num_interop_threads(1)

sys.modules["aim"] = types.ModuleType("aim")                   # shim 1: the logger, used only with log=True
real_is_available = torch.cuda.is_available
torch.cuda.is_available = lambda: True                         # shim 2: the import-time GPU assert ...
import stylegan2_pytorch.stylegan2_pytorch as peer
from retry.api import retry_call
torch.cuda.is_available = real_is_available                    # ... and no more (pin_memory sees no GPU)
torch.Tensor.cuda = lambda self, *args, **kwargs: self        # shim 3: .cuda(rank) stays on the CPU
torch.nn.Module.cuda = lambda self, *args, **kwargs: self

torch.manual_seed(a["seed"]); np.random.seed(a["seed"]); random.seed(a["seed"])
out = Path(a["out"])
t = peer.Trainer(name="bench", base_dir=str(out / "peer-work"), image_size=a["image_size"],
                 network_capacity=a["capacity"], fmap_max=a["fmap_max"], latent_dim=a["latent_dim"],
                 style_depth=a["style_depth"], batch_size=a["batch"], gradient_accumulate_every=1,
                 lr=2e-4, ttur_mult=1.5, num_workers=0, save_every=a["save_every"], evaluate_every=10**9,
                 trunc_psi=1.0, aug_prob=a["aug_prob"], aug_types=a["aug_types"], log=False)
t.clear()                                                      # no checkpoint of an earlier run to reload
t.evaluate = lambda *args, **kwargs: None                      # shim 4: no preview grids
t.set_data_src(a["data"])
t.init_GAN()                                                   # built before the clock starts
n_params = sum(p.numel() for m in (t.GAN.S, t.GAN.G) for p in m.parameters())
d_params = sum(p.numel() for p in t.GAN.D.parameters())
print(f"peer {peer.__version__}: {len(t.dataset)} pictures, S+G {n_params:,} and D {d_params:,} parameters",
      file=sys.stderr, flush=True)

t0 = time.perf_counter()
deadline, report = t0 + 60 * a["minutes"], t0 + 30
while time.perf_counter() < deadline:
    retry_call(t.train, tries=3, exceptions=peer.NanException)  # the peer's command-line loop
    if time.perf_counter() >= report:
        report += 30
        print(f"step {t.steps}: G {t.g_loss:.3f} D {t.d_loss:.3f}", file=sys.stderr, flush=True)
seconds = time.perf_counter() - t0

which = a["generator"]
if which == "auto":
    which = "ema" if t.steps > 20000 else "raw"                # the peer's EMA starts at step 20,000
S, G = (t.GAN.SE, t.GAN.GE) if which == "ema" else (t.GAN.S, t.GAN.G)
t.GAN.eval()
torch.manual_seed(a["seed"] + 1)
pictures = out / "pictures"
pictures.mkdir(parents=True, exist_ok=True)
for old in pictures.glob("*.png"):
    old.unlink()
done = 0
while done < a["n"]:                                           # chunks of 500 keep the memory small
    k = min(500, a["n"] - done)
    latents = peer.noise_list(k, G.num_layers, G.latent_dim, device=0)
    noise = peer.image_noise(k, G.image_size, device=0)
    images = t.generate_truncated(S, G, latents, noise, trunc_psi=1.0)     # in [0, 1], N x 3 x H x W
    assert torch.isfinite(images).all(), "the peer painted NaN"
    arr = images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, x in enumerate(arr):
        img = Image.fromarray(x)                                  # H x W x 3: RGB
        (img.convert("L") if a["gray"] else img).save(pictures / f"{done + i:05d}.png")
    done += k

steps = t.steps
result = {"peer": peer.__version__, "steps": steps, "seconds": round(seconds, 1),
          "images_per_second": round(steps * a["batch"] / seconds, 2), "pictures": a["n"], "generator": which,
          "batch_size": a["batch"], "image_size": a["image_size"], "threads": a["threads"],
          "parameters": {"S+G": n_params, "D": d_params}}
(out / "result.json").write_text(json.dumps(result) + "\n")
'''


def fail(msg: str) -> None:
    print(f"stylegan_peer: error: {msg}", file=sys.stderr)
    sys.exit(2)


def run(cmd: list) -> None:
    r = subprocess.run([str(c) for c in cmd])
    if r.returncode:
        print(f"stylegan_peer: failed ({r.returncode}): {' '.join(map(str, cmd))}", file=sys.stderr)
        sys.exit(1)


def ensure_venv(venv: Path) -> Path:
    """The peer's own environment, made once (a marker file says it is complete)."""
    py, marker = venv / "bin" / "python", venv / ".peer-ready"
    if marker.is_file():
        return py
    t0 = time.perf_counter()
    print(f"making the peer environment {venv} (once: 5.5 GB, a minute or two)", flush=True)
    if not py.exists():
        run([sys.executable, "-m", "venv", venv])
    run([py, "-m", "pip", "install", "--no-input", *PEER_ENV])
    run([py, "-m", "pip", "install", "--no-input", "--no-deps", PEER])
    marker.write_text(" ".join([*PEER_ENV, PEER]) + "\n")
    print(f"peer environment ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a folder of pictures (sub-folders too)")
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall time")
    ap.add_argument("--out", default="runs/bench-peer", help="OUT/pictures, OUT/result.json, OUT/peer-work")
    ap.add_argument("-n", type=int, default=1000, help="pictures to paint")
    ap.add_argument("--image-size", type=int, default=32, help="a power of two")
    ap.add_argument("--capacity", type=int, default=16, help="the peer's network_capacity")
    ap.add_argument("--fmap-max", type=int, default=512, help="the peer's cap on channels")
    ap.add_argument("--latent-dim", type=int, default=512, help="the peer's latent (and style) size")
    ap.add_argument("--style-depth", type=int, default=8, help="the peer's mapping network layers")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--aug-prob", type=float, default=0.0, help="the peer's DiffAugment probability (0: off)")
    ap.add_argument("--aug-types", default="translation,cutout", help="the peer's DiffAugment types")
    ap.add_argument("--generator", choices=["auto", "ema", "raw"], default="auto",
                    help="auto: the EMA generator once the peer has started it (step 20,000), else the live one")
    ap.add_argument("--keep-rgb", action="store_true", help="save RGB even when the training data is grayscale")
    ap.add_argument("--save-every", type=int, default=2000, help="the peer's checkpoint interval (steps)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the peer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", help="the --reference of the printed scoring command (default: --data)")
    ap.add_argument("--venv", default=str(ROOT / "runs" / "peer-venv"), help="the peer's own environment")
    a = ap.parse_args()

    data = Path(a.data)
    if not data.is_dir():
        fail(f"no data folder {data}")
    files = [p for p in data.rglob("*") if p.is_file()]
    seen = [p for p in files if p.suffix in EXTS]
    if not seen:
        fail(f"no .jpg, .jpeg or .png pictures in {data}")
    if len(seen) < a.batch_size:
        fail(f"{len(seen)} pictures in {data}, fewer than a batch ({a.batch_size}): the peer's loader drops them")
    if a.image_size < 8 or a.image_size & (a.image_size - 1):
        fail(f"--image-size {a.image_size} is not a power of two of at least 8")
    if a.n < 1 or a.minutes <= 0:
        fail("-n and --minutes must be positive")
    g_max = a.capacity * a.image_size // 2                    # the peer's widest generator layer
    if a.fmap_max < g_max:
        fail(f"--fmap-max {a.fmap_max} caps the generator ({g_max} channels at --capacity {a.capacity}): the "
             "peer's EMA generator would not match it")
    skipped = len(files) - len(seen)
    gray = not a.keep_rgb and all(_channels(p) == 1 for p in seen)
    print(f"{len(seen)} pictures the peer reads in {data}" + (f" ({skipped} other files skipped)" if skipped else "")
          + ("; grayscale, so the output is saved as grayscale" if gray else ""), flush=True)

    py = ensure_venv(Path(a.venv))
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").unlink(missing_ok=True)
    settings = {"data": str(data.resolve()), "out": str(out), "minutes": a.minutes, "n": a.n,
                "image_size": a.image_size, "capacity": a.capacity, "fmap_max": a.fmap_max,
                "latent_dim": a.latent_dim, "style_depth": a.style_depth, "batch": a.batch_size,
                "aug_prob": a.aug_prob,
                "aug_types": [s for s in a.aug_types.split(",") if s], "generator": a.generator, "gray": gray,
                "save_every": a.save_every, "threads": a.threads, "seed": a.seed}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), PYTHONNOUSERSITE="1")
    with tempfile.NamedTemporaryFile("w", suffix="_peer_runner.py", delete=False) as f:
        f.write(RUNNER)
    try:
        r = subprocess.run([str(py), f.name, json.dumps(settings)], env=env, cwd=out)
    finally:
        os.unlink(f.name)
    if r.returncode or not (out / "result.json").is_file():
        print(f"stylegan_peer: the peer's run failed ({r.returncode})", file=sys.stderr)
        sys.exit(1)
    print((out / "result.json").read_text().strip())
    print(f"score: danqing eval --generated {out / 'pictures'} --reference {a.reference or data} --metrics fid,kid")


def _channels(path: Path) -> int:
    try:
        with Image.open(path) as img:
            return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else len(img.getbands())
    except OSError:
        fail(f"cannot read the picture {path}")


if __name__ == "__main__":
    main()
