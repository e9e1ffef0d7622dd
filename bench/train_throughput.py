"""Training throughput: danqing's UNet vs diffusers' UNet2DModel at matched size.

Both networks (~1M parameters, 32x32x3, batch 64) run the same training step
(forward, MSE loss, backward, AdamW) in one process, interleaved round by
round so that both see the same machine load; fp32 and bf16 autocast.  Prints
images/s, the ratio danqing/diffusers, and danqing's achieved GFLOP/s (FLOPs of
one step counted by torch's FlopCounterMode) against a bf16 matmul measured in
the same run.

    python bench/train_throughput.py [--rounds 5] [--batch 64] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from danqing.families.diffusion import PRESETS
from danqing.nn.unet import UNet


def danqing_net() -> torch.nn.Module:
    c = PRESETS["small"]
    return UNet(3, 3, resolution=32, channels=c.channels, mult=c.mult, num_res=c.num_res, attn=c.attn)


def diffusers_net(widths: tuple[int, int, int] = (24, 48, 48)) -> torch.nn.Module:
    """UNet2DModel with 3 levels of two res blocks, attention at 8x8, GroupNorm of 4 channels a group.

    widths (24, 48, 48): the usual constant-width-at-depth layout at ~0.9M parameters (the peer);
    widths (16, 32, 64): danqing's own layout, to separate design from implementation.
    """
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=widths,
                       layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=4,
                       attention_head_dim=32)


def step_fn(net: torch.nn.Module, kind: str, batch: int):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 32, 32)
    t = torch.rand(batch)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = net(x, t) if kind == "danqing" else net(x, t * 999).sample
        loss = (out.float() - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(step, bf16: bool, n: int) -> float:
    step(bf16)                                            # warm-up (allocations, oneDNN primitives)
    t0 = time.perf_counter()
    for _ in range(n):
        step(bf16)
    return (time.perf_counter() - t0) / n


def matmul_gflops(size: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9


def step_flops(net: torch.nn.Module, batch: int) -> int:
    x, t = torch.randn(batch, 3, 32, 32), torch.rand(batch)
    with FlopCounterMode(display=False) as fc:
        (net(x, t) - x).square().mean().backward()
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    torch.set_flush_denormal(True)                        # as danqing's trainer does; applies to both
    nets = {"danqing": danqing_net(), "diffusers": diffusers_net(), "diffusers-same-layout": diffusers_net((16, 32, 64))}
    x = torch.randn(1, 3, 32, 32)
    for k, n in nets.items():
        with FlopCounterMode(display=False) as fc:
            n(x, torch.rand(1))
        print(f"{k:22s} {sum(p.numel() for p in n.parameters()) / 1e6:.3f}M parameters, "
              f"{fc.get_total_flops() / 1e6:.0f} MFLOP/image forward")
    steps = {k: step_fn(n, "danqing" if k == "danqing" else "diffusers", a.batch) for k, n in nets.items()}
    times: dict[tuple[str, bool], list[float]] = {}
    peaks = []
    for r in range(a.rounds):
        peaks.append(matmul_gflops())
        for bf16 in (False, True):
            for k in nets:                                 # interleaved: every round times both
                times.setdefault((k, bf16), []).append(time_steps(steps[k], bf16, a.steps))
    flops = step_flops(nets["danqing"], a.batch)
    peak = statistics.median(peaks)
    print(f"\nbatch {a.batch}, {torch.get_num_threads()} threads, {a.rounds} rounds x {a.steps} steps, medians")
    print(f"bf16 matmul 2048^2: {peak:.0f} GFLOP/s")
    print(f"{'':6s}{'danqing img/s':>14s}{'diffusers':>11s}{'ratio':>7s}{'diffusers same layout':>23s}{'ratio':>7s}"
          f"{'danqing GFLOP/s':>17s}{'% of matmul':>13s}")
    for bf16 in (False, True):
        td, tf, ts = (statistics.median(times[(k, bf16)]) for k in nets)
        gf = flops / td / 1e9
        print(f"{'bf16' if bf16 else 'fp32':6s}{a.batch / td:14.1f}{a.batch / tf:11.1f}{tf / td:6.2f}x"
              f"{a.batch / ts:23.1f}{ts / td:6.2f}x{gf:17.1f}{100 * gf / peak:12.1f}%")


if __name__ == "__main__":
    main()
