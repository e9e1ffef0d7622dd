"""The training monitor: diversity alarm, KID logging and the `best` checkpoint."""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from danqing import checkpoint as ckpt
from danqing.config import DataConfig, TrainConfig
from danqing.data import load_dataset
from danqing.families import spec
from danqing.generate import Painter
from danqing.metrics import MetricsError
from danqing.protocol import Facts, FamilySpec, Generates
from danqing.train import Run, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig("digits", size=16, channels=1), progress=False)


@pytest.fixture(scope="module")
def lite0():
    from danqing.metrics.efficientnet import EfficientNetLite0
    try:
        EfficientNetLite0()
    except MetricsError as e:
        pytest.skip(str(e))


class Replay(torch.nn.Module):
    """A stand-in generator that 'samples' given images, ignoring the condition and the noise."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.config = None
        self.images = images
        self.anchor = torch.nn.Parameter(torch.zeros(()))       # a device to paint on

    def noise(self, n, generator=None, size=None):
        return torch.stack([torch.randn(1, generator=g) for g in generator])    # proves nothing global is drawn

    def sample(self, n, cond=None, *, generator=None, noise=None, options=None):
        out, self.images = self.images[:n], self.images[n:]
        return out


REPLAY = FamilySpec("replay", object, Replay, {}, capabilities=frozenset({Generates}),
                    facts=lambda c: Facts(16, 1, num_classes=10))


def replay(images):
    return Painter(Replay(images), REPLAY, name="replay")


def test_alarm_fires_on_a_collapsed_generator_and_not_on_real_images(digits, lite0):
    from danqing.monitor import CollapseWarning, Monitor
    tc = TrainConfig(eval_n=40, eval_metrics="diversity,kid")
    mon = Monitor(digits, tc, num_classes=10, embed=None, device=torch.device("cpu"))
    other = torch.from_numpy(np.array(digits.images[1:41])).float() / 127.5 - 1     # real digits, not the subset
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        healthy = mon(replay(other))
    one = torch.from_numpy(np.array(digits.images[:1])).float().expand(40, -1, -1, -1) / 127.5 - 1
    with pytest.warns(CollapseWarning, match="mode collapse"):
        collapsed = mon(replay(one))
    assert healthy["eval/diversity"] > 0.8 and collapsed["eval/diversity"] < 0.05
    assert collapsed["eval/kid"] > healthy["eval/kid"]


def test_trainer_logs_checks_and_keeps_the_best_checkpoint(tmp_path, lite0):
    c = spec("diffusion").presets["tiny"]
    tc = TrainConfig(steps=4, batch_size=8, warmup=1, bf16="off", ckpt_every=0, sample_every=0, sample_n=4,
                     eval_every=2, eval_n=16, best="kid", log_every=1)
    data = DataConfig("digits", size=16, channels=c.image_channels)
    out = train(Run("diffusion", c, data, tc, "tiny"), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/kid")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    meta = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert meta["kid"] == pytest.approx(min(float(r["eval/kid"]) for r in rows))
    model, cfg = ckpt.load(tmp_path / "run" / "best")
    assert cfg["step"] == meta["step"] and out.name == "step-0000004"


def test_bad_monitor_settings_are_clear(digits):
    from danqing.config import ConfigError
    with pytest.raises(ConfigError, match="train.best must be kid"):
        TrainConfig(best="fid")
    from danqing.monitor import Monitor
    with pytest.raises(ConfigError, match="unknown train.eval_metrics"):
        Monitor(digits, TrainConfig(eval_metrics="diversity,fid"), num_classes=10, embed=None,
                device=torch.device("cpu"))
