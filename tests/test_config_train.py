"""Configs (JSON round trip, dotted overrides) and the trainer's pure pieces (LR schedule, data order, EMA)."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from danqing.config import (
    ConfigError,
    DataConfig,
    TrainConfig,
    from_dict,
    override,
    to_dict,
)
from danqing.families.diffusion import Config as DiffusionConfig
from danqing.feed import batch_indices, group_weights, phrasings_at
from danqing.train import Run, ema_update, lr_at, train


def test_json_round_trip_and_unknown_fields():
    c = TrainConfig(betas=(0.5, 0.9), bf16="on")
    assert from_dict(TrainConfig, to_dict(c)) == c
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        from_dict(TrainConfig, {"stepz": 3})
    with pytest.raises(ConfigError, match="must be one of"):
        from_dict(TrainConfig, {"bf16": "sometimes"})


def test_dotted_overrides_parse_by_type():
    c = override(DiffusionConfig(), {"channels": "64", "mult": "1,2,2,4", "dropout": "0.1", "attn": "16,8"})
    assert (c.channels, c.mult, c.dropout, c.attn) == (64, (1, 2, 2, 4), 0.1, (16, 8))
    d = override(DataConfig(), {"flip": "true", "fit": "pad"})
    assert d.flip is True and d.fit == "pad"
    with pytest.raises(ConfigError, match="unknown setting --channelz"):
        override(DiffusionConfig(), {"channelz": "1"})
    with pytest.raises(ConfigError, match="true or false"):
        override(DataConfig(), {"flip": "maybe"})


def test_lr_schedule_closed_form():
    c = TrainConfig(steps=1100, lr=1e-3, warmup=100, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(1e-5)                 # linear warmup: (step + 1) / warmup
    assert lr_at(99, c) == pytest.approx(1e-3)
    assert lr_at(100, c) == pytest.approx(1e-3)               # cosine starts at the peak
    assert lr_at(600, c) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lr_at(1100, c) == pytest.approx(1e-4)
    # CycleGAN's schedule: the full rate for half the steps, then a straight line to min_lr_ratio * lr
    c = TrainConfig(steps=200, lr=2e-4, warmup=0, min_lr_ratio=0.0, decay="linear")
    assert lr_at(0, c) == lr_at(100, c) == pytest.approx(2e-4)
    assert lr_at(150, c) == pytest.approx(1e-4) and lr_at(200, c) == 0.0
    with pytest.raises(ConfigError, match="decay must be cosine or linear"):
        TrainConfig(decay="step")  # type: ignore[arg-type]


def test_data_order_visits_every_image_once_per_epoch():
    n, b = 10, 4
    seen = torch.cat([batch_indices(s, b, n, seed=3)[0] for s in range(5)])    # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])              # a new permutation each epoch
    idx, epoch, pos = batch_indices(2, b, n, seed=3)
    assert (epoch, pos) == (0, 8) and len(idx) == b           # the batch that crosses the epoch boundary


def test_group_weights_closed_form():
    tone = r"(: |, )(light|medium-light|medium|medium-dark|dark) skin tone"
    caps = ["waving hand, flat style", "waving hand: light skin tone, flat style",
            "waving hand: dark skin tone, flat style", "waving hand, 3d style", "fox, flat style"]
    w = group_weights(caps, tone)                             # groups: 3 flat waving hands, 1 in 3d, 1 fox
    torch.testing.assert_close(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="train.balance must be a regular expression"):
        TrainConfig(balance="skin (tone")


def test_balanced_data_order_draws_each_group_equally_often():
    w = torch.tensor([1.0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)   # item 0 alone, items 1-4 a group
    draws = torch.cat([batch_indices(s, 5, 5, seed=1, weights=w)[0] for s in range(400)])
    alone = (draws == 0).sum().item()
    assert 900 <= alone <= 1100                               # half of 2000 draws (a permutation gives 400)
    assert torch.equal(batch_indices(7, 3, 5, seed=1, weights=w)[0], batch_indices(7, 3, 5, seed=1, weights=w)[0])


def test_caption_variants_are_drawn_by_share_and_step():
    caps = ["fox", "owl", "cat"]
    variants = [["a fox", "fox face"], [], ["a cat"]]
    idx = [0, 1, 2, 0]
    assert phrasings_at(3, idx, caps, variants, 0.0, seed=0) == ["fox", "owl", "cat", "fox"]
    always = phrasings_at(3, idx, caps, variants, 1.0, seed=0)
    assert always[1] == "owl" and always[2] == "a cat" and {always[0], always[3]} <= {"a fox", "fox face"}
    assert phrasings_at(5, idx, caps, variants, 0.5, seed=2) == phrasings_at(5, idx, caps, variants, 0.5, seed=2)
    # Over 4000 draws of picture 0 at share 0.3: the caption ~70%, each variant ~15% (binomial sd < 1%).
    drawn = Counter(t for step in range(1000) for t in phrasings_at(step, [0] * 4, caps, variants, 0.3, seed=1))
    assert abs(drawn["fox"] / 4000 - 0.7) < 0.03
    assert abs(drawn["a fox"] / 4000 - 0.15) < 0.02 and abs(drawn["fox face"] / 4000 - 0.15) < 0.02
    with pytest.raises(ConfigError, match="train.variants must be in"):
        TrainConfig(variants=1.5)


def test_balance_without_captions_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "pics").mkdir()
    for i in range(3):                                        # a folder of pictures with no captions
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "pics" / f"{i}.png")
    c = DiffusionConfig(image_size=8, image_channels=3, channels=8, mult=(1,), num_res=1, attn=())
    run = Run("diffusion", c, DataConfig(str(tmp_path / "pics"), size=8), TrainConfig(steps=1, balance="x"))
    with pytest.raises(ConfigError, match="no captions"):
        train(run, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_ema_update_formula():
    model = torch.nn.Linear(2, 1)
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    ema_update(ema, model, step=1000, decay=0.9)
    for k, v in model.state_dict().items():                   # ema <- d * ema + (1 - d) * param, d = 0.9
        torch.testing.assert_close(ema[k], 0.1 * v)
    ema0 = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    ema_update(ema0, model, step=0, decay=0.999)              # warm-up: d = min(decay, 1/10)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ema0[k], 0.9 * v)
