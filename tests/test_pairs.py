"""Paired data (danqing/data/pairs.py), the sketch function, and how the trainer wires role ``a`` to them."""
from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from danqing.config import ConfigError, DataConfig, TrainConfig
from danqing.data import load_dataset
from danqing.data.pairs import half_of, is_paired, scan_pairs
from danqing.families import FAMILIES
from danqing.protocol import DataRole, FamilySpec, Phase
from danqing.train import Run, _paired_sides, _role_data, train

pytest.importorskip("skimage")


def _colour(i: int, side: str) -> tuple[int, int, int]:
    return (10 * i, 200 if side == "a" else 50, 30)


def ab_folder(tmp_path, n=6):
    """A/ 0..n-1 and B/ 1..n (pairs 1..n-1); B/3 is wider than A/3."""
    (tmp_path / "A").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (8, 8), _colour(i, "a")).save(tmp_path / "A" / f"{i}.png")
    (tmp_path / "trainB").mkdir()
    for i in range(1, n + 1):
        Image.new("RGB", (12 if i == 3 else 8, 8), _colour(i, "b")).save(tmp_path / "trainB" / f"{i}.jpg", quality=100)
    return tmp_path


def load(source, side, half=0, size=8):
    return load_dataset(DataConfig(str(source), size=size, channels=3, pair=side, half=half), progress=False)


def test_ab_folders_pair_by_name_and_leave_out_the_rest(tmp_path):
    folder = ab_folder(tmp_path)
    scan = scan_pairs(folder)
    assert scan is not None and scan.layout == "folders"
    assert [n for n, _, _ in scan.pairs] == ["1", "2", "3", "4", "5"]
    assert scan.only == {"a": ["A/0.png"], "b": ["trainB/6.jpg"]}
    assert [m[0] for m in scan.mismatched] == ["3"]
    with pytest.warns(UserWarning, match="without a partner"):
        a = load(folder, "a")
    b = load(folder, "b")
    assert len(a) == len(b) == 5 and a.skipped == {"without a partner": 2}
    # The same order on both sides: pair i's colours (the red channel is 10 * its number).
    assert np.array_equal(a.images[:, 0, 4, 4], [10, 20, 30, 40, 50])
    assert np.abs(b.images[:, 0, 4, 4].astype(int) - [10, 20, 30, 40, 50]).max() <= 2     # JPEG
    assert a.images[:, 1, 4, 4].min() > 190 and b.images[:, 1, 4, 4].max() < 60
    assert b.images.shape == (5, 3, 8, 8)                # the wider B/3 resized like the rest
    # data.select picks pairs by name, the same ones on both sides
    picked = [load_dataset(DataConfig(str(folder), size=8, pair=side, select="^[24]$"), progress=False)
              for side in "ab"]
    assert picked[0].captions == picked[1].captions == ["2", "4"]
    assert np.array_equal(picked[0].images[:, 0, 4, 4], [20, 40])


