"""Differentiable augmentation of everything a GAN's discriminator sees, for small data sets.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same random
colour, translation and cutout transforms are applied to real and generated pictures, in the discriminator's
and in the generator's loss, so the generator learns the data and not the augmentations (their Fig. 4 and eq. 3).

ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"): each transform is
applied to each picture with a probability p that a controller adjusts from how much the discriminator
overfits, r_t = E[sign D(real)] (their eq. 1): p rises when r_t is above the target (0.6), falls below it, by
at most ``batch * interval / (speed_kimg * 1000)`` per adjustment.  Here the transforms are DiffAugment's
differentiable ones plus horizontal flips; the paper's pipeline has more (rotations, fractional translation,
isotropic and anisotropic scaling, hue, image-space filtering and noise).

All randomness comes from torch's global RNG, which the trainer seeds, forks and stores in every checkpoint.
Pictures are (B, C, H, W) in [-1, 1].
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout", "flip")


def _chosen(x: Tensor, p: float) -> Tensor:
    """Which pictures a transform applies to, (B, 1, 1, 1) in {0, 1}; all of them for p = 1."""
    if p >= 1:
        return torch.ones(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
    return (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p).to(x.dtype)


def color(x: Tensor, p: float = 1.0) -> Tensor:
    """Brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), as in DiffAugment (scaled for
    pictures in [-1, 1]: brightness shifts by twice theirs).  Pictures not chosen are returned exactly."""
    b = x.shape[0]
    keep = _chosen(x, p).bool()
    y = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5) * 2
    mean = y.mean(dim=1, keepdim=True)
    y = mean + (y - mean) * torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = mean + (y - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5)
    return torch.where(keep, y, x)


def translation(x: Tensor, p: float = 1.0, ratio: float = 0.125) -> Tensor:
    """Shift every picture by whole pixels, up to ``ratio`` of its side each way, filling with zeros."""
    b, _, h, w = x.shape
    keep = _chosen(x, p)[:, 0, 0, 0].long()
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b,), device=x.device) * keep
    dx = torch.randint(-sw, sw + 1, (b,), device=x.device) * keep
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(-1, h)      # (B, H): source row, -1/h = off
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))                                                  # index 0 and h+1 are zeros
    idx_r = (rows + 1)[:, None, :, None].expand(-1, x.shape[1], -1, w + 2)
    y = padded.gather(2, idx_r)                                                      # (B, C, H, W+2)
    idx_c = (cols + 1)[:, None, None, :].expand(-1, x.shape[1], h, -1)
    return y.gather(3, idx_c)


def cutout(x: Tensor, p: float = 1.0, ratio: float = 0.5) -> Tensor:
    """Zero a square of ``ratio`` of the side at a random place in every picture."""
    b, _, h, w = x.shape
    keep = _chosen(x, p)
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + 1 - ch % 2, (b, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + 1 - cw % 2, (b, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = ((ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)).to(x.dtype)[:, None]  # (B, 1, H, W)
    return x * (1 - hole * keep)


def flip(x: Tensor, p: float = 0.5) -> Tensor:
    """Mirror left to right."""
    keep = _chosen(x, p)
    return keep * x.flip(-1) + (1 - keep) * x


OPS = {"color": color, "translation": translation, "cutout": cutout, "flip": flip}


def augment(x: Tensor, policy: tuple[str, ...], p: float = 1.0) -> Tensor:
    """The transforms of ``policy`` in order, each applied to each picture with probability ``p``."""
    if p <= 0 or not policy:
        return x
    for name in policy:
        x = OPS[name](x, p)
    return x


def parse_policy(text: str) -> tuple[str, ...]:
    """"color,translation,cutout" -> ("color", "translation", "cutout"); ValueError naming an unknown one."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def ada_step(p: float, r_t: float, *, target: float = 0.6, batch: int, interval: int, speed_kimg: float) -> float:
    """ADA's controller (Karras et al. 2020, sec. 3): move p towards keeping r_t = E[sign D(real)] at ``target``,
    by at most batch * interval / (speed_kimg * 1000), the rate that could take p from 0 to 1 in ``speed_kimg``
    thousand real pictures.  Clamped to [0, 1]."""
    delta = (1.0 if r_t > target else -1.0 if r_t < target else 0.0) * batch * interval / (speed_kimg * 1000)
    return min(1.0, max(0.0, p + delta))


