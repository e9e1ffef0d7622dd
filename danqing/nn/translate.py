"""The networks of the picture-to-picture families (Pix2Pix, CycleGAN, CUT): the U-Net and ResNet generators,
the PatchGAN discriminator, and the history pool of generated pictures.

Normalisation (``norm``): "instance" or "batch".  Pix2Pix trains and tests with batch norm at batch size 1 and
keeps using the batch's statistics at test time (Isola et al. 2017, sec. 3.3), which is instance norm in all
but name; CycleGAN uses instance norm outright (Zhu et al. 2017, sec. 4 and appendix 7.2).  danqing's
"instance" is ``InstanceNorm2d(affine=True)`` (the affine scale and shift stand in for batch norm's gamma and
beta): each picture is normalised by its own statistics in training and in eval mode alike, so a picture's
translation never depends on the pictures beside it in a batch (the house rule: picture i is the same at any
batch size).  "batch" is ``BatchNorm2d``: batch statistics in training, the running averages in eval mode
(PyTorch's convention), again so that a picture does not depend on its batch; use it with training batches
of several pictures.  Every preset uses "instance".
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..protocol import DataRole, Facts

Noise = Callable[[tuple[int, ...]], Tensor]      # shape -> standard normal noise of that shape (dropout's source)

NORMS = ("instance", "batch")


def norm_layer(kind: str, ch: int) -> nn.Module:
    """The normalisation of ``ch`` channels: "instance" (per picture, in train and eval mode) or "batch"."""
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    raise ValueError(f"unknown norm {kind!r}; choose instance or batch")


def _power_of_two(size: int, least: int, what: str) -> int:
    if size < least or size & (size - 1):
        raise ValueError(f"{what} needs a power-of-two image_size >= {least}, got {size}")
    return size.bit_length() - 1


# ---------------------------------------------------------------- Pix2Pix's U-Net

def unet_depth(size: int) -> int:
    """The U-Net's number of stride-2 encoder layers at ``size``: down to 1x1 (8 at 256 px, Isola et al. 6.1.1)."""
    return _power_of_two(size, 8, "the U-Net")


class UNet(nn.Module):
    """Pix2Pix's generator (Isola et al. 2017, appendix 6.1.1): picture (B, cin, S, S) -> (B, cout, S, S) in [-1, 1].

    Encoder C64-C128-C256-C512-C512-... (4x4 convs, stride 2, LeakyReLU 0.2; no norm on the first layer, nor on
    the innermost, whose 1x1 map a per-picture norm would zero), one layer per halving down to 1x1.  Decoder
    CD512-CD512-CD512-C512-C256-C128-C64 (4x4 transposed convs, ReLU), each output concatenated with the
    encoder's activation of the same size (the skip connections), then a transposed conv to ``cout`` and tanh.
    The first ``dropout_blocks`` decoder blocks apply dropout 0.5, the generator's only noise (sec. 2.1).
    Dropout is driven by explicit noise (``forward(x, noise)``) so a request's generators decide it.
    """

    def __init__(self, cin: int, cout: int, size: int, base: int = 64, cap: int = 512, norm: str = "instance",
                 dropout_blocks: int = 3):
        super().__init__()
        depth = unet_depth(size)
        widths = [min(base * 2**i, cap) for i in range(depth)]            # encoder layer i's output channels
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):
            conv = nn.Conv2d(cin if i == 0 else widths[i - 1], w, 4, 2, 1, bias=i in (0, depth - 1))
            self.down.append(conv if i in (0, depth - 1) else nn.Sequential(conv, norm_layer(norm, w)))
        self.up = nn.ModuleList()
        for i in range(depth - 1, 0, -1):           # the block whose output joins encoder layer i - 1's
            w_in = widths[i] * (1 if i == depth - 1 else 2)
            self.up.append(nn.Sequential(nn.ConvTranspose2d(w_in, widths[i - 1], 4, 2, 1, bias=False),
                                         norm_layer(norm, widths[i - 1])))
        self.out = nn.ConvTranspose2d(widths[0] * 2, cout, 4, 2, 1)
        self.dropout_blocks = min(dropout_blocks, depth - 1)
        self.multiple = 2**depth

    def forward(self, x: Tensor, noise: Noise | None = None) -> Tensor:
        """``noise(shape)``: standard normal noise whose sign makes the dropout masks (None: no dropout)."""
        skips = []
        h = x
        for i, layer in enumerate(self.down):
            h = layer(h if i == 0 else F.leaky_relu(h, 0.2))
            skips.append(h)                                               # (B, w_i, S / 2^(i+1), ...)
        for j, block in enumerate(self.up):
            h = block(F.relu(h))
            if noise is not None and j < self.dropout_blocks:             # inverted dropout, p = 0.5
                h = h * (noise(tuple(h.shape)) > 0).to(h.dtype) * 2
            h = torch.cat([h, skips[-2 - j]], dim=1)                      # the skip connection
        return torch.tanh(self.out(F.relu(h)))


