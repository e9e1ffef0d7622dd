"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"), in plain PyTorch;
the networks are in ``danqing.nn.stylegan``.

Generator: a mapping network turns z (and a class) into a style vector w (sec. 2 of StyleGAN, Karras et al.
2019); the synthesis network starts from a learned 4x4 constant and, at every resolution, runs two 3x3
convolutions whose weights are modulated by an affine map of w and demodulated (StyleGAN2 eq. 1-3), adds
per-pixel noise scaled by a learned strength, and adds its own 1x1 "toRGB" output to the upsampled picture so
far (the skip generator, StyleGAN2 Fig. 7).  The modulated convolutions are grouped convolutions, one group per
picture: no custom CUDA or C++ op, so it runs wherever PyTorch does.  Upsampling is bilinear before the
convolution (the paper uses a transposed convolution and a [1,3,3,1] filter; the two play the same role).

Discriminator: residual (StyleGAN2 Fig. 7), average-pool downsampling, minibatch standard deviation at 4x4,
and a projection head for classes (Miyato & Koyama 2018) as in StyleGAN2-ADA.

Every layer uses the equalized learning rate (PGGAN sec. 4.1): weights are drawn from N(0, 1) and scaled at run
time by 1/sqrt(fan_in); the mapping network's learning rate is 0.01 of the rest.

Training (phases): ``d`` and ``g`` with the non-saturating logistic loss; ``d_reg``, a lazy R1 penalty every
``r1_every`` steps, and ``g_reg``, path-length regularisation every ``pl_every`` steps (StyleGAN2 sec. 3.2), both
with the optimiser adjusted for the interval (``protocol.lazy``); style-mixing regularisation (two z for one
picture with probability ``mixing``); the EMA of the generator.  The mean w is tracked for the truncation trick
(per class when conditional).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.augment import Augmenter, d_loss, r1_loss, see
from ..nn.stylegan import Discriminator, Generator
from .. import projection
from ..options import option
from ..protocol import (Batch, Cond, Distance, Facts, FamilySpec, Generates, Generators, Optim, Phase, Projects,
                        TextSpec, lazy, randn)

LAYERS = ("coarse", "middle", "fine")          # the style-mixing layer ranges: 4-8 px, 16-32 px, 64 px and up


@dataclass(frozen=True)
class Config:
    image_size: int = 32                 # a power of two >= 8
    image_channels: int = 3
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2              # StyleGAN2-ADA's small-data configurations use 2 (the paper 8)
    g_channels: int = 256                # width at 4x4, halved at each doubling of the resolution from 32x32 on
    d_channels: int = 256
    min_channels: int = 32
    num_classes: int = 0
    text_dim: int = 0                    # > 0: conditioned on the pooled prompt of this text encoder (MiniLM: 384)
    text_tokens: int = 32
    text_encoder: str = ""
    r1_gamma: float = 0.2                # StyleGAN2-ADA picks gamma by resolution: 0.01-1 for 32-128 px
    r1_every: int = 16
    pl_weight: float = 2.0               # StyleGAN2: 2 (0 = off)
    pl_every: int = 4
    mixing: float = 0.9                  # probability of style-mixing regularisation
    w_avg_beta: float = 0.995            # the tracked mean w for truncation
    augment: str = ""                    # what the discriminator's inputs go through (nn.augment): "" = nothing,
    ada: bool = False                    # e.g. "color,translation,cutout" (DiffAugment); with ada, p is adaptive
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0


@dataclass(frozen=True)
class Options:
    truncation: float = option(1.0, "truncation psi: 0 = the mean style, 1 = no truncation", lo=0.0, hi=1.0)
    mix_seed: int | None = option(None, "style mixing: a seed whose styles replace the mix_layers of every picture",
                                  lo=0, hi=2**63 - 1)
    mix_layers: str = option("fine", "style mixing: which styles the mix seed gives", choices=LAYERS)


# ---------------------------------------------------------------- the family

