"""diffusers' UNets behind danqing's backbone interface: the peer in benchmarks.

``Config(backbone="diffusers")`` swaps danqing's UNet for diffusers'
``UNet2DConditionModel`` (text) or ``UNet2DModel`` with the same widths, blocks
per level and attention resolutions, so that the same trainer, data,
preconditioning and samplers compare the two networks alone.  diffusers is an
optional dependency (the ``bench`` extra); nothing else in danqing imports it.

Conditioning is mapped onto diffusers' own inputs: the noise level c_noise × 1000
as the (float) timestep, text states as ``encoder_hidden_states`` with their
mask, the pooled text vector as a projected class embedding added to the time
embedding (``class_embed_type="projection"``), class ids through
``num_class_embeds``.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from .blocks import groups


class DiffusersUNet(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, resolution: int, channels: int = 32,
                 mult: tuple[int, ...] = (1, 2, 2), num_res: int = 2, attn: tuple[int, ...] = (8,),
                 dropout: float = 0.0, num_classes: int = 0, head_dim: int = 32, context_dim: int = 0):
        super().__init__()
        try:
            import diffusers
        except ImportError:
            raise ImportError("backbone='diffusers' needs the diffusers package: pip install 'danqing[bench]'") from None
        widths = tuple(channels * m for m in mult)
        with_attn = [resolution // 2**i in attn for i in range(len(mult))]
        norm_groups = math.gcd(*(groups(w) for w in widths))
        self.text = bool(context_dim)
        if self.text:
            self.net = diffusers.UNet2DConditionModel(
                sample_size=resolution, in_channels=in_ch, out_channels=out_ch, block_out_channels=widths,
                layers_per_block=num_res, norm_num_groups=norm_groups, cross_attention_dim=context_dim,
                down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in with_attn),
                up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(with_attn)),
                attention_head_dim=tuple(max(1, w // head_dim) for w in widths),     # diffusers: number of heads
                class_embed_type="projection", projection_class_embeddings_input_dim=context_dim,
                dropout=dropout)
        else:
            self.net = diffusers.UNet2DModel(
                sample_size=resolution, in_channels=in_ch, out_channels=out_ch, block_out_channels=widths,
                layers_per_block=num_res, norm_num_groups=norm_groups, attention_head_dim=head_dim,
                down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in with_attn),
                up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(with_attn)),
                num_class_embeds=num_classes + 1 if num_classes else None, dropout=dropout)

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, pooled: Tensor | None = None) -> Tensor:
        t = (c_noise.reshape(-1) * 1000).expand(x.shape[0])
        if self.text:
            return self.net(x, t, encoder_hidden_states=context, class_labels=pooled,
                            encoder_attention_mask=context_mask, return_dict=False)[0]
        return self.net(x, t, class_labels=labels, return_dict=False)[0]
