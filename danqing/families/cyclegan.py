"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks")
in the danqing protocol: unpaired pictures, A <-> B.  The networks are in ``danqing.nn.translate``.

Data: the run's main data (``--data``) is domain B; the unpaired role ``a`` is domain A, drawn in an order of its
own.  In a batch, ``batch.images`` is B and ``batch.roles["a"].images`` is A, both (B, C, S, S) in [-1, 1].

Two ResNet generators G: A -> B and F: B -> A (sub-module ``g``: ``g.ab``, ``g.ba``), two PatchGANs D_A, D_B
(sub-module ``d``: ``d.a`` judges domain-A pictures, ``d.b`` domain-B ones).  The full objective (eq. 3):
    L(G, F, D_A, D_B) = L_GAN(G, D_B, A, B) + L_GAN(F, D_A, B, A) + lambda L_cyc(G, F)
    L_cyc = E_a[||F(G(a)) - a||_1] + E_b[||G(F(b)) - b||_1]                       (eq. 2), lambda = 10
plus the identity loss 0.5 lambda (E_b[||G(b) - b||_1] + E_a[||F(a) - a||_1]) (sec. 5.2, after Taigman et al.
2017).  L_GAN is least-squares (sec. 4, Mao et al. 2017), and the discriminators see fakes from a history of the
last 50 generated pictures (sec. 4, Shrivastava et al. 2017; ``HistoryPool``), saved in every checkpoint.

Phases: ``g`` (both generators, one optimiser) then ``d`` (both discriminators), as the reference code steps them;
the ``d`` phase takes the fakes ``g`` made through ``carry``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..nn.translate import (NORMS, TRAIN_DEFAULTS, UNPAIRED_A, HistoryPool, PatchGAN, ResnetGenerator, check_input,
                            ls_d_loss, ls_g_loss, output_facts)
from ..options import option
from ..protocol import Batch, Cond, FamilySpec, Generators, Phase, Translates


@dataclass(frozen=True)
class Config:
    image_size: int = 64                 # a multiple of 4 (the generators are fully convolutional)
    image_channels: int = 3              # domain B
    input_channels: int = 3              # domain A
    g_channels: int = 64                 # the paper's c7s1-64
    g_blocks: int = 9                    # residual blocks: 6 at 128 px, 9 at 256 px (appendix 7.2)
    d_channels: int = 64
    d_max_channels: int = 512
    d_layers: int = 0                    # PatchGAN stride-2 layers (0: the 70/256 receptive field, patch_layers)
    norm: str = "instance"               # instance or batch (see danqing.nn.translate)
    cycle_weight: float = 10.0           # lambda (sec. 4)
    identity_weight: float = 0.5         # times lambda (sec. 5.2); 0 = off
    pool_size: int = 50                  # the history of generated pictures per discriminator (0 = off)


@dataclass(frozen=True)
class Options:
    reverse: bool = option(False, "translate the other way, from domain B (the run's --data) to A")


def cycle_loss(g_ab: Callable[[Tensor], Tensor], g_ba: Callable[[Tensor], Tensor], a: Tensor, b: Tensor,
               fake_b: Tensor | None = None, fake_a: Tensor | None = None) -> Tensor:
    """L_cyc (eq. 2): E||F(G(a)) - a||_1 + E||G(F(b)) - b||_1 for pictures a, b (B, C, S, S); ``fake_b`` = G(a)
    and ``fake_a`` = F(b) when already computed.  Zero when both generators are the identity."""
    fake_b = g_ab(a) if fake_b is None else fake_b
    fake_a = g_ba(b) if fake_a is None else fake_a
    return (g_ba(fake_b).float() - a.float()).abs().mean() + (g_ab(fake_a).float() - b.float()).abs().mean()


class Pair(nn.Module):
    """Two networks under one name, so one phase (one optimiser) trains both."""

    def __init__(self, first: nn.Module, second: nn.Module, names: tuple[str, str]):
        super().__init__()
        self.add_module(names[0], first)
        self.add_module(names[1], second)


