"""The optimisation pieces of the training loop: the learning-rate schedule, one AdamW optimiser per module
that the phases name (with each phase's ``Optim`` settings), one phase's step, and the EMA of the weights."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .config import ConfigError, TrainConfig
from .protocol import Batch, Optim, Phase, Trainable


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then the decay to min_lr_ratio * lr at cfg.steps: a cosine, or (``linear``)
    the full rate for the first half of the remaining steps and a straight line after (CycleGAN's 100 epochs
    at the full rate and 100 decaying linearly to zero, Zhu et al. 2017 sec. 4)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    left = 0.5 * (1 + math.cos(math.pi * t)) if cfg.decay == "cosine" else min(1.0, 2 * (1 - t))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * left)


# ---------------------------------------------------------------- optimisers

def module_optims(phases: list[Phase]) -> dict[str, Optim]:
    """The Optim of every module the phases name; phases sharing a module must agree on it."""
    out: dict[str, Optim] = {}
    for ph in phases:
        if ph.every < 1:
            raise ConfigError(f"phase {ph.name!r} runs every {ph.every} steps; it must be at least 1")
        if out.setdefault(ph.module, ph.optim) != ph.optim:
            raise ConfigError(f"phases naming module {ph.module or '(the whole model)'!r} share one optimiser but "
                              f"give it different settings ({out[ph.module]} and {ph.optim})")
    return out


def build_optimisers(model: nn.Module, phases: list[Phase],
                     tc: TrainConfig) -> tuple[dict[str, torch.optim.Optimizer], dict[str, list[nn.Parameter]]]:
    """One AdamW per module the phases name, over its trainable parameters (frozen ones are never touched)."""
    settings = module_optims(phases)
    owned = {m: [p for p in (model.get_submodule(m) if m else model).parameters() if p.requires_grad]
             for m in settings}
    optims = {}
    for m, o in settings.items():
        betas = o.betas or tc.betas
        optims[m] = torch.optim.AdamW(owned[m], lr=tc.lr * o.lr_mult,
                                      betas=(betas[0] ** o.beta_power, betas[1] ** o.beta_power),
                                      weight_decay=tc.weight_decay if o.weight_decay is None else o.weight_decay)
    return optims, owned


def run_phase(model: Trainable, ph: Phase, opt: torch.optim.Optimizer, params: list[nn.Parameter],
              live: list[nn.Parameter], batch: Batch, lr: float, clip: float, bf16: bool, dev: torch.device,
              step: int, carry: dict[str, Any]) -> dict[str, float]:
    """One phase of one step: only the phase's module collects gradients; its loss under bf16 autocast when
    enabled; the gradient norm clipped; the optimiser stepped at ``lr`` times the phase's multiplier."""
    mine = {id(p) for p in params}
    for p in live:
        p.requires_grad_(id(p) in mine)
    for g in opt.param_groups:
        g["lr"] = lr * ph.optim.lr_mult
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        out = model.loss(batch, ph.name, step, carry)
    out["loss"].float().backward()
    logs = {f"{ph.name}/{k}": float(v.detach()) for k, v in out.items()}
    if clip:
        logs[f"{ph.name}/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
    opt.step()
    for p in live:
        p.requires_grad_(True)
    return logs


# ---------------------------------------------------------------- EMA

def ema_keys(model: nn.Module, module: str = "") -> list[str]:
    """State-dict keys averaged by the EMA: float weights and buffers of ``module`` (the spec's ``ema_module``,
    e.g. the GAN generator; "" = the whole model), except frozen parameters (they never change)."""
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    return [k for k, v in model.state_dict().items()
            if v.is_floating_point() and k not in frozen and (not module or k.startswith(module + "."))]


@torch.no_grad()
def ema_update(ema: dict[str, Tensor], model: nn.Module, step: int, decay: float) -> None:
    d = min(decay, (1 + step) / (10 + step))         # short warm-up so early samples are not stale
    state = model.state_dict()
    for k, v in ema.items():
        v.lerp_(state[k].detach().float(), 1 - d)


class swap_in:
    """Context manager: temporarily load EMA weights into the model (for sample grids)."""

    def __init__(self, model: nn.Module, ema: dict[str, Tensor]):
        self.model, self.ema = model, ema

    def __enter__(self):
        state = self.model.state_dict()
        self.saved = {k: state[k].clone() for k in self.ema}
        self.was_training = self.model.training
        self.model.load_state_dict({k: v.to(state[k].dtype) for k, v in self.ema.items()}, strict=False)
        self.model.eval()

    def __exit__(self, *exc):
        self.model.load_state_dict(self.saved, strict=False)
        self.model.train(self.was_training)
