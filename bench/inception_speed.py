"""Inception feature extraction on the CPU: danqing's extractor against the plain reference, in one run.

    python bench/inception_speed.py [--n 500] [--rounds 3]

reference: the TF-FID TorchScript module as shipped, fp32, batch 50 (after the
           same TF1 bilinear resize to 299, which both need);
frozen:    the same module frozen and optimised for inference
           (torch.jit.freeze + optimize_for_inference: conv+BN folding, oneDNN layouts);
bf16:      the frozen module under bf16 autocast.

Prints images/s of each (median of --rounds, interleaved) and the FID between
emoji held-out and training images computed from each variant's features, so a
faster variant is used only where its FID differs negligibly.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from danqing.config import DataConfig
from danqing.data import load_dataset
from danqing.metrics import Inception, fid, resize_tf_bilinear


def variants() -> dict[str, tuple[torch.nn.Module, bool]]:
    ref = Inception().net
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(str(Inception().file)).eval()))
    return {"reference fp32": (ref, False), "frozen fp32": (frozen, False), "frozen bf16": (frozen, True)}


@torch.no_grad()
def run(net: torch.nn.Module, bf16: bool, images: torch.Tensor, batch: int = 50) -> np.ndarray:
    out = []
    for b in images.split(batch):
        x = (resize_tf_bilinear(b.float(), 299) - 128) / 128
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(net(x).float().double().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="images of each set")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    held = load_dataset(DataConfig("emoji-heldout", size=64), progress=False)
    train = load_dataset(DataConfig("emoji", size=64), progress=False)
    idx = np.linspace(0, len(train) - 1, a.n).round().astype(np.int64)
    x_held = torch.from_numpy(np.array(held.images[:a.n]))
    x_train = torch.from_numpy(np.take(train.images, idx, axis=0))
    nets = variants()
    for net, bf16 in nets.values():                                   # warm-up (oneDNN primitive creation)
        run(net, bf16, x_held[:50])
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(a.rounds):
        for k, (net, bf16) in nets.items():
            t0 = time.perf_counter()
            run(net, bf16, x_held)
            times[k].append(time.perf_counter() - t0)
    ref_time = statistics.median(times["reference fp32"])
    print(f"{len(x_held)} images of 64x64, batch 50, {torch.get_num_threads()} threads, median of {a.rounds}")
    print(f"{'variant':16s}{'images/s':>10s}{'speed-up':>10s}{'FID held-out vs train':>24s}")
    for k, (net, bf16) in nets.items():
        t = statistics.median(times[k])
        value = fid(run(net, bf16, x_held), run(net, bf16, x_train))
        print(f"{k:16s}{len(x_held) / t:10.1f}{ref_time / t:9.2f}x{value:24.3f}")


if __name__ == "__main__":
    main()