class Augmenter(torch.nn.Module):
    """What a GAN puts in front of its discriminator: ``policy`` applied with probability p, fixed at 1
    (DiffAugment) or, with ``ada``, adjusted every ``interval`` steps from the signs of D(real).  p and the
    running sum of signs are buffers, so checkpoints keep them and a resumed run continues exactly."""

    def __init__(self, policy: str, ada: bool = False, target: float = 0.6, interval: int = 4,
                 speed_kimg: float = 100.0):
        super().__init__()
        self.policy = parse_policy(policy)
        if not self.policy:
            raise ValueError("give the augmentations, e.g. color,translation,cutout")
        if interval < 1 or speed_kimg <= 0 or not 0 < target < 1:
            raise ValueError("ada needs interval >= 1, speed_kimg > 0 and a target in (0, 1)")
        self.ada, self.target, self.interval, self.speed_kimg = ada, target, interval, speed_kimg
        self.register_buffer("p", torch.tensor(0.0 if ada else 1.0))
        self.register_buffer("signs", torch.zeros(2))             # sum of sign D(real), count

    def forward(self, x: Tensor) -> Tensor:
        return augment(x, self.policy, float(self.p))

    @torch.no_grad()
    def observe(self, real_logits: Tensor, step: int) -> None:
        """Count the signs of D(real); on every ``interval``-th step, adjust p (ADA only)."""
        if not self.ada:
            return
        self.signs += torch.stack([real_logits.detach().float().sign().sum(), torch.tensor(float(len(real_logits)))
                                   .to(self.signs.device)])
        if (step + 1) % self.interval == 0 and self.signs[1] > 0:
            r_t = float(self.signs[0] / self.signs[1])
            batch = float(self.signs[1]) / self.interval
            self.p.fill_(ada_step(float(self.p), r_t, target=self.target, batch=int(batch), interval=self.interval,
                                  speed_kimg=self.speed_kimg))
            self.signs.zero_()


# ---------------------------------------------------------------- the GAN losses every family shares

def see(aug: Augmenter | None, x: Tensor) -> Tensor:
    """What the discriminator sees of a picture, real or generated alike."""
    return x if aug is None else aug(x)


def d_loss(d: torch.nn.Module, aug: Augmenter | None, real: Tensor, fake: Tensor, condition: Any,
           step: int) -> dict[str, Tensor]:
    """The discriminator's non-saturating logistic loss (Goodfellow et al. 2014, sec. 3) on augmented pictures,
    ``condition`` passed to ``d`` as its second argument; ADA counts the signs of D(real) here."""
    real_logit, fake_logit = d(see(aug, real), condition), d(see(aug, fake), condition)
    out = {"loss": F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean(),
           "d_real": real_logit.detach().float().mean(), "d_fake": fake_logit.detach().float().mean()}
    if aug is not None:
        aug.observe(real_logit, step)
        out["augment_p"] = aug.p.detach().clone()
    return out


def r1_loss(d: torch.nn.Module, aug: Augmenter | None, real: Tensor, condition: Any, gamma: float,
            every: int) -> dict[str, Tensor]:
    """R1 = gamma/2 E||grad_x D(x)||^2 on reals (Mescheder et al. 2018, eq. 9), times the lazy interval
    (StyleGAN2 sec. 3.1); in fp32, as second derivatives need."""
    with torch.autocast(real.device.type, enabled=False):
        x = real.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(d(see(aug, x), condition).sum(), x, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
    return {"loss": 0.5 * gamma * every * r1, "r1": r1.detach()}
