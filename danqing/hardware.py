"""What the hardware can do: the device to use and whether bf16 autocast pays off on it.

Shared by training, sampling and the painter.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ConfigError


def cpu_has_bf16() -> bool:
    """True when the CPU runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def use_bf16(mode: str, device: torch.device) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: this torch sees no CUDA GPU; use --device cpu (or auto)")
    return dev