class CycleGAN(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        c = config
        if c.image_size < 8 or c.image_size % 4:
            raise ValueError(f"CycleGAN needs an image_size that is a multiple of 4 and at least 8, got {c.image_size}")
        if c.norm not in NORMS:
            raise ValueError(f"unknown norm {c.norm!r}; choose {' or '.join(NORMS)}")
        if min(c.g_channels, c.d_channels, c.d_max_channels, c.input_channels) < 1 or c.g_blocks < 0:
            raise ValueError("the channel widths must be at least 1 and g_blocks not negative")
        if min(c.cycle_weight, c.identity_weight, c.pool_size, c.d_layers) < 0:
            raise ValueError("cycle_weight, identity_weight, pool_size and d_layers must not be negative")
        if c.identity_weight and c.input_channels != c.image_channels:
            raise ValueError("the identity loss feeds each generator its own output domain, so it needs "
                             "input_channels == image_channels; set --model.identity_weight=0")
        self.config = config
        ca, cb = c.input_channels, c.image_channels
        self.g = Pair(ResnetGenerator(ca, cb, c.g_channels, c.g_blocks, c.norm),
                      ResnetGenerator(cb, ca, c.g_channels, c.g_blocks, c.norm), ("ab", "ba"))
        self.d = Pair(PatchGAN(ca, c.image_size, c.d_channels, c.d_max_channels, c.d_layers, c.norm),
                      PatchGAN(cb, c.image_size, c.d_channels, c.d_max_channels, c.d_layers, c.norm), ("a", "b"))
        self.pool_a = HistoryPool(c.pool_size, ca, c.image_size)       # past F(b), shown to D_A
        self.pool_b = HistoryPool(c.pool_size, cb, c.image_size)       # past G(a), shown to D_B

    @property
    def ab(self) -> ResnetGenerator:
        return cast(ResnetGenerator, self.g.get_submodule("ab"))

    @property
    def ba(self) -> ResnetGenerator:
        return cast(ResnetGenerator, self.g.get_submodule("ba"))

    def phases(self) -> list[Phase]:
        return [Phase("g", "g"), Phase("d", "d")]

    def _sides(self, batch: Batch) -> tuple[Tensor, Tensor]:
        if "a" not in batch.roles:
            raise ValueError("CycleGAN trains on two sets of pictures: give domain A as the data role a "
                             "(--role a=DIR); --data is domain B")
        return batch.roles["a"].images, batch.images

    def loss(self, batch: Batch, phase: str, step: int = 0, carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        c, carry = self.config, {} if carry is None else carry
        a, b = self._sides(batch)
        d_a, d_b = self.d.get_submodule("a"), self.d.get_submodule("b")
        if phase == "g":
            fake_b, fake_a = self.ab(a), self.ba(b)                         # G(a), F(b): (B, C, S, S)
            carry["fakes"] = (fake_a.detach(), fake_b.detach())
            gan = ls_g_loss(d_b(fake_b)) + ls_g_loss(d_a(fake_a))
            cyc = cycle_loss(self.ab, self.ba, a, b, fake_b, fake_a)
            out = {"gan": gan.detach(), "cycle": cyc.detach()}
            total = gan + c.cycle_weight * cyc
            if c.identity_weight:
                idt = (self.ab(b).float() - b.float()).abs().mean() + (self.ba(a).float() - a.float()).abs().mean()
                total = total + c.identity_weight * c.cycle_weight * idt
                out["identity"] = idt.detach()
            return {"loss": total, **out}
        if phase == "d":
            if "fakes" not in carry:                                        # the d phase run on its own
                with torch.no_grad():
                    carry["fakes"] = (self.ba(b), self.ab(a))
            fake_a, fake_b = carry["fakes"]
            shown_a, shown_b = self.pool_a(fake_a), self.pool_b(fake_b)     # the history (sec. 4)
            loss_a, loss_b = ls_d_loss(d_a(a), d_a(shown_a)), ls_d_loss(d_b(b), d_b(shown_b))
            return {"loss": loss_a + loss_b, "d_a": loss_a.detach(), "d_b": loss_b.detach()}
        raise ValueError(f"unknown phase {phase!r}; CycleGAN has {[p.name for p in self.phases()]}")

    @torch.no_grad()
    def translate(self, cond: Cond, *, generator: Generators = None, options: Options | None = None) -> Tensor:
        """``cond.image`` (B, input_channels, S, S) in [-1, 1], domain A -> domain B (B, image_channels, S, S); with
        ``options.reverse``, domain B -> A.  S: a multiple of 4.  Deterministic: ``generator`` is not used."""
        o = options if options is not None else Options()
        if cond.image is None:
            raise ValueError("CycleGAN translates a picture: give it as cond.image")
        net = self.ba if o.reverse else self.ab
        x = cond.image.to(next(self.parameters()).device, torch.float32)
        check_input(x, self.config.image_channels if o.reverse else self.config.input_channels, net.multiple,
                    "this CycleGAN model" + (" (reversed)" if o.reverse else ""))
        return net(x).float().clamp(-1, 1)


Model = CycleGAN

PRESETS: dict[str, Config] = {
    # conformance tests: 16 px, 19,328 parameters (2 generators of 8,811, 2 PatchGANs of 853); a pool of 4 so
    # that it fills, and then swaps, within the tests' few steps
    "tiny": Config(image_size=16, g_channels=4, g_blocks=1, d_channels=4, d_max_channels=8, pool_size=4),
    # 64-px emoji pictures on a 2-core CPU: 4,206,856 parameters (2 generators of 1,966,915: c7s1-32, d64, d128,
    # 6 x R128, the paper's 128-px depth at half its width; 2 PatchGANs of 136,513); about 1 s a step at batch 4
    "emoji": Config(image_size=64, g_channels=32, g_blocks=6, d_channels=64, d_max_channels=128),
    "paper": Config(image_size=256),                 # 28,298,120
}


ROLES = (UNPAIRED_A,)

SPEC = FamilySpec("cyclegan", Config, CycleGAN, PRESETS, "CycleGAN: unpaired translation A <-> B, two ResNet "
                  "generators, cycle consistency, LSGAN with a history pool", TRAIN_DEFAULTS, Options,
                  frozenset({Translates}), output_facts, ema_module="g", roles=ROLES)
