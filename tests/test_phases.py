"""Richer phases: per-phase optimiser settings, the per-step carry, data-dependent initialisation, data roles."""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from danqing.config import ConfigError, DataConfig, TrainConfig
from danqing.families import FAMILIES
from danqing.feed import Feed, batch_indices, flips_at, role_seed
from danqing.optim import build_optimisers
from danqing.protocol import DataInit, DataRole, FamilySpec, Optim, Phase, lazy
from danqing.train import Run, train


@dataclass(frozen=True)
class Config:
    image_size: int = 8
    image_channels: int = 1


class TwoPlayers(nn.Module):
    """Two linear maps trained by three phases: ``a``, a lazy ``a_reg`` every 2 steps, and ``b`` (TTUR)."""

    calls: list = []

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.a, self.b = nn.Linear(64, 1), nn.Linear(64, 1)
        self.shift = nn.Parameter(torch.zeros(()))
        self.initialised_with: torch.Tensor | None = None

    def phases(self):
        return [Phase("a", "a", optim=lazy(2)), Phase("a_reg", "a", every=2, optim=lazy(2)),
                Phase("b", "b", optim=Optim(lr_mult=4.0, betas=(0.0, 0.99)))]

    def loss(self, batch, phase, step=0, carry=None):
        assert carry is not None
        x = batch.images.flatten(1)
        if phase == "a":
            carry["seen"] = step                      # handed to the later phases of the same step
            out = self.a(x).square().mean()
        elif phase == "a_reg":
            out = self.a.weight.square().sum()
        else:
            out = (self.b(x) - self.shift).square().mean()
        if x.device.type != "meta":                   # not the memory estimate's dry run
            TwoPlayers.calls.append((step, phase, dict(carry), sorted(batch.roles)))
        return {"loss": out}

    def initialize(self, batch):
        self.initialised_with = batch.images.clone()
        self.shift.fill_(float(batch.images.mean()))


SPEC = FamilySpec("two_players", Config, TwoPlayers, {"tiny": Config()}, "phase test", {"warmup": 0},
                  capabilities=frozenset({DataInit}),
                  roles=(DataRole("pair", paired=True, default="digits"), DataRole("other", default="digits")))


@pytest.fixture
def registered(monkeypatch):
    module = types.ModuleType("two_players_family")
    module.SPEC = SPEC
    monkeypatch.setitem(sys.modules, "two_players_family", module)
    monkeypatch.setitem(FAMILIES, "two_players", "two_players_family")
    TwoPlayers.calls = []


def run(**train):
    return Run("two_players", Config(), DataConfig("digits", size=8, channels=1),
               TrainConfig(**{"steps": 4, "batch_size": 4, "warmup": 0, "bf16": "off", "sample_every": 0,
                              "log_every": 1, **train}), "tiny")


def test_phase_optimisers_follow_their_settings():
    """lazy(k): lr * k/(k+1) and betas ** (k/(k+1)) (StyleGAN2 appendix B); explicit betas and lr_mult (TTUR)."""
    model = TwoPlayers(Config())
    optims, owned = build_optimisers(model, model.phases(), TrainConfig(lr=1e-3, betas=(0.5, 0.9)))
    a, b = optims["a"].param_groups[0], optims["b"].param_groups[0]
    assert a["lr"] == pytest.approx(1e-3 * 2 / 3) and a["betas"] == pytest.approx((0.5 ** (2 / 3), 0.9 ** (2 / 3)))
    assert b["lr"] == pytest.approx(4e-3) and b["betas"] == (0.0, 0.99)
    assert {id(p) for p in owned["a"]} == {id(p) for p in model.a.parameters()}


def test_phases_sharing_a_module_must_agree_on_its_optimiser():
    phases = [Phase("a", "a"), Phase("a_reg", "a", every=2, optim=lazy(2))]
    with pytest.raises(ConfigError, match="share one optimiser"):
        build_optimisers(TwoPlayers(Config()), phases, TrainConfig())


def test_carry_roles_and_data_init_in_a_run(registered, tmp_path):
    train(run(), tmp_path / "r", progress=False)
    calls = TwoPlayers.calls
    assert [(s, p) for s, p, _, _ in calls] == [(0, "a"), (0, "a_reg"), (0, "b"), (1, "a"), (1, "b"), (2, "a"),
                                                (2, "a_reg"), (2, "b"), (3, "a"), (3, "b")]
    assert all(c == {"seen": s} for s, p, c, _ in calls if p != "a")      # shared within a step, fresh each step
    assert all(r == ["other", "pair"] for *_, r in calls)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["roles"] == {}                                          # the defaults were used, not recorded


def test_data_init_sees_the_first_batch_once(registered, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(TwoPlayers, "initialize", lambda self, batch: seen.append(batch.images.clone()))
    train(run(steps=2, ckpt_every=1), tmp_path / "r", progress=False)
    train(run(steps=3, ckpt_every=1), tmp_path / "r", resume=True, progress=False)
    assert len(seen) == 1                                                # not again when resuming
    from danqing.data import load_dataset
    ds = load_dataset(DataConfig("digits", size=8, channels=1), progress=False)
    first, _, _ = batch_indices(0, 4, len(ds), 0)
    torch.testing.assert_close(seen[0], ds.batch(first.numpy()).images)


def test_role_orders_are_pure_paired_roles_share_indices_and_flips():
    from danqing.data import load_dataset
    ds = load_dataset(DataConfig("digits", size=8, channels=1), progress=False)
    tc = TrainConfig(batch_size=5, seed=3)
    roles = {"pair": (DataRole("pair", paired=True), ds), "other": (DataRole("other"), ds)}
    feed = Feed(ds, tc, flip=True, roles=roles)
    a, b = feed.batch(7), Feed(ds, tc, flip=True, roles=roles).batch(7)
    for x, y in ((a.images, b.images), (a.roles["pair"].images, b.roles["pair"].images),
                 (a.roles["other"].images, b.roles["other"].images)):
        assert torch.equal(x, y)                                         # a function of (seed, step) only
    assert torch.equal(a.roles["pair"].images, a.images)                 # same pictures, same flips
    own, _, _ = batch_indices(7, 5, len(ds), role_seed(3, "other"))
    expected = ds.batch(own.numpy(), flip=flips_at(7, 5, role_seed(3, "other"))).images
    assert torch.equal(a.roles["other"].images, expected) and not torch.equal(expected, a.images)


def test_an_unknown_or_missing_role_is_one_clear_error(registered, tmp_path):
    bad = run()
    bad.roles = {"styles": "digits"}
    with pytest.raises(ConfigError, match="takes no data set styles; its roles: pair, other"):
        train(bad, tmp_path / "x", progress=False)
