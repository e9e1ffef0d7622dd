"""What a model costs before it is built: its parameters and the memory of a training step.

A setting typed by hand (``--model.channels=1000000000``, a ``mult`` of 10,000 levels, ``image_size=10**6``)
can ask for terabytes, and building the model would allocate them before anything could object.  Here the
model is built on PyTorch's meta device (shapes without storage), its parameters counted, and the
activations of one training step measured by running its first phase's loss on a meta batch of one picture
(every module's outputs, the tensors autograd keeps for the backward pass, roughly).  Settings that cannot be
built at all (negative widths, ...) are refused with the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from .config import ConfigError
from .protocol import Batch, Cond, FamilySpec, Trainable

SHARE = 0.8                    # of the machine's memory that one model may plan to use


@dataclass(frozen=True)
class Cost:
    params: int                          # parameters
    activations: int | None              # bytes of module outputs for one training picture (None: unmeasured)
    picture: int = 0                     # bytes of one training picture as float32: the least a step holds

    def training_bytes(self, batch_size: int) -> int:
        """fp32 weights, gradients, Adam's two moments and the EMA, plus the activations of a batch."""
        return 5 * 4 * self.params + max(self.activations or 0, self.picture) * batch_size


def memory_bytes() -> int:
    """The machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def meta_model(fam: FamilySpec, config: Any) -> nn.Module:
    """The model of ``config`` with no storage behind its tensors; ConfigError when it cannot be built."""
    try:
        with torch.device("meta"):
            return fam.Model(config)
    except ConfigError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError, ArithmeticError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"the {fam.name} model cannot be built from these settings: {reason}") from None


def _meta_batch(fam: FamilySpec, config: Any) -> Batch:
    f = fam.facts(config)
    images = torch.empty(1, f.image_channels, f.image_size, f.image_size, device="meta").uniform_(-1, 1)
    labels = torch.zeros(1, dtype=torch.long, device="meta") if f.num_classes else None
    cond = None
    if f.text is not None:
        cond = Cond(text=torch.empty(1, f.text.tokens, f.text.dim, device="meta"),
                    text_mask=torch.ones(1, f.text.tokens, dtype=torch.bool, device="meta"),
                    pooled=torch.empty(1, f.text.dim, device="meta"))
    roles = {r.name: Batch(images.clone()) for r in fam.roles}
    return Batch(images, labels, cond=cond, roles=roles)


def cost(fam: FamilySpec, config: Any) -> Cost:
    """Parameters and activations per training picture of ``config``'s model, measured on the meta device."""
    model = meta_model(fam, config)
    params = sum(p.numel() for p in model.parameters())
    total = [0]

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    f = fam.facts(config)
    picture = 4 * f.image_channels * f.image_size ** 2
    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.device("meta"):
            trainable = cast(Trainable, model)
            trainable.loss(_meta_batch(fam, config), trainable.phases()[0].name, 0, {})
        activations: int | None = total[0]
    except NotImplementedError:            # the loss reads a value back (a random crop): the meta device has none
        activations = None
    except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "meta" in reason or "scalarType" in reason:     # what the meta device cannot run (e.g. autocast)
            activations = None
        elif "overflow" in reason:
            raise ConfigError(f"the {fam.name} model's tensors would be too large to exist at these settings "
                              f"({reason})") from None
        else:
            raise ConfigError(f"the {fam.name} model cannot train at these settings: {reason}") from None
    finally:
        for h in hooks:
            h.remove()
    return Cost(params, activations, picture)


def check_training(fam: FamilySpec, config: Any, batch_size: int) -> Cost:
    """Refuse a training run that would not fit in this machine's memory, saying what it would need."""
    c = cost(fam, config)
    need, have = c.training_bytes(batch_size), memory_bytes()
    if need > SHARE * have:
        per = f"; {_gib(c.activations)} of activations a picture" if c.activations else ""
        raise ConfigError(f"this {fam.name} model would need about {_gib(need)} to train at batch {batch_size} "
                          f"({c.params / 1e6:,.1f}M parameters{per}) but the machine has {_gib(have)}; choose "
                          "smaller --model.* settings or --batch-size")
    return c


def check_loading(fam: FamilySpec, config: Any) -> None:
    """Refuse to build a model (e.g. from a hand-edited config.json) whose weights alone would not fit."""
    params = sum(p.numel() for p in meta_model(fam, config).parameters())
    if 4 * params > SHARE * memory_bytes():
        raise ConfigError(f"this {fam.name} model has {params / 1e6:,.0f}M parameters ({_gib(4 * params)}) and "
                          f"would not fit in this machine's {_gib(memory_bytes())}; its config.json was edited or "
                          "belongs to a bigger machine")
