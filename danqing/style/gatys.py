"""Neural style transfer by optimisation: Gatys, Ecker & Bethge, "Image Style Transfer Using
Convolutional Neural Networks" (CVPR 2016).

The picture x starts as the content photo c and is changed by gradient descent
so that its VGG19 features keep the content's while its feature correlations
(Gram matrices) take the style's.  For a layer l with N_l channels and M_l
positions, F_l (N_l, M_l) are its activations and G_l = F_l F_l^T:

    L_content = mean over (N, M) of (F_l(x) - F_l(c))^2                     at relu4_2
    E_l       = 1 / (4 N_l^2 M_l^2) * sum_ij (G_l(x) - G_l(s))_ij^2          (the paper's eq. 4)
    L_style   = sum_k beta_k sum_l w_l E_l(x, s_k)                          relu1_1 ... relu5_1, w_l = 1/5
    L_tv      = mean of squared differences of neighbouring pixels
    L         = alpha L_content + beta L_style + gamma L_tv

``gram`` already divides G by M_l, so E_l is ``mean((gram(x) - gram(s))**2) / 4``.
Several styles are blended by a weighted sum of their Gram losses (beta_k sum to 1).

**Layer scales.**  The paper used a VGG whose weights were rescaled so that
every filter's mean activation over images and positions is one.  danqing
loads the Oxford weights as released, where layers differ ~20x in activation
(and ~10^4x in Gram magnitude), so every layer's features are divided by
their mean over the content image at the start of each scale: the same
balancing, per layer rather than per filter.  With it the per-layer weights mean
what they say.

**Optimisers.**  L-BFGS with a strong-Wolfe line search (``torch.optim.LBFGS``;
``steps`` counts its iterations, each one or more function evaluations) or
Adam (one evaluation per step).  The picture is optimised unconstrained and
clipped to [-1, 1] between scales and at the end.

**Coarse to fine.**  Large outputs start at a fraction of the size
(``scales``; by default half size for outputs whose long side exceeds 256 px),
and each result is upsampled to start the next scale.  Coarse scales run
``steps`` iterations and the last one ``steps // 2``: the coarse result already
has the style's large structures, the full size only refines.

Everything here works on tensors in [-1, 1], one picture at a time; images and
colour handling live in ``transfer.py`` and ``color.py``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .vgg import STYLE_LAYERS, VGG19, StyleError, gram

__all__ = ["CONTENT_LAYER", "Objective", "Progress", "Settings", "content_loss", "default_scales", "gatys",
           "iteration_budgets", "style_layer_loss", "style_loss", "tv_loss"]

CONTENT_LAYER = "relu4_2"


@dataclass(frozen=True)
class Settings:
    steps: int = 200                                   # L-BFGS iterations or Adam steps at the coarsest scale
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float = 0.0                                    # 0: 1.0 for L-BFGS, 0.02 for Adam (pixels are in [-1, 1])
    content_weight: float = 1.0                        # alpha
    style_weight: float = 100.0                        # beta
    tv_weight: float = 10.0                            # gamma
    content_layer: str = CONTENT_LAYER
    style_layers: tuple[str, ...] = STYLE_LAYERS
    layer_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    scales: tuple[float, ...] = ()                     # () = default_scales(size); else e.g. (0.5, 1.0)
    history: int = 50                                  # L-BFGS memory
    bf16: bool = False                                 # VGG under bf16 autocast (losses stay fp32)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise StyleError(f"steps must be at least 1, got {self.steps}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise StyleError(f"optimizer must be lbfgs or adam, got {self.optimizer!r}")
        if len(self.layer_weights) != len(self.style_layers):
            raise StyleError(f"{len(self.layer_weights)} layer weights for {len(self.style_layers)} style layers "
                             f"{self.style_layers}; give one per layer")
        if min(self.content_weight, self.style_weight, self.tv_weight, *self.layer_weights) < 0:
            raise StyleError("loss weights must not be negative")
        if self.scales and (sorted(self.scales) != list(self.scales) or not 0 < self.scales[-1] <= 1
                            or self.scales[0] <= 0):
            raise StyleError(f"scales must increase within (0, 1], e.g. (0.5, 1.0); got {self.scales}")


@dataclass
class Progress:
    """One loss evaluation, handed to the callback (weighted terms; ``total`` is what is minimised)."""

    scale: int                      # 0-based index of the current scale
    scales: int
    size: tuple[int, int]           # (H, W) being optimised
    evaluation: int                 # loss evaluations so far at this scale (L-BFGS may evaluate several per step)
    content: float
    style: float
    tv: float
    total: float
    seconds: float                  # since the run started
    budgets: tuple[int, ...] = ()   # the L-BFGS/Adam iterations planned at each scale (``iteration_budgets``)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Iterations planned over all scales."""
        return sum(self.budgets)

    @property
    def step(self) -> int:
        """Progress on the ``steps`` scale: earlier scales' budgets plus this scale's evaluations, capped at its
        budget (L-BFGS may evaluate the loss more than once an iteration)."""
        return sum(self.budgets[:self.scale]) + min(self.evaluation, self.budgets[self.scale])


