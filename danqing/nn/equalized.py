"""StyleGAN's layers: the equalized learning rate (Karras et al. 2018, PGGAN sec. 4.1) and the modulated,
demodulated convolution (Karras et al. 2020, StyleGAN2 eq. 1-3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Linear(nn.Module):
    """y = x (W * lr_mult / sqrt(in))^T + b * lr_mult, W ~ N(0, 1 / lr_mult^2) (PGGAN sec. 4.1)."""

    def __init__(self, cin: int, cout: int, lr_mult: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mult)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mult))
        self.gain, self.lr_mult = lr_mult / math.sqrt(cin), lr_mult

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.gain, self.bias * self.lr_mult)


class Conv(nn.Module):
    """An equalized 2-D convolution (same padding), optionally halving the resolution first (average pool)."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain, self.down = 1 / math.sqrt(cin * k * k), down

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)


def lrelu(x: Tensor) -> Tensor:
    """Leaky ReLU times sqrt(2): keeps unit variance through the layer (StyleGAN's activation gain)."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def modulated_conv(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, fused: bool = True) -> Tensor:
    """StyleGAN2 eq. 1-3.  x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> (B, O, H, W).

    w'_ijk = s_i w_ijk (eq. 1); with ``demodulate``, w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + 1e-8) (eq. 3).
    fused: one grouped convolution, picture b with its own weights: (1, B*I, H, W) with (B*O, I, k, k) in B
    groups.  Not fused: the same numbers from a shared convolution of the modulated input, scaled by each
    output channel's demodulation factor afterwards; about twice as fast for a training batch on a CPU under
    bf16, so it is what training uses (as the reference implementation does).
    """
    b, i, h, w = x.shape
    o, _, k, _ = weight.shape
    if not fused:
        out = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=k // 2)
        if demodulate:
            scale = ((weight[None] * styles[:, None, :, None, None]).square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt()
            out = out * scale[:, :, None, None].to(out.dtype)                 # (B, O) per picture and channel
        return out
    wt = weight[None] * styles[:, None, :, None, None]                       # (B, O, I, k, k)
    if demodulate:
        wt = wt * (wt.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    out = F.conv2d(x.reshape(1, b * i, h, w), wt.reshape(b * o, i, k, k).to(x.dtype), padding=k // 2, groups=b)
    return out.reshape(b, o, h, w)