# ---------------------------------------------------------------- CycleGAN's ResNet generator

class ResBlock(nn.Module):
    """R_k (Zhu et al. appendix 7.2): two reflection-padded 3x3 convs with a skip, (B, k, H, W) -> same."""

    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False), norm_layer(norm, ch),
                                  nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False),
                                  norm_layer(norm, ch))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator (Zhu et al. 2017, appendix 7.2, after Johnson et al. 2016):
    c7s1-64, d128, d256, ``blocks`` x R256, u128, u64, c7s1-3, reflection padding, (B, cin, S, S) -> (B, cout, S, S)
    in [-1, 1], for any S that is a multiple of 4.  The paper uses 6 blocks at 128 px and 9 at 256 px and above.

    ``encode(x, layers)`` returns the activations CUT's PatchNCE reads (Park et al. 2020, sec. 3.2): layer 0 is the
    picture itself, 1 the c7s1 output, 2 and 3 the two downsamplings', 4 + k residual block k's.
    """

    def __init__(self, cin: int, cout: int, base: int = 64, blocks: int = 9, norm: str = "instance"):
        super().__init__()
        c = base
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(cin, c, 7, bias=False), norm_layer(norm, c),
                                  nn.ReLU(True))
        self.down = nn.ModuleList([nn.Sequential(nn.Conv2d(a, 2 * a, 3, 2, 1, bias=False), norm_layer(norm, 2 * a),
                                                 nn.ReLU(True)) for a in (c, 2 * c)])
        self.blocks = nn.ModuleList([ResBlock(4 * c, norm) for _ in range(blocks)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 3, 2, 1, output_padding=1, bias=False), norm_layer(norm, 2 * c),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * c, c, 3, 2, 1, output_padding=1, bias=False), norm_layer(norm, c), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(c, cout, 7), nn.Tanh())
        self.widths = [cin, c, 2 * c, 4 * c] + [4 * c] * blocks         # channels of each ``encode`` layer
        self.multiple = 4

    def _layers(self) -> list[nn.Module]:
        return [self.stem, *self.down, *self.blocks]

    def encode(self, x: Tensor, layers: tuple[int, ...]) -> list[Tensor]:
        """The activations at ``layers`` (indices as in the class doc), each (B, widths[l], H_l, W_l)."""
        out = {0: x}
        h = x
        for i, layer in enumerate(self._layers()[:max(layers)], start=1):
            h = layer(h)
            out[i] = h
        return [out[i] for i in layers]

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self._layers():
            h = layer(h)
        return self.up(h)


def check_input(x: Tensor, channels: int, multiple: int, what: str) -> None:
    """Refuse an input picture a generator cannot take, saying what it needs."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{what} translates {channels}-channel pictures (B, {channels}, S, S); got {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple or x.shape[2] < multiple:
        raise ValueError(f"{what} translates pictures whose sides are multiples of {multiple}; got "
                         f"{x.shape[3]}x{x.shape[2]}: resize or crop the picture")


# ---------------------------------------------------------------- PatchGAN

def patch_receptive_field(n_down: int) -> int:
    """The receptive field in pixels of a PatchGAN with ``n_down`` stride-2 4x4 convs, then a stride-1 4x4 conv and
    the stride-1 4x4 output conv.  Walking back from one output pixel, a layer of kernel k and stride s widens the
    field r to (r - 1) s + k: 1 -> 4 -> 7, then 2r + 2 for each stride-2 layer, so r = 9 * 2^n - 2
    (n = 3, the paper's C64-C128-C256-C512 at 256 px: 70, Isola et al. appendix 6.1.2)."""
    r = 1
    for k, s in reversed([(4, 2)] * n_down + [(4, 1), (4, 1)]):
        r = (r - 1) * s + k
    return r


