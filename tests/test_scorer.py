"""The prompt-consistency scorer: retrieval arithmetic, scores, and the contrastive loss's shared targets."""
from __future__ import annotations

import pytest
import torch

from danqing.metrics.scorer import PRESETS, Scorer, retrieval_at
from danqing.protocol import Batch, Cond


def test_retrieval_at_by_hand():
    sim = torch.tensor([[0.9, 0.1, 0.0],      # truth 0: rank 0
                        [0.8, 0.5, 0.7],      # truth 1: two columns above it -> rank 2
                        [0.2, 0.3, 0.1]])     # truth 2: rank 2
    r = retrieval_at(sim, torch.tensor([0, 1, 2]), ks=(1, 2, 3))
    assert r == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1.0})


def _text(pooled):
    return Cond(pooled=pooled)


def test_score_is_a_cosine_and_follows_the_pairing():
    torch.manual_seed(0)
    m = Scorer(PRESETS["tiny"]).eval()
    imgs = torch.rand(3, 3, 16, 16) * 2 - 1
    pooled = torch.randn(3, 32)
    s = m.score(imgs, _text(pooled))
    assert s.shape == (3,) and (s.abs() <= 1 + 1e-6).all()
    sim = m.similarity(imgs, _text(pooled))
    torch.testing.assert_close(sim.diagonal(), s)
    # larger pictures are resized to the scorer's size first
    big = torch.nn.functional.interpolate(imgs, size=32, mode="nearest")
    assert m.score(big, _text(pooled)).shape == (3,)


def test_identical_captions_share_their_targets():
    """Two images with the same caption: predicting either counts as correct, and swapping them changes nothing."""
    torch.manual_seed(1)
    m = Scorer(PRESETS["tiny"])
    imgs = torch.rand(4, 3, 16, 16) * 2 - 1
    p = torch.randn(3, 32)
    pooled = torch.stack([p[0], p[0], p[1], p[2]])
    a = m.loss(Batch(imgs, cond=Cond(pooled=pooled)))
    b = m.loss(Batch(imgs[[1, 0, 2, 3]], cond=Cond(pooled=pooled)))
    torch.testing.assert_close(a["loss"], b["loss"])
    assert 0 <= a["acc"] <= 1 and a["loss"] > 0