# ---------------------------------------------------------------- pure losses

def content_loss(f: Tensor, p: Tensor) -> Tensor:
    """Features of the picture f and of the content p, (B, C, H, W) each -> (B,): mean squared difference."""
    return (f.float() - p.float()).square().mean((1, 2, 3))


def style_layer_loss(g: Tensor, a: Tensor) -> Tensor:
    """E_l for Grams g (B, C, C) and target a (1 or B, C, C), both divided by M = H*W -> (B,).

    sum_ij (G - A)^2 / (4 N^2 M^2) with G = M g: the 1/M^2 cancels, leaving mean_ij (g - a)^2 / 4.
    """
    return (g - a).square().mean((1, 2)) / 4


def style_loss(grams: dict[str, Tensor], targets: Sequence[dict[str, Tensor]], style_weights: Sequence[float],
               layer_weights: dict[str, float]) -> Tensor:
    """sum_k beta_k sum_l w_l E_l(grams[l], targets[k][l]) -> (B,).  grams: {layer: (B, C, C)}."""
    total = None
    for beta, target in zip(style_weights, targets):
        for name, w in layer_weights.items():
            term = beta * w * style_layer_loss(grams[name], target[name])
            total = term if total is None else total + term
    return total


def tv_loss(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B,): mean squared difference of vertical and of horizontal neighbours, summed."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).square().mean((1, 2, 3))
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).square().mean((1, 2, 3))
    return dh + dw


def default_scales(size: tuple[int, int]) -> tuple[float, ...]:
    """Half size first for outputs whose long side exceeds 256 px, else one scale."""
    return (0.5, 1.0) if max(size) > 256 else (1.0,)


# ---------------------------------------------------------------- one scale

class Objective:
    """The weighted losses of a picture at one size: holds the content's features and the styles' Grams."""

    def __init__(self, vgg: VGG19, content: Tensor, styles: Sequence[Tensor], style_weights: Sequence[float],
                 settings: Settings):
        self.vgg, self.s = vgg, settings
        self.layers = tuple(dict.fromkeys([*settings.style_layers, settings.content_layer]))
        self.layer_weights = dict(zip(settings.style_layers, settings.layer_weights))
        self.style_weights = [float(w) for w in style_weights]
        with torch.no_grad():
            feats = self._features(content)
            # per-layer scale: the content's mean activation (see the module docstring), (1, 1, 1, 1) each
            self.norm = {n: f.float().mean().clamp_min(1e-6) for n, f in feats.items()}
            self.content = feats[settings.content_layer].float() / self.norm[settings.content_layer]
            self.targets = []
            for style in styles:
                fs = self._features(style)
                self.targets.append({n: gram(fs[n].float() / self.norm[n]) for n in settings.style_layers})

    def _features(self, x: Tensor) -> dict[str, Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.s.bf16):
            return self.vgg(x, self.layers)

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """Picture (B, 3, H, W) -> {"content", "style", "tv", "total"}: weighted terms, each (B,)."""
        feats = self._features(x)
        grams = {n: gram(feats[n].float() / self.norm[n]) for n in self.s.style_layers}
        c = self.s.content_weight * content_loss(feats[self.s.content_layer].float() / self.norm[self.s.content_layer],
                                                 self.content)
        st = self.s.style_weight * style_loss(grams, self.targets, self.style_weights, self.layer_weights)
        tv = self.s.tv_weight * tv_loss(x.float())
        return {"content": c, "style": st, "tv": tv, "total": c + st + tv}


