"""StyleGAN2's networks (Karras et al. 2020): the mapping network, the skip synthesis network with modulated and
demodulated convolutions written as grouped convolutions, and the residual discriminator.  The family that trains
them and paints with them is ``danqing.families.stylegan``; its ``Config`` sizes them."""
from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..protocol import Cond
from .blocks import minibatch_std
from .equalized import Conv, Linear, lrelu, modulated_conv


class Config(Protocol):
    """The sizes the networks read (``danqing.families.stylegan.Config`` has them)."""

    image_size: int
    image_channels: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    g_channels: int
    d_channels: int
    min_channels: int
    num_classes: int
    text_dim: int


def widths(base: int, smallest: int, levels: int) -> list[int]:
    """Channels at 4x4, 8x8, ...: ``base`` up to 16x16, then halved at each level, at least ``smallest``."""
    return [max(smallest, base >> max(0, i - 2)) for i in range(levels)]


class StyledConv(nn.Module):
    """Modulated 3x3 convolution (optionally after a 2x upsampling), per-pixel noise, bias, lrelu."""

    def __init__(self, cin: int, cout: int, w_dim: int, up: bool = False):
        super().__init__()
        self.affine = Linear(w_dim, cin, bias_init=1.0)                        # styles start at 1
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.gain, self.up = 1 / math.sqrt(cin * 9), up

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modulated_conv(x, self.weight * self.gain, self.affine(w), fused=not self.training)
        return lrelu(x + noise * self.noise_strength + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to colours, not demodulated (StyleGAN2 Fig. 7)."""

    def __init__(self, cin: int, cout: int, w_dim: int):
        super().__init__()
        self.affine = Linear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = 1 / math.sqrt(cin)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return modulated_conv(x, self.weight * self.gain, self.affine(w), demodulate=False,
                              fused=not self.training) + \
            self.bias[None, :, None, None]


# ---------------------------------------------------------------- networks

def normalise(x: Tensor) -> Tensor:
    """Each row scaled to unit mean square (StyleGAN's pixel norm of z and of the condition embeddings)."""
    return x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()


class Mapping(nn.Module):
    """z (B, z_dim) [+ class] -> w (B, w_dim): normalise, concatenate the normalised class embedding, then
    ``mapping_layers`` fully connected layers at 0.01 of the learning rate.  Tracks the mean w (per class)."""

    def __init__(self, c: Config):
        super().__init__()
        self.embed = Linear(c.num_classes, c.w_dim) if c.num_classes else None
        self.text = Linear(c.text_dim, c.w_dim) if c.text_dim else None
        conds = (1 if c.num_classes else 0) + (1 if c.text_dim else 0)
        dims = [c.z_dim + conds * c.w_dim] + [c.w_dim] * c.mapping_layers
        self.layers = nn.ModuleList(Linear(a, b, lr_mult=0.01) for a, b in zip(dims, dims[1:]))
        self.register_buffer("w_avg", torch.zeros(max(1, c.num_classes), c.w_dim))

    def forward(self, z: Tensor, cond: Cond | None) -> Tensor:
        parts = [normalise(z)]
        if self.embed is not None:
            assert cond is not None and cond.labels is not None
            parts.append(normalise(self.embed(F.one_hot(cond.labels, self.embed.weight.shape[1]).to(z.dtype))))
        if self.text is not None:
            assert cond is not None and cond.pooled is not None
            parts.append(normalise(self.text(cond.pooled.to(z.dtype))))
        x = torch.cat(parts, dim=1)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x

    def mean(self, cond: Cond | None, n: int) -> Tensor:
        """The tracked mean w of each picture's class (or the only one), (n, w_dim)."""
        if self.embed is not None and cond is not None and cond.labels is not None:
            return self.w_avg[cond.labels]
        return self.w_avg[:1].expand(n, -1)


class Synthesis(nn.Module):
    """ws (B, num_ws, w_dim) -> picture (B, C, S, S): the skip generator.  Layer i of ``self.convs`` reads ws[:, i];
    the toRGB of resolution level j reads ws[:, 2j + 1]."""

    def __init__(self, c: Config):
        super().__init__()
        self.levels = int(math.log2(c.image_size)) - 1                       # 4x4 ... SxS
        ch = widths(c.g_channels, c.min_channels, self.levels)
        self.const = nn.Parameter(torch.randn(ch[0], 4, 4))
        self.convs = nn.ModuleList([StyledConv(ch[0], ch[0], c.w_dim)])
        self.torgb = nn.ModuleList([ToRGB(ch[0], c.image_channels, c.w_dim)])
        for a, b in zip(ch, ch[1:]):
            self.convs.extend([StyledConv(a, b, c.w_dim, up=True), StyledConv(b, b, c.w_dim)])
            self.torgb.append(ToRGB(b, c.image_channels, c.w_dim))
        self.num_ws = 2 * self.levels

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """The (1, H, W) of each conv's per-pixel noise."""
        return [(1, 4 * 2 ** ((i + 1) // 2), 4 * 2 ** ((i + 1) // 2)) for i in range(len(self.convs))]

    def forward(self, ws: Tensor, noise: list[Tensor]) -> Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.convs[0](x, ws[:, 0], noise[0])
        rgb = self.torgb[0](x, ws[:, 1])
        for j in range(1, self.levels):
            x = self.convs[2 * j - 1](x, ws[:, 2 * j - 1], noise[2 * j - 1])
            x = self.convs[2 * j](x, ws[:, 2 * j], noise[2 * j])
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + \
                self.torgb[j](x, ws[:, 2 * j + 1])
        return rgb


class Generator(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.mapping, self.synthesis = Mapping(c), Synthesis(c)


class DBlock(nn.Module):
    """Residual: two 3x3 convs, the second halving the resolution, plus a 1x1 skip; sum / sqrt(2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0, self.conv1 = Conv(cin, cin, 3), Conv(cin, cout, 3, down=True)
        self.skip = Conv(cin, cout, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        return (self.skip(x) + lrelu(self.conv1(lrelu(self.conv0(x))))) / math.sqrt(2)


class Discriminator(nn.Module):
    """picture (B, C, S, S) -> logit (B,): fromRGB, residual blocks down to 4x4, minibatch std, conv, two fully
    connected layers; with classes, the last one projects onto a class embedding (StyleGAN2-ADA's cmap)."""

    def __init__(self, c: Config):
        super().__init__()
        levels = int(math.log2(c.image_size)) - 1
        ch = widths(c.d_channels, c.min_channels, levels)[::-1]                # full resolution first
        self.fromrgb = Conv(c.image_channels, ch[0], 1)
        self.blocks = nn.ModuleList(DBlock(a, b) for a, b in zip(ch, ch[1:]))
        self.conv = Conv(ch[-1] + 1, ch[-1], 3)
        self.fc = Linear(ch[-1] * 16, ch[-1])
        self.cmap = Linear(c.num_classes, ch[-1]) if c.num_classes else None
        self.tmap = Linear(c.text_dim, ch[-1]) if c.text_dim else None
        self.out = Linear(ch[-1], ch[-1] if c.num_classes or c.text_dim else 1)

    def forward(self, x: Tensor, cond: Cond | None = None) -> Tensor:
        x = lrelu(self.fromrgb(x))
        for block in self.blocks:
            x = block(x)
        x = lrelu(self.conv(minibatch_std(x, 4)))
        x = self.out(lrelu(self.fc(x.flatten(1))))
        if self.cmap is None and self.tmap is None:
            return x[:, 0]
        assert cond is not None
        y = torch.zeros_like(x)
        if self.cmap is not None:
            assert cond.labels is not None
            y = y + self.cmap(F.one_hot(cond.labels, self.cmap.weight.shape[1]).to(x.dtype))
        if self.tmap is not None:
            assert cond.pooled is not None
            y = y + self.tmap(cond.pooled.to(x.dtype))
        return (x * y).sum(1) / math.sqrt(x.shape[1])
