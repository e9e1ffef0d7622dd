"""Reading state dicts that other projects wrote (pretrained VGG19, Inception and EfficientNet weights).

Kept apart from ``checkpoint`` on purpose: checkpoints build models of every family, so anything a family
itself imports (the VGG19 of style transfer) must read its weights from a module below that.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file


def read_state_dict(path: str | Path, what: str,
                    error: type[Exception] = ValueError) -> Mapping[str, torch.Tensor]:
    """A state-dict file someone else wrote (``torch.save`` read with ``weights_only=True``, or safetensors);
    a ``{"state_dict": ...}`` wrapper is unwrapped.  Anything else raises ``error`` saying what ``what`` needs."""
    p = Path(path)
    advice = f"give a {what} state dict saved with torch.save(model.state_dict(), path) or as safetensors"
    try:
        raw = load_file(str(p)) if p.suffix == ".safetensors" else torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise error(f"cannot read {what} weights from {p} ({reason}); {advice}") from None
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]                              # a training checkpoint's wrapper
    if not isinstance(raw, Mapping):
        raise error(f"{p} holds a {type(raw).__name__}, not a state dict; {advice}")
    return raw
