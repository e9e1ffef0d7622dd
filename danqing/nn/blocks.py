"""Small layers shared by several families."""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn


def groups(ch: int) -> int:
    """GroupNorm groups: up to 32 as in ADM, at least 4 channels a group, dividing ch."""
    return next(g for g in range(max(1, min(32, ch // 4)), 0, -1) if ch % g == 0)


class ConvRes(nn.Module):
    """GN-SiLU-conv twice with a skip, (B, cin, H, W) -> (B, cout, H, W); no noise embedding (the
    autoencoder's and the scorer's block; the diffusion UNet's ResBlock also takes the noise level)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  nn.GroupNorm(groups(cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


# the scorer's blocks named their layers n1, c1, n2, c2 before they became ConvRes
_OLD_NAMES = re.compile(r"\.(n1|c1|n2|c2)\.")
_NEW_INDEX = {"n1": "body.0", "c1": "body.2", "n2": "body.3", "c2": "body.5"}


def rename_old_res_keys(state: dict[str, Any], prefix: str, *_: Any) -> None:
    """A load_state_dict pre-hook: weights saved with the old names load into ConvRes blocks."""
    for key in [k for k in state if k.startswith(prefix) and _OLD_NAMES.search(k)]:
        state[_OLD_NAMES.sub(lambda m: f".{_NEW_INDEX[m.group(1)]}.", key, count=1)] = state.pop(key)


def minibatch_std(f: Tensor, group: int) -> Tensor:
    """Append the mean feature std across a group of samples as one more channel
    (Karras et al. 2018, PGGAN sec. 3): a batch of identical fakes stands out, which
    counters mode collapse.  f: (B, C, H, W) -> (B, C + 1, H, W)."""
    b, c, h, w = f.shape
    g = group if b % group == 0 else b
    std = f.float().reshape(g, b // g, c, h, w).var(dim=0, unbiased=False).add(1e-8).sqrt()   # (B/g, C, H, W)
    std = std.mean(dim=(1, 2, 3)).to(f.dtype)                                                # (B/g,)
    return torch.cat([f, std.repeat(g)[:, None, None, None].expand(b, 1, h, w)], dim=1)