class StyleGAN(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        c = config
        if c.image_size < 8 or c.image_size & (c.image_size - 1):
            raise ValueError(f"StyleGAN needs a power-of-two image_size >= 8, got {c.image_size}")
        if min(c.z_dim, c.w_dim, c.mapping_layers, c.g_channels, c.d_channels, c.min_channels) < 1:
            raise ValueError("z_dim, w_dim, mapping_layers and the channel widths must be at least 1")
        self.config = config
        self.g, self.d = Generator(c), Discriminator(c)
        self.register_buffer("pl_mean", torch.zeros(()))          # path-length regularisation's running mean
        self.aug = Augmenter(c.augment, c.ada, c.ada_target, c.ada_interval, c.ada_kimg) if c.augment else None

    @property
    def num_ws(self) -> int:
        return self.g.synthesis.num_ws

    def phases(self) -> list[Phase]:
        c = self.config
        d_opt = lazy(c.r1_every) if c.r1_gamma > 0 else Optim()
        g_opt = lazy(c.pl_every) if c.pl_weight > 0 else Optim()
        out = [Phase("d", "d", optim=d_opt)]
        if c.r1_gamma > 0:
            out.append(Phase("d_reg", "d", every=c.r1_every, optim=d_opt))
        out.append(Phase("g", "g", optim=g_opt))
        if c.pl_weight > 0:
            out.append(Phase("g_reg", "g", every=c.pl_every, optim=g_opt))
        return out

    # ---------------------------------------------------------------- styles
    def _cond(self, labels: Tensor | None, text: Cond | None) -> Cond | None:
        """The class labels and pooled prompts the model reads (None when it reads neither)."""
        c = self.config
        if c.num_classes and labels is None:
            raise ValueError("this StyleGAN is class-conditional: give class labels (data with classes, or --class)")
        if c.text_dim and (text is None or text.pooled is None):
            raise ValueError("this StyleGAN paints from text: give a prompt (train it on captioned data)")
        if not c.num_classes and not c.text_dim:
            return None
        return Cond(labels=labels if c.num_classes else None,
                    pooled=text.pooled if c.text_dim and text is not None else None)

    def ws(self, z: Tensor, cond: Cond | None, truncation: float = 1.0) -> Tensor:
        """Styles (B, num_ws, w_dim) of z (B, z_dim): one w for every layer, pulled towards the mean w of each
        picture's class by ``truncation`` psi (w' = w_avg + psi (w - w_avg), StyleGAN sec. B)."""
        return self.truncate(self.g.mapping(z, cond), cond, truncation)[:, None].expand(-1, self.num_ws, -1)

    def truncate(self, w: Tensor, cond: Cond | None, psi: float) -> Tensor:
        """w (B, w_dim) or styles (B, num_ws, w_dim) pulled towards each picture's class mean: mean + psi (w - mean)."""
        if psi == 1.0:
            return w
        mean = self.g.mapping.mean(cond, len(w)).to(w.dtype)
        mean = mean if w.dim() == 2 else mean[:, None]
        return mean + psi * (w - mean)

    def mix_range(self, layers: str) -> range:
        """The style indices a mixing range covers: the layers in thirds, coarse to fine (the paper's 4-8, 16-32
        and 64-1024 px at 1024 px)."""
        third = math.ceil(self.num_ws / 3)
        i = LAYERS.index(layers)
        return range(i * third, min(self.num_ws, (i + 1) * third))

    def _layer_noise(self, n: int, generator: Generators, device: torch.device) -> list[Tensor]:
        return [randn((n, *shape), generator, device) for shape in self.g.synthesis.noise_shapes()]

    # ---------------------------------------------------------------- training
    def _fake(self, b: int, cond: Cond | None, device: torch.device, track: bool = False) -> tuple[Tensor, Tensor]:
        """Pictures from fresh z, with style mixing regularisation (StyleGAN sec. 3.1); returns (pictures, ws)."""
        c = self.config
        z = torch.randn(b, c.z_dim, device=device)
        w = self.g.mapping(z, cond)
        labels = None if cond is None else cond.labels
        if track:                                                  # the mean w, per class, for truncation
            with torch.no_grad():
                k = max(1, c.num_classes)
                index = labels if labels is not None else torch.zeros(b, dtype=torch.long, device=device)
                sums = torch.zeros(k, c.w_dim, device=device).index_add_(0, index, w.detach().float())
                counts = torch.bincount(index, minlength=k)[:, None]
                seen = counts[:, 0] > 0
                avg = self.g.mapping.w_avg
                avg[seen] = avg[seen].lerp(sums[seen] / counts[seen], 1 - c.w_avg_beta)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if c.mixing > 0 and float(torch.rand(())) < c.mixing:
            cut = int(torch.randint(1, self.num_ws, ()))
            ws[:, cut:] = self.g.mapping(torch.randn(b, c.z_dim, device=device), cond)[:, None]
        return self.g.synthesis(ws, self._layer_noise(b, None, device)), ws

    def loss(self, batch: Batch, phase: str, step: int = 0, carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        c = self.config
        real = batch.images
        b, dev = real.shape[0], real.device
        cond = self._cond(batch.labels, batch.cond)
        if phase == "d":
            with torch.no_grad():
                fake, _ = self._fake(b, cond, dev)
            return d_loss(self.d, self.aug, real, fake, cond, step)
        if phase == "d_reg":
            return r1_loss(self.d, self.aug, real, cond, c.r1_gamma, c.r1_every)
        if phase == "g":
            fake, _ = self._fake(b, cond, dev, track=True)
            return {"loss": F.softplus(-self.d(see(self.aug, fake), cond)).mean()}
        if phase == "g_reg":
            # StyleGAN2 eq. 4: E_{w,y} (||J_w^T y||_2 - a)^2, y ~ N(0, I) / sqrt(H W), a a running mean; half batch
            half = max(1, b // 2)
            with torch.autocast(dev.type, enabled=False):
                sub = None if cond is None else cond.rows(slice(0, half))
                fake, ws = self._fake(half, sub, dev)
                y = torch.randn_like(fake) / math.sqrt(fake.shape[-1] * fake.shape[-2])
                (grad,) = torch.autograd.grad((fake * y).sum(), ws, create_graph=True)
                lengths = grad.square().sum(2).mean(1).sqrt()                            # (half,)
                mean = self.pl_mean.lerp(lengths.detach().mean(), 0.01)
                self.pl_mean.copy_(mean)
                penalty = (lengths - mean).square().mean()
            return {"loss": penalty * c.pl_weight * c.pl_every, "pl_length": lengths.detach().mean()}
        raise ValueError(f"unknown phase {phase!r}; StyleGAN has {[p.name for p in self.phases()]}")

    # ---------------------------------------------------------------- painting
    @torch.no_grad()
    def noise(self, n: int, generator: Generators = None, size: int | None = None) -> Tensor:
        """The latent codes z (n, z_dim) that ``sample`` maps to pictures."""
        return randn((n, self.config.z_dim), generator, self.pl_mean.device)

    def _mixed(self, ws: Tensor, cond: Cond | None, o: Options) -> Tensor:
        """``ws`` (B, num_ws, w_dim) with the ``mix_layers`` styles of the seed ``mix_seed``, if one is given."""
        if o.mix_seed is None:
            return ws
        n = len(ws)
        other = randn((1, self.config.z_dim), [torch.Generator(ws.device.type).manual_seed(o.mix_seed)], ws.device)
        mixed = self.ws(other.expand(n, -1), cond, o.truncation)
        picked = list(self.mix_range(o.mix_layers))
        ws = ws.clone()
        ws[:, picked] = mixed[:, picked]
        return ws

    @torch.no_grad()
    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None, noise: Tensor | None = None,
               options: Options | None = None) -> Tensor:
        """n pictures in [-1, 1]; each picture's per-pixel noise comes from its generator after its z.
        ``options``: truncation psi, and style mixing with the styles of ``mix_seed`` in ``mix_layers``."""
        o = options if options is not None else Options()
        z = self.noise(n, generator) if noise is None else noise.to(self.pl_mean.device)
        wanted = self._wanted(cond, z.device)
        ws = self._mixed(self.ws(z, wanted, o.truncation), wanted, o)
        return self.g.synthesis(ws, self._layer_noise(n, generator, z.device)).float().clamp(-1, 1)

    def _wanted(self, cond: Cond | None, device: torch.device) -> Cond | None:
        wanted = self._cond(None if cond is None else cond.labels, cond)
        return None if wanted is None else wanted.to(device)

    # ---------------------------------------------------------------- projection
    spaces = ("w", "w+")            # one style for every layer (the StyleGAN2 projector), or one a layer

    def project(self, images: Tensor, cond: Cond | None = None, *, steps: int = 200, space: str = "",
                distance: Distance | None = None, generator: Generators = None,
                callback: Callable[..., None] | None = None) -> dict[str, Tensor]:
        """The styles and noise maps that paint ``images`` (B, C, S, S) in [-1, 1], found by the StyleGAN2
        projector's optimisation (see ``danqing.projection``): {"ws": (B, num_ws, w_dim), "noise.i": (B, 1, H, W)}.
        The search starts at the mean style of each picture's class; ``space`` "w" optimises one style for all
        layers, "w+" one a layer (closer reconstructions, edits that stray further from the model's pictures)."""
        space = space or self.spaces[0]
        if space not in self.spaces:
            raise ValueError(f"a StyleGAN projects into {' or '.join(self.spaces)}, not {space!r}")
        c, dev, n = self.config, self.pl_mean.device, len(images)
        target = images.to(dev).float()
        wanted = self._wanted(cond, dev)
        rng = generator if generator is None or isinstance(generator, torch.Generator) else generator[0]
        with torch.no_grad():                       # the spread of the styles, from 10,000 of them (appendix D)
            z = randn((10_000, c.z_dim), rng, dev)
            k = max(1, c.num_classes) if wanted is not None and wanted.labels is not None else 1
            spread = self.g.mapping(z, self._probe(wanted, k, 10_000)).float().var(0).sum().sqrt().item()
        start = self.g.mapping.mean(wanted, n).float()                              # (B, w_dim)
        w = start[:, None].repeat(1, 1 if space == "w" else self.num_ws, 1)
        maps = self._layer_noise(n, rng, dev)
        projection.search(lambda ws, noise: self.g.synthesis(ws.expand(-1, self.num_ws, -1), noise), w, maps,
                          target, steps=steps, distance=distance or projection.pixel_distance, spread=spread,
                          generator=rng, callback=callback)
        out = {"ws": w.detach().expand(-1, self.num_ws, -1).clone()}
        out.update({f"noise.{i}": m.detach() for i, m in enumerate(maps)})
        return out

    def _probe(self, wanted: Cond | None, k: int, n: int) -> Cond | None:
        """The condition of ``n`` probes: the classes in turn (or the first picture's prompt)."""
        if wanted is None:
            return None
        labels = None if wanted.labels is None else torch.arange(n, device=wanted.labels.device) % k
        pooled = None if wanted.pooled is None else wanted.pooled[:1].expand(n, -1)
        return Cond(labels=labels, pooled=pooled)

    @torch.no_grad()
    def render(self, latent: Mapping[str, Tensor], cond: Cond | None = None, *, options: Options | None = None,
               toward: Tensor | None = None, strength: Tensor | None = None) -> Tensor:
        """The pictures of a projected latent: its styles moved ``strength`` of the way (linearly, in W) to those
        of the codes ``toward`` (B, z_dim), truncated towards the class mean by psi, mixed with ``mix_seed``."""
        o = options if options is not None else Options()
        dev = self.pl_mean.device
        ws = latent["ws"].to(dev).float()
        n = len(ws)
        if ws.shape[1:] != (self.num_ws, self.config.w_dim):
            raise ValueError(f"the latent's styles are {tuple(ws.shape[1:])}, this model's "
                             f"({self.num_ws}, {self.config.w_dim}): it was projected with another model")
        maps = [latent[f"noise.{i}"].to(dev).float() for i in range(len(self.g.synthesis.convs))]
        wanted = self._wanted(cond, dev)
        if toward is not None:
            amount = torch.zeros(n, device=dev) if strength is None else strength.to(dev).float()
            ws = ws.lerp(self.ws(toward.to(dev), wanted), amount[:, None, None])
        ws = self.truncate(ws, wanted, o.truncation)
        return self.g.synthesis(self._mixed(ws, wanted, o), maps).float().clamp(-1, 1)

Model = StyleGAN

PRESETS: dict[str, Config] = {
    # conformance tests: every phase runs within a few steps, and ADA's p moves (a low target: it rises at the
    # first adjustment, so resuming must restore a p that is not 0)
    "tiny": Config(image_size=16, z_dim=16, w_dim=16, g_channels=16, d_channels=16, min_channels=8, num_classes=10,
                   r1_every=2, pl_every=2, augment="flip,color,translation,cutout", ada=True, ada_interval=2,
                   ada_kimg=0.1, ada_target=0.1),
    # the digits benchmark's size: 32x32 grayscale, ten classes
    "digits": Config(image_size=32, image_channels=1, z_dim=64, w_dim=64, g_channels=64, d_channels=64,
                     num_classes=10, r1_gamma=0.05),
    "small": Config(image_size=32),
    # the bundled emoji-faces model: 32x32 RGB, the five emoji styles as classes, ADA for its 560 pictures
    "emoji": Config(image_size=32, z_dim=128, w_dim=128, g_channels=128, d_channels=128, num_classes=5,
                    r1_gamma=0.1, augment="color,translation,cutout", ada=True, ada_kimg=20.0),
    "base": Config(image_size=64, z_dim=256, w_dim=256, g_channels=256, d_channels=256, r1_gamma=0.5),
}

# StyleGAN2-ADA's small-data settings: Adam lr 0.0025, betas (0, 0.99), no gradient clipping, G EMA
TRAIN_DEFAULTS: dict[str, object] = {"lr": 2.5e-3, "betas": (0.0, 0.99), "warmup": 0, "grad_clip": 0.0,
                                     "min_lr_ratio": 1.0, "ema_decay": 0.999}


def facts(c: Config) -> Facts:
    text = TextSpec(c.text_dim, c.text_tokens, c.text_encoder or "minilm") if c.text_dim else None
    return Facts(c.image_size, c.image_channels, c.num_classes, text)


SPEC = FamilySpec("stylegan", Config, StyleGAN, PRESETS, "StyleGAN2: mapping network, modulated convolutions, "
                  "truncation and style mixing", TRAIN_DEFAULTS, Options, frozenset({Generates, Projects}), facts,
                  ema_module="g")
