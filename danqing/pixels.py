"""Pixels <-> model tensors: uint8 0..255 and floats in [-1, 1], the range every danqing model reads and paints.

Kept free of heavy imports (torch only) so that data loading, metrics and painting all convert with the same
two lines.  ``to_uint8`` rounds to nearest (ties to even, as ``torch.round`` does): what a PNG of the tensor
holds, and what Inception-based scores expect of generated pictures.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["from_uint8", "to_uint8"]


def from_uint8(x: Tensor) -> Tensor:
    """Pixel values 0..255 (uint8, or floats on that scale) -> float32 in [-1, 1], same shape and device."""
    return x.float() / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    """A tensor in [-1, 1] (values outside are clamped) -> uint8 0..255 with round-to-nearest, same shape and
    device; detached."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
