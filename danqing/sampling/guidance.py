"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around any
conditional model call.

``cfg(model, scale, cond, uncond)`` turns ``model(*args, cond)`` into
``guided(*args)``.  The same wrapper serves

* a diffusion denoiser: ``model(x, sigma, cond) -> D`` becomes the 2-argument
  ``guided(x, sigma)`` that the samplers in ``danqing.sampling.samplers`` take;
* an autoregressive model: ``model(tokens, cond) -> logits`` becomes
  ``guided(tokens) -> guided logits``.

Batching rule for the arguments of ``guided``: the batch size B is dim 0 of
the first argument (which must be a tensor with at least one dimension).
Every tensor argument (positional or keyword) whose dim 0 equals B is doubled
to ``torch.cat([a, a])`` (2B rows: conditional half first, then the
unconditional half); 0-dim tensors, tensors of another length, and
non-tensors (floats, ints, None, ...) are passed through unchanged.  The
model is called once on the doubled batch with ``cond.cat(uncond)`` and its
output (2B, ...) is split back in two.  State that the model keeps between
calls (e.g. a key/value cache) must already be sized for 2B by the caller.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable

import torch
from torch import Tensor

from danqing.protocol import Cond


def _double(value: Any, batch: int) -> Any:
    """(B, ...) tensor -> (2B, ...) by repetition; anything else unchanged."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


def _cond_batch(cond: Cond) -> int | None:
    """Dim 0 of the first set field of a condition, None if no field is set."""
    for f in fields(cond):
        value = getattr(cond, f.name)
        if value is not None:
            return len(value)
    return None


def combine(cond_out: Tensor, uncond_out: Tensor, scale: float) -> Tensor:
    """Ho & Salimans 2022, eq. 6 with guidance weight w = scale - 1:
    (1 + w) c - w u = u + scale (c - u).  Shapes (B, ...) -> (B, ...).

    Applied to D (x0-prediction) it equals guiding eps, because
    D = x - sigma * eps is affine in eps with coefficients shared by both halves;
    applied to logits it is guidance on log-probabilities up to a constant."""
    return uncond_out + scale * (cond_out - uncond_out)


def cfg(model: Callable[..., Tensor], scale: float, cond: Cond, uncond: Cond) -> Callable[..., Tensor]:
    """Wrap ``model(*args, cond) -> out`` into ``guided(*args, **kwargs) -> out``.

    scale = 1 calls ``model(*args, cond)`` directly (no extra cost); any other
    scale makes one batched call with the arguments doubled (see the module
    docstring) and returns ``u + scale * (c - u)``; scale = 0 is the
    unconditional model.  ``cond`` and ``uncond`` are batched like the first
    argument (B rows each); ``uncond`` typically holds the family's null label.
    """
    scale = float(scale)
    both = cond.cat(uncond) if scale != 1.0 else None

    def guided(*args: Any, **kwargs: Any) -> Tensor:
        if not args or not isinstance(args[0], Tensor) or args[0].dim() == 0:
            raise TypeError("guided(...) needs a batched tensor (B, ...) as its first argument")
        if scale == 1.0:
            return model(*args, cond, **kwargs)
        batch = args[0].shape[0]
        for name, c in (("cond", cond), ("uncond", uncond)):
            size = _cond_batch(c)
            if size is not None and size != batch:
                raise ValueError(f"{name} has batch {size} but the input has batch {batch}: pass one row per image")
        out = model(*(_double(a, batch) for a in args), both,
                    **{k: _double(v, batch) for k, v in kwargs.items()})
        cond_out, uncond_out = out.chunk(2)
        return combine(cond_out, uncond_out, scale)

    return guided
