"""Prompt consistency: a small CLIP-like model trained by danqing.

No offline package ships an image-text model (CLIP, SigLIP), so danqing trains
its own, in the manner of Radford et al., "Learning Transferable Visual Models
From Natural Language Supervision" (ICML 2021): a convolutional image encoder
is trained against the *frozen* MiniLM sentence embeddings of the captions
(as in LiT, Zhai et al. 2022: a locked text tower) with the symmetric InfoNCE
loss and a learned temperature.  Captions that are identical within a batch
share their targets, so two images of "red heart, flat style" are not pushed
apart.

It is a family in the protocol's sense (phases + loss, trained by the one
trainer: ``danqing train scorer --preset emoji --data emoji``) but it paints
nothing: it has ``score`` instead of ``sample``.

- ``score(images, prompts)``: cosine similarity (N,) between each image and its
  prompt, in [-1, 1]; the number best-of-N ranks by.
- ``retrieval(images, captions)``: R@1 and R@5 of finding each image's caption
  among all the captions of the set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.blocks import ConvRes, groups, rename_old_res_keys
from ..protocol import Batch, Cond, Facts, FamilySpec, Phase, Scores, TextSpec

__all__ = ["PRESETS", "SPEC", "TRAIN_DEFAULTS", "Config", "Model", "Scorer", "retrieval_at"]


@dataclass(frozen=True)
class Config:
    image_size: int = 64
    image_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 128, 256)   # image encoder stages after a stride-2 stem, halving each
    embed_dim: int = 256                            # shared embedding space
    text_dim: int = 384                             # MiniLM pooled vector
    text_tokens: int = 32
    text_encoder: str = "minilm"


class Scorer(nn.Module):
    """Image encoder (B, 3, H, W) in [-1, 1] -> unit vectors (B, embed_dim); text head on pooled MiniLM vectors."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = [nn.Conv2d(c.image_channels, c.widths[0], 3, stride=2, padding=1)]
        for i, w in enumerate(c.widths):
            if i:
                layers.append(nn.Conv2d(c.widths[i - 1], w, 3, stride=2, padding=1))
            layers.append(ConvRes(w, w))
        layers += [nn.GroupNorm(groups(c.widths[-1]), c.widths[-1]), nn.SiLU()]
        self.image_net = nn.Sequential(*layers)
        self.image_proj = nn.Linear(c.widths[-1], c.embed_dim)
        self.text_proj = nn.Sequential(nn.Linear(c.text_dim, 2 * c.embed_dim), nn.GELU(),
                                       nn.Linear(2 * c.embed_dim, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))      # CLIP's initial temperature
        self._register_load_state_dict_pre_hook(rename_old_res_keys)              # weights saved before ConvRes

    def embed_images(self, images: Tensor) -> Tensor:
        h = self.image_net(images).mean(dim=(2, 3))                  # (B, widths[-1])
        return F.normalize(self.image_proj(h).float(), dim=-1)

    def embed_text(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.text_proj(pooled).float(), dim=-1)

    # ---------------------------------------------------------------- protocol
    def phases(self) -> list[Phase]:
        return [Phase("main")]

    def loss(self, batch: Batch, phase: str = "main", step: int = 0,
             carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        if batch.cond is None or batch.cond.pooled is None:
            raise ValueError("the scorer learns from captions: train it on captioned data")
        img = self.embed_images(batch.images)                        # (B, E)
        txt = self.embed_text(batch.cond.pooled)                     # (B, E)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T     # (B, B)
        # rows/columns with the same caption are all positives: targets spread evenly over them
        same = (batch.cond.pooled[:, None, :] == batch.cond.pooled[None, :, :]).all(-1).float()
        targets = same / same.sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
        with torch.no_grad():
            acc = (same[torch.arange(len(same)), logits.argmax(1)] > 0).float().mean()
        return {"loss": loss, "acc": acc, "temperature": 1 / self.logit_scale.exp().detach()}

    # ---------------------------------------------------------------- scoring
    @torch.no_grad()
    def score(self, images: Tensor, text: Cond) -> Tensor:
        """Cosine similarity (N,) of images (N, 3, H, W) in [-1, 1] with their text's pooled vectors (N, text_dim)."""
        if images.shape[-1] != self.config.image_size:
            images = F.interpolate(images.float(), size=self.config.image_size, mode="bilinear", antialias=True,
                                   align_corners=False)
        return (self.embed_images(images) * self.embed_text(text.pooled.to(images.device))).sum(-1)

    @torch.no_grad()
    def similarity(self, images: Tensor, text: Cond) -> Tensor:
        """Cosine similarity matrix (N_images, N_texts)."""
        return self.embed_images(images) @ self.embed_text(text.pooled.to(images.device)).T


def retrieval_at(similarity: Tensor, truth: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Recall@k: share of rows whose true column (``truth`` (N,)) is among the k most similar columns."""
    rank = (similarity > similarity.gather(1, truth[:, None])).sum(1)         # columns strictly more similar
    return {k: float((rank < k).float().mean()) for k in ks}


Model = Scorer

PRESETS: dict[str, Config] = {
    "tiny": Config(image_size=16, widths=(8, 16), embed_dim=16, text_dim=32, text_tokens=24),
    # 64x64 emoji: 2.35M parameters, 0.18 GFLOP per image
    "emoji": Config(),
}

TRAIN_DEFAULTS: dict[str, object] = {"lr": 1e-3, "batch_size": 128, "ema_decay": 0.999, "weight_decay": 0.05}


def facts(c: Config) -> Facts:
    return Facts(c.image_size, c.image_channels, text=TextSpec(c.text_dim, c.text_tokens, c.text_encoder or "minilm"))


SPEC = FamilySpec("scorer", Config, Scorer, PRESETS, "prompt-consistency scorer, CLIP-like (scores, does not paint)",
                  TRAIN_DEFAULTS, capabilities=frozenset({Scores}), facts=facts)
