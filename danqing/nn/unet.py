"""The diffusion backbone: an ADM-style UNet (Dhariwal & Nichol 2021) sized for CPUs.

Residual blocks with GroupNorm and a scale-shift noise embedding, self-attention
at low resolutions, optional class conditioning through a learned embedding
whose last row is the "null" class used for classifier-free guidance.
The network knows nothing about sigma schedules: the EDM preconditioning in
``danqing.families.diffusion`` turns it into a denoiser.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import groups


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise level c_noise (Vaswani et al. 2017; DDPM, Ho et al. 2020).

    EDM's c_noise = ln(sigma)/4 spans only about [-1.6, 1.2], so it is scaled by
    1000 first, the range DDPM's timestep embedding was designed for.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half), persistent=False)
        self.scale = scale

    def forward(self, c_noise: Tensor) -> Tensor:           # (B,) -> (B, dim)
        angles = (c_noise.float() * self.scale)[:, None] * self.freqs[None]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, noise/class embedding as a GroupNorm scale and shift, GN-SiLU-dropout-conv, skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (ADM)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)   # (B, cout, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def attend(x: Tensor, q: Tensor, k: Tensor, v: Tensor, proj: nn.Module, mask: Tensor | None = None) -> Tensor:
    """The residual attention update of feature map ``x`` (B, C, H, W): queries ``q`` (B, heads, HW, d) from its
    positions, keys and values ``k``, ``v`` (B, heads, T, d); ``mask`` (B, T) marks the keys that may be attended
    to.  Returns x + proj(softmax(q k^T / sqrt(d)) v), the heads joined back into C channels.

    Explicit softmax(q k^T / sqrt(d)) v: at <= 256 positions it trains faster on CPUs than the fused
    scaled_dot_product_attention kernels, whose backward pass dominates at this size.
    """
    b, c, h, w = x.shape
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5                          # (B, heads, HW, T)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = logits.softmax(dim=-1) @ v                                                 # (B, heads, HW, d)
    out = proj(out.transpose(1, 2).reshape(b, h * w, c))                             # (B, HW, C)
    return x + out.transpose(1, 2).reshape(b, c, h, w)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map."""

    def __init__(self, ch: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(groups(ch), ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                   # (B, HW, C)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return attend(x, q, k, v, self.proj)


class CrossAttention(nn.Module):
    """Attention from the H*W positions of a feature map to text tokens (Rombach et al. 2022, eq. 3):
    queries from the image, keys and values from the text encoder's per-token states."""

    def __init__(self, ch: int, context_dim: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(groups(ch), ch)
        self.q = nn.Linear(ch, ch)
        self.kv = nn.Linear(context_dim, 2 * ch)
        self.proj = nn.Linear(ch, ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x).flatten(2).transpose(1, 2)).reshape(b, h * w, self.heads, d).transpose(1, 2)
        k, v = self.kv(context).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)   # (B, heads, T, d)
        return attend(x, q, k, v, self.proj, mask)


class Block(nn.Module):
    """A ResBlock, then self-attention and (with a text context) cross-attention at the resolutions that have it."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, attn: bool, head_dim: int,
                 context_dim: int = 0):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.attn = SelfAttention(cout, head_dim) if attn else nn.Identity()
        self.cross = CrossAttention(cout, context_dim, head_dim) if attn and context_dim else None

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        h = self.attn(self.res(x, emb))
        return self.cross(h, context, mask) if self.cross is not None else h


class Down(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, *_) -> Tensor:
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, *_) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """UNet(x, c_noise, labels, context, context_mask, pooled) -> same shape as x.

    in/out: (B, in_ch, H, W) with H, W divisible by 2**(len(mult)-1).
    channels * mult[i] channels at level i; ``attn`` lists the resolutions
    (e.g. (8,)) that get self-attention, at the training ``resolution``;
    ``num_classes`` > 0 adds a class embedding with one extra "null" row
    (id = num_classes); ``context_dim`` > 0 adds cross-attention to text
    tokens (B, T, context_dim) wherever there is self-attention, and a pooled
    text vector (B, context_dim) added to the noise embedding (as Imagen and
    SDXL do with their pooled text embeddings).
    """

    def __init__(self, in_ch: int, out_ch: int, *, resolution: int, channels: int = 32,
                 mult: tuple[int, ...] = (1, 2, 2), num_res: int = 2, attn: tuple[int, ...] = (8,),
                 dropout: float = 0.0, num_classes: int = 0, head_dim: int = 32, context_dim: int = 0):
        super().__init__()
        emb_dim = 4 * channels
        self.noise_emb = NoiseEmbedding(channels)
        self.emb_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.pooled_emb = nn.Linear(context_dim, emb_dim) if context_dim else None
        self.conv_in = nn.Conv2d(in_ch, channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, resolution
        for level, m in enumerate(mult):
            for _ in range(num_res):
                self.down.append(Block(ch, channels * m, emb_dim, dropout, res in attn, head_dim, context_dim))
                ch = channels * m
                skips.append(ch)
            if level < len(mult) - 1:
                self.down.append(Down(ch))
                res //= 2
                skips.append(ch)

        self.mid = nn.ModuleList([Block(ch, ch, emb_dim, dropout, True, head_dim, context_dim),
                                  Block(ch, ch, emb_dim, dropout, False, head_dim)])

        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for _ in range(num_res + 1):
                self.up.append(Block(ch + skips.pop(), channels * m, emb_dim, dropout, res in attn, head_dim,
                                     context_dim))
                ch = channels * m
            if level > 0:
                self.up.append(Up(ch))
                res *= 2

        self.norm_out = nn.GroupNorm(groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None) -> Tensor:
        emb = self.emb_mlp(self.noise_emb(c_noise.reshape(-1).expand(x.shape[0])))
        if self.class_emb is not None:
            if labels is None:
                raise ValueError("this UNet is class-conditional: pass labels (use the null id for unconditional)")
            emb = emb + self.class_emb(labels)
        if self.pooled_emb is not None:
            if context is None or pooled is None:
                raise ValueError("this UNet is text-conditional: pass context and pooled text states")
            emb = emb + self.pooled_emb(pooled)

        h = self.conv_in(x)
        hs = [h]                                   # skip connections, one per down layer
        for layer in self.down:
            h = layer(h, emb, context, context_mask)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb, context, context_mask)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb, context, context_mask) if isinstance(layer, Block) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