def patch_layers(size: int) -> int:
    """The number of stride-2 layers (at least 1) whose receptive field is nearest, in ratio, to 70/256 of ``size``:
    the 70x70 PatchGAN's share of a 256-px picture kept at other sizes (3 at 256 px, 2 at 128, 1 at 64 and below)."""
    target = 70 / 256 * size
    return min(range(1, max(2, size.bit_length())),
               key=lambda n: abs(math.log(patch_receptive_field(n) / target)))


class PatchGAN(nn.Module):
    """The PatchGAN discriminator (Isola et al. 2017, appendix 6.1.2): C64-C128-C256-C512 at 256 px, 4x4 convs,
    LeakyReLU 0.2, no norm on C64; (B, cin, S, S) -> logits (B, 1, h, w), one per overlapping patch.  ``n_down``
    stride-2 layers (0: ``patch_layers(size)``), then a stride-1 layer and the stride-1 output conv."""

    def __init__(self, cin: int, size: int, base: int = 64, cap: int = 512, n_down: int = 0, norm: str = "instance"):
        super().__init__()
        n = n_down or patch_layers(size)
        widths = [min(base * 2**i, cap) for i in range(n + 1)]
        layers: list[nn.Module] = [nn.Conv2d(cin, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for i in range(1, n + 1):
            stride = 2 if i < n else 1
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, stride, 1, bias=False), norm_layer(norm, widths[i]),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.n_down = n

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ---------------------------------------------------------------- the history pool

class HistoryPool(nn.Module):
    """The last generated pictures a discriminator is shown (Shrivastava et al. 2017, sec. 2.3; CycleGAN sec. 4):
    until ``size`` are stored, each new fake is stored and returned; then, with probability 1/2, a random stored
    fake is returned and the new one takes its place, else the new one is returned.

    The pictures (size, C, S, S) and the fill count are buffers, so they are saved in checkpoints and restored on
    resume; the draws come from torch's global RNG (on the CPU), which the trainer seeds and saves, so a resumed
    run draws the same."""

    images: Tensor
    count: Tensor

    def __init__(self, size: int, channels: int, side: int):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, channels, side, side))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def forward(self, fakes: Tensor) -> Tensor:
        """The pictures (B, C, S, S) to show the discriminator in place of ``fakes`` (B, C, S, S)."""
        if self.size == 0:
            return fakes
        out = []
        for x in fakes.detach():
            n = int(self.count)
            if n < self.size:
                self.images[n] = x
                self.count += 1
                out.append(x)
            elif float(torch.rand((), device="cpu")) < 0.5:
                j = int(torch.randint(0, self.size, (), device="cpu"))
                out.append(self.images[j].clone())
                self.images[j] = x
            else:
                out.append(x)
        return torch.stack(out)


# ---------------------------------------------------------------- least-squares GAN (CycleGAN, CUT)

def ls_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """LSGAN's discriminator loss with targets b = 1 (real), a = 0 (fake) (Mao et al. 2017, eq. 2), halved as in
    CycleGAN (sec. 4: "we divide the objective by 2 while optimizing D"): 1/2 E[(D(y) - 1)^2] + 1/2 E[D(G(x))^2]."""
    return 0.5 * ((real.float() - 1).square().mean() + fake.float().square().mean())


def ls_g_loss(fake: Tensor) -> Tensor:
    """LSGAN's generator loss E[(D(G(x)) - 1)^2] (CycleGAN sec. 4, eq. 1 with the least-squares objective)."""
    return (fake.float() - 1).square().mean()


# ---------------------------------------------------------------- what the three families share

# Adam, lr 2e-4, betas (0.5, 0.999) (Pix2Pix sec. 3.3, CycleGAN sec. 4, CUT appendix A), the rate constant for
# the first half of the run and linearly decayed to zero over the second, no warmup, no gradient clipping.  The
# papers train at batch size 1; with instance norm the batch size changes no picture's statistics, and a 2-core
# CPU spends most of a batch-1 step on per-call overhead, so danqing's default is 4.
TRAIN_DEFAULTS: dict[str, object] = {"lr": 2e-4, "betas": (0.5, 0.999), "warmup": 0, "decay": "linear",
                                     "min_lr_ratio": 0.0, "grad_clip": 0.0, "batch_size": 4, "ema_decay": 0.999}

UNPAIRED_A = DataRole("a", "the input pictures (domain A), unpaired: any pictures of the other domain")


def output_facts(c) -> Facts:
    """A translator's facts: the size and channels of what it paints (domain B)."""
    return Facts(c.image_size, c.image_channels)