def test_side_by_side_pictures_split_into_left_a_and_right_b(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {}
    for name in ("x", "y", "z"):
        pictures[name] = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
        Image.fromarray(pictures[name]).save(tmp_path / f"{name}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "square.png")     # not side by side: left out
    assert is_paired(str(tmp_path)) and scan_pairs(tmp_path).not_split == ["square.png"]
    a, b = load(tmp_path, "a"), load(tmp_path, "b")
    for i, name in enumerate(("x", "y", "z")):
        assert np.array_equal(a.images[i], pictures[name][:, :8].transpose(2, 0, 1))
        assert np.array_equal(b.images[i], pictures[name][:, 8:].transpose(2, 0, 1))


def test_halves_are_disjoint_and_cover_every_pair(tmp_path):
    for side in ("A", "B"):
        (tmp_path / side).mkdir()
        for i in range(40):
            Image.new("L", (4, 4), i * 6).save(tmp_path / side / f"{i:02d}.png")
    names = [f"{i:02d}" for i in range(40)]
    first = {n for n in names if half_of(n) == 1}
    assert 0 < len(first) < 40 and {half_of(n) for n in names} == {1, 2}
    one, two = load(tmp_path, "a", half=1, size=4), load(tmp_path, "b", half=2, size=4)
    assert len(one) + len(two) == 40
    seen_one = {int(v) // 6 for v in one.images[:, 0, 0, 0]}
    seen_two = {int(v) // 6 for v in two.images[:, 0, 0, 0]}
    assert seen_one.isdisjoint(seen_two) and seen_one | seen_two == set(range(40))
    assert seen_one == {int(n) for n in first}


def test_config_refuses_bad_pair_settings():
    with pytest.raises(ConfigError, match="data.pair must be a or b"):
        DataConfig(pair="c")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="data.half splits the pairs"):
        DataConfig(half=1)
    with pytest.raises(ConfigError, match="data.half must be 0"):
        DataConfig(pair="a", half=3)


def test_sketch_is_deterministic_dark_lines_on_white():
    from danqing.data.sketch import sketch
    picture = np.full((48, 48, 3), 255, np.uint8)
    picture[10:38, 12:36] = (200, 40, 40)               # a flat red box: outlined by its colour edges
    picture[20:28, 20:28] = (40, 200, 40)
    one, again, other = sketch(picture, 1), sketch(picture, 1), sketch(picture, 2)
    assert one.dtype == np.uint8 and one.shape == (48, 48, 3)
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    assert set(np.unique(one)) <= {0, 255} and 0 < (one == 0).mean() < 0.3
    assert (one[0] == 255).all() and (one[:, :5] == 255).all()      # nothing but the drawing: white paper
    assert (sketch(np.full((48, 48, 3), 255, np.uint8), 0) == 255).all()
    assert (sketch(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), 0) == 255).all()


def test_data_info_reports_the_pairing(tmp_path, capsys, monkeypatch):
    from danqing.cli import main
    monkeypatch.setenv("COLUMNS", "200")
    folder = ab_folder(tmp_path)
    with pytest.warns(UserWarning, match="without a partner"):
        assert main(["data", "info", str(folder), "--size", "8"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "A/ and B/ folders" in out and "pairs │ 5" in out
    assert "A/0.png" in out and "trainB/6.jpg" in out and "3 (8x8 vs 12x8)" in out


# ---------------------------------------------------------------- the trainer's role a

@dataclass(frozen=True)
class Config:
    image_size: int = 8
    image_channels: int = 3


class Translator(nn.Module):
    seen: list = []

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.w = nn.Parameter(torch.zeros(()))

    def phases(self):
        return [Phase("main")]

    def loss(self, batch, phase, step=0, carry=None):
        if batch.images.device.type != "meta":
            Translator.seen.append((batch.images.clone(), batch.roles["a"].images.clone()))
        return {"loss": (self.w * batch.roles["a"].images - batch.images).square().mean()}


PAIRED = FamilySpec("toy_pix2pix", Config, Translator, {"tiny": Config()}, "paired", {"warmup": 0},
                    roles=(DataRole("a", "the input pictures", paired=True),))
UNPAIRED = dataclasses.replace(PAIRED, name="toy_cyclegan", roles=(DataRole("a", "the input pictures"),))


@pytest.fixture
def registered(monkeypatch):
    for spec in (PAIRED, UNPAIRED):
        module = types.ModuleType(f"{spec.name}_family")
        module.SPEC = spec
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setitem(FAMILIES, spec.name, module.__name__)
    Translator.seen = []


def toy_run(family, source, roles=None):
    return Run(family, Config(), DataConfig(str(source), size=8, channels=3),
               TrainConfig(steps=2, batch_size=4, warmup=0, bf16="off", sample_every=0, log_every=1), "tiny",
               roles=roles or {})


def test_a_paired_role_takes_side_a_of_the_main_data(registered, tmp_path):
    folder = ab_folder(tmp_path / "data")
    run = _paired_sides(PAIRED, toy_run("toy_pix2pix", folder))
    assert (run.data.pair, run.data.half) == ("b", 0)
    roles = _role_data(PAIRED, run, 5, False)
    assert roles["a"][1].images.shape == (5, 3, 8, 8) and "side a" in roles["a"][1].source
    with pytest.warns(UserWarning, match="without a partner"):
        train(toy_run("toy_pix2pix", folder), tmp_path / "r", progress=False)
    b, a = Translator.seen[0]
    # Paired: the same pictures' two sides in every batch (red = 10 x the pair's number, on both sides).
    torch.testing.assert_close(a[:, 0], b[:, 0], atol=0.05, rtol=0)


def test_an_unpaired_role_takes_the_other_half(registered, tmp_path):
    folder = ab_folder(tmp_path)
    run = _paired_sides(UNPAIRED, toy_run("toy_cyclegan", folder))
    assert (run.data.pair, run.data.half) == ("b", 2)
    main = load_dataset(run.data, progress=False)
    a = _role_data(UNPAIRED, run, len(main), False)["a"][1]
    assert len(a) + len(main) == 5
    reds = {int(v) // 10 for v in a.images[:, 0, 4, 4]}, {round(int(v) / 10) for v in main.images[:, 0, 4, 4]}
    assert reds[0].isdisjoint(reds[1]) and reds[0] | reds[1] == {1, 2, 3, 4, 5}


def test_an_explicit_role_a_is_used_as_given(registered, tmp_path):
    folder = ab_folder(tmp_path)
    run = _paired_sides(UNPAIRED, toy_run("toy_cyclegan", "digits", {"a": str(folder / "A")}))
    assert run.data.pair == ""
    assert len(_role_data(UNPAIRED, run, 1797, False)["a"][1]) == 6


def test_a_paired_role_on_unpaired_data_says_what_to_use(registered):
    run = _paired_sides(PAIRED, toy_run("toy_pix2pix", "digits"))
    with pytest.raises(ConfigError, match="digits is not paired: toy_pix2pix trains on pairs .* use cyclegan or cut"):
        _role_data(PAIRED, run, 1797, False)


def test_emoji_styles_pairs_by_key_holds_out_either_side_and_names_a_stale_build(tmp_path, capsys):
    """emoji-styles from a small emoji folder: flat and 3D pictures of one key pair up, a pair is held out when
    either picture is, a key drawn in one style only is left out; fetched again after the emoji folder was
    rebuilt, it says to rebuild (the old pairs may carry old names)."""
    import os

    from danqing.data.paired_sets import fetch_paired
    emoji = tmp_path / "sources" / "emoji"
    layout = {("train", "fluent-flat"): ["1f98a", "1f44d", "2b50", "2764"], ("train", "fluent-3d"): ["1f98a", "2b50"],
              ("heldout", "fluent-3d"): ["1f44d"], ("train", "noto"): ["1f98a"]}
    for (split, style), keys in layout.items():
        (emoji / split / style).mkdir(parents=True)
        for i, key in enumerate(keys):
            colour = (40 * i, 100 if style == "fluent-3d" else 0, 0)
            Image.new("RGB", (8, 8), colour).save(emoji / split / style / f"{key}.png")
    (emoji / "licenses.json").write_text("[]")
    target = fetch_paired("emoji-styles", tmp_path, fetch_emoji=lambda root: pytest.fail("the emoji set is there"))
    assert sorted(p.name for p in (target / "train" / "A").iterdir()) == ["1f98a.png", "2b50.png"]
    assert [p.name for p in (target / "heldout" / "B").iterdir()] == ["1f44d.png"]
    assert (np.asarray(Image.open(target / "train" / "B" / "2b50.png")) ==
            np.asarray(Image.open(emoji / "train" / "fluent-3d" / "2b50.png"))).all()

    fetch_paired("emoji-styles", tmp_path, fetch_emoji=pytest.fail)
    assert "older build" not in capsys.readouterr().err
    later = (target / "LICENSES.md").stat().st_mtime + 10
    os.utime(emoji / "licenses.json", (later, later))
    fetch_paired("emoji-styles", tmp_path, fetch_emoji=pytest.fail)
    err = capsys.readouterr().err
    assert "older build of the emoji set" in err and "emoji-styles again with --force" in err
