"""The discriminator's augmentations (DiffAugment's transforms, ADA's controller)."""
from __future__ import annotations

import pytest
import torch

from danqing.nn.augment import OPS, Augmenter, ada_step, augment, cutout, parse_policy, translation


@pytest.fixture
def pictures():
    torch.manual_seed(0)
    return torch.rand(6, 3, 16, 16) * 1.8 - 0.9 + 0.05           # no exact zeros, so holes and fills show


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_transform_keeps_the_shape_is_differentiable_and_is_the_identity_at_p_0(pictures, name):
    x = pictures.clone().requires_grad_(True)
    y = OPS[name](x, 1.0)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(OPS[name](pictures, 0.0), pictures)


def test_translation_shifts_whole_pixels_and_fills_with_zeros(pictures):
    """Every output picture is its input moved by some (dy, dx) within 1/8 of the side, zeros where it left."""
    out = translation(pictures, 1.0)
    for x, y in zip(pictures, out):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                moved = torch.zeros_like(x)
                moved[:, max(0, dy):16 + min(0, dy), max(0, dx):16 + min(0, dx)] = \
                    x[:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
                matches.append(torch.equal(moved, y))
        assert sum(matches) == 1


def test_cutout_zeros_one_square_of_half_the_side_at_most(pictures):
    out = cutout(pictures, 1.0)
    for x, y in zip(pictures, out):
        hole = (y == 0).all(dim=0)
        assert 0 < hole.sum() <= 8 * 8
        rows, cols = hole.any(1).nonzero()[:, 0], hole.any(0).nonzero()[:, 0]
        assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()     # one solid rectangle
        assert torch.equal(y[:, ~hole], x[:, ~hole])


def test_policies_are_checked():
    assert parse_policy("color, cutout") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown augmentation rotate"):
        parse_policy("color,rotate")
    assert torch.equal(augment(torch.ones(2, 3, 4, 4), ("color",), 0.0), torch.ones(2, 3, 4, 4))


def test_ada_controller_moves_p_towards_the_target():
    """p rises when r_t is above the target, falls below it, by batch * interval / (speed_kimg * 1000)."""
    assert ada_step(0.5, 0.9, batch=32, interval=4, speed_kimg=100) == pytest.approx(0.5 + 128 / 100_000)
    assert ada_step(0.5, 0.1, batch=32, interval=4, speed_kimg=100) == pytest.approx(0.5 - 128 / 100_000)
    assert ada_step(0.0, 0.1, batch=32, interval=4, speed_kimg=0.001) == 0.0
    assert ada_step(0.9, 0.9, batch=32, interval=4, speed_kimg=0.001) == 1.0


def test_ada_p_rises_when_the_discriminator_overfits_and_falls_when_it_does_not():
    """A discriminator sure every real picture is real (r_t = 1) raises p; one that cannot tell (r_t = 0)
    lowers it again; p is a buffer, so checkpoints keep it."""
    aug = Augmenter("flip,color", ada=True, interval=2, speed_kimg=1.0)
    assert float(aug.p) == 0.0 and "p" in aug.state_dict()
    for step in range(20):
        aug.observe(torch.full((8,), 3.0), step)                 # overfitting: every real logit positive
    high = float(aug.p)
    assert high == pytest.approx(10 * 8 * 2 / 1000)
    for step in range(20, 30):
        aug.observe(torch.tensor([1.0, -1.0] * 4), step)         # r_t = 0 < 0.6
    assert float(aug.p) < high


def test_data_preview_shows_what_the_discriminator_sees(tmp_path, capsys):
    """`danqing data preview --augment` draws the augmented pictures, the same for the same seed."""
    import numpy as np
    from PIL import Image

    from danqing.cli import main
    for name in ("a", "b", "plain"):
        extra = [] if name == "plain" else ["--augment", "color,translation,cutout"]
        assert main(["data", "preview", "digits", "--size", "16", "-n", "4", "-o", str(tmp_path / f"{name}.png"),
                     *extra]) == 0
    a, b, plain = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("a", "b", "plain"))
    assert np.array_equal(a, b) and a.shape == plain.shape and not np.array_equal(a, plain)