class _Stop(Exception):
    """The callback asked to stop."""


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _optimise(objective: Objective, x0: Tensor, steps: int, s: Settings,
              report: Callable[[dict[str, Tensor]], bool]) -> Tensor:
    """Minimise objective(x) from x0; ``report`` gets each evaluation's losses and returns True to stop.

    L-BFGS optimises u with x = x0 + k u, k = numel / 20.  torch's L-BFGS sizes its first step as
    1 / |gradient|_1, which for a 512-px picture moves pixels by ~1e-6: below bf16's resolution, so no
    decrease is seen and the line search gives up.  In u, the first step moves a pixel by
    g_i / (20 mean |g|), about 1/20 of the pixel range; later steps are unchanged, since L-BFGS is
    invariant to a uniform scaling of its variables once it has curvature pairs.
    """
    x0 = x0.detach().clone(memory_format=torch.contiguous_format)
    k = x0.numel() / 20 if s.optimizer == "lbfgs" else 1.0
    u = torch.zeros_like(x0) if s.optimizer == "lbfgs" else x0.clone()
    u.requires_grad_(True)

    def picture() -> Tensor:
        return x0 + k * u if s.optimizer == "lbfgs" else u

    def evaluate() -> Tensor:
        losses = objective(picture())
        if report(losses):
            raise _Stop
        return losses["total"].sum()

    try:
        if s.optimizer == "lbfgs":
            opt = torch.optim.LBFGS([u], lr=s.lr or 1.0, max_iter=steps, max_eval=steps * 5 // 4 + 25,
                                    history_size=s.history, line_search_fn="strong_wolfe",
                                    tolerance_grad=1e-9, tolerance_change=1e-12)

            def closure() -> Tensor:
                opt.zero_grad(set_to_none=True)
                loss = evaluate()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam([u], lr=s.lr or 0.02)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                evaluate().backward()
                opt.step()
    except _Stop:
        pass
    with torch.no_grad():
        return picture().detach()


# ---------------------------------------------------------------- the method

def iteration_budgets(steps: int, scales: int) -> tuple[int, ...]:
    """Iterations at each of ``scales`` scales: ``steps`` each, the last of several ``steps // 2`` (at least 1)."""
    return tuple(steps if k < scales - 1 or scales == 1 else max(1, steps // 2) for k in range(scales))


def gatys(vgg: VGG19, content: Tensor, styles: Sequence[Tensor], style_weights: Sequence[float] | None = None,
          settings: Settings = Settings(), callback: Callable[[Progress], bool | None] | None = None,
          init: Tensor | None = None) -> Tensor:
    """Stylise ``content`` (1, 3, H, W) in [-1, 1] with ``styles`` [(1, 3, h_k, w_k)] -> (1, 3, H, W) in [-1, 1].

    Styles are used at the size given; at a coarser scale they shrink by the same factor as the content.
    ``style_weights`` (default equal) are normalised to sum to 1.  ``callback(progress)`` is called after
    every loss evaluation; returning True stops the run (the picture of that evaluation is returned).
    ``init`` replaces the content as the starting picture (any size; it is resized).
    """
    if content.ndim != 4 or content.shape[:2] != (1, 3):
        raise StyleError(f"content must be one RGB picture (1, 3, H, W), got {tuple(content.shape)}")
    if not styles:
        raise StyleError("give at least one style image")
    w = [1.0] * len(styles) if style_weights is None else [float(v) for v in style_weights]
    if len(w) != len(styles) or min(w) < 0 or not math.isfinite(sum(w)) or sum(w) <= 0:
        raise StyleError(f"style weights {w} do not fit {len(styles)} style image(s): give one non-negative "
                         "weight per style, not all zero")
    w = [v / sum(w) for v in w]
    size = tuple(content.shape[-2:])
    scales = settings.scales or default_scales(size)
    budgets = iteration_budgets(settings.steps, len(scales))
    start = time.perf_counter()
    x = content if init is None else init
    stopped = False
    for k, scale in enumerate(scales):
        hw = (max(16, round(size[0] * scale)), max(16, round(size[1] * scale)))
        target = _resize(content, hw)
        shrunk = [_resize(s, (max(16, round(s.shape[-2] * scale)), max(16, round(s.shape[-1] * scale))))
                  for s in styles]
        objective = Objective(vgg, target, shrunk, w, settings)
        count = 0

        def report(losses: dict[str, Tensor], k: int = k, hw: tuple[int, int] = hw) -> bool:
            nonlocal count, stopped
            count += 1
            if callback is None:
                return False
            terms = (float(losses[n].detach().sum()) for n in ("content", "style", "tv", "total"))
            p = Progress(k, len(scales), hw, count, *terms, time.perf_counter() - start, budgets)
            stopped = bool(callback(p))
            return stopped

        x = _optimise(objective, _resize(x, hw), budgets[k], settings, report).clamp(-1, 1)
        if stopped:
            break
    return _resize(x, size)
