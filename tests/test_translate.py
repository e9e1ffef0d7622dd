"""The picture-to-picture families (Pix2Pix, CycleGAN, CUT) and their networks: shapes, the PatchGAN's receptive
field, the jitter's alignment, the history pool, the cycle loss, PatchNCE's closed form, translation."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from danqing.families import spec
from danqing.families.cut import patch_nce
from danqing.families.cyclegan import cycle_loss
from danqing.families.pix2pix import jitter, jitter_offsets
from danqing.nn.translate import HistoryPool, PatchGAN, ResnetGenerator, UNet, patch_layers, patch_receptive_field
from danqing.protocol import Batch, Cond, generators


def pictures(n: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def tiny(name: str, **changes):
    torch.manual_seed(0)
    fam = spec(name)
    return fam.Model(dataclasses.replace(fam.presets["tiny"], **changes))


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("size", [16, 32, 64])
def test_network_shapes(size):
    x = pictures(2, 3, size)
    unet = UNet(3, 1, size, base=4, cap=16)
    assert unet(x).shape == (2, 1, size, size)
    assert unet(x, lambda shape: torch.randn(shape)).shape == (2, 1, size, size)
    res = ResnetGenerator(3, 1, base=4, blocks=2)
    assert res(x).shape == (2, 1, size, size)
    feats = res.encode(x, (0, 1, 2, 3, 4, 5))
    assert [tuple(f.shape[1:]) for f in feats] == [(3, size, size), (4, size, size), (8, size // 2, size // 2),
                                                   (16, size // 4, size // 4), (16, size // 4, size // 4),
                                                   (16, size // 4, size // 4)]
    d = PatchGAN(6, size, base=4, cap=16)
    logits = d(torch.cat([x, x], dim=1))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] >= 1


def test_unet_depth_and_paper_sizes():
    """At 256 px the U-Net has 8 encoder layers down to 1x1 and the paper's widths C64-...-C512."""
    unet = UNet(3, 3, 256)
    assert len(unet.down) == 8 and len(unet.up) == 7 and unet.dropout_blocks == 3
    convs = [next(m for m in layer.modules() if isinstance(m, nn.Conv2d)) for layer in unet.down]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512, 512, 512]


def test_receptive_field():
    """The formula gives the paper's 70x70 PatchGAN for C64-C128-C256-C512 at 256 px, and the layer count keeps the
    field near 70/256 of the picture."""
    assert patch_receptive_field(3) == 70
    assert [patch_receptive_field(n) for n in range(5)] == [7, 16, 34, 70, 142]
    assert patch_layers(256) == 3 and PatchGAN(3, 256).n_down == 3
    assert patch_layers(128) == 2 and patch_layers(64) == 1 and patch_layers(16) == 1 and patch_layers(512) == 4


@pytest.mark.parametrize("n_down", [1, 2])
def test_receptive_field_matches_the_network(n_down):
    """One central logit's gradient reaches exactly patch_receptive_field(n) input pixels a side (batch norm in
    eval mode is per pixel, so it does not spread the field as a per-picture norm would)."""
    d = PatchGAN(1, 64, base=4, n_down=n_down, norm="batch").eval()
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    assert x.grad is not None
    rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero()
    assert int(rows.max() - rows.min() + 1) == patch_receptive_field(n_down)


# ---------------------------------------------------------------- Pix2Pix

def test_jitter_keeps_the_sides_aligned():
    """B = a known per-pixel function of A (channels reversed and negated) stays so after the jitter; the crop
    really moves the pictures; scale 1 changes nothing."""
    a = pictures(6, 3, 16)
    b = -a.flip(1)
    offsets = jitter_offsets(6, 16, 286 / 256, torch.Generator().manual_seed(0))
    ja, jb = jitter(a, b, offsets, 286 / 256)
    assert ja.shape == a.shape and jb.shape == b.shape
    assert torch.equal(jb, -ja.flip(1))
    assert not torch.allclose(ja, a, atol=1e-2)
    assert offsets.min() >= 0 and offsets.max() <= round(16 * 286 / 256) - 16
    same = jitter(a, b, offsets, 1.0)
    assert same[0] is a and same[1] is b
    # one-channel A with three-channel B: each side keeps its channels
    ja, jb = jitter(a[:, :1], b, offsets, 286 / 256)
    assert ja.shape == (6, 1, 16, 16) and jb.shape == b.shape


def test_pix2pix_phases_share_the_jittered_pair():
    model = tiny("pix2pix")
    a, b = pictures(2, 3, 16, 1), pictures(2, 3, 16, 2)
    batch, carry = Batch(b, roles={"a": Batch(a)}), {}
    model.loss(batch, "d", 0, carry)
    pair = carry["pair"]
    model.loss(batch, "g", 0, carry)
    assert carry["pair"] is pair and pair[0].shape == a.shape
    with pytest.raises(ValueError, match="data role a"):
        model.loss(Batch(b), "d", 0, {})


def test_pix2pix_dropout_is_the_seed_and_can_be_off():
    model = tiny("pix2pix").eval()
    options = spec("pix2pix").Options
    x = pictures(2, 3, 16, 4)
    one = model.translate(Cond(image=x), generator=generators([1, 2]))
    assert torch.equal(one, model.translate(Cond(image=x), generator=generators([1, 2])))
    assert not torch.allclose(one, model.translate(Cond(image=x), generator=generators([3, 4])))
    off = model.translate(Cond(image=x), generator=generators([1, 2]), options=options(dropout=False))
    assert torch.equal(off, model.translate(Cond(image=x), generator=generators([3, 4]), options=options(dropout=False)))
    big = model.translate(Cond(image=pictures(1, 3, 32)), generator=generators([0]))     # a multiple of 16
    assert big.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        model.translate(Cond(image=pictures(1, 3, 24)), generator=generators([0]))
    with pytest.raises(ValueError, match="3-channel"):
        model.translate(Cond(image=pictures(1, 1, 16)), generator=generators([0]))


# ---------------------------------------------------------------- CycleGAN

def test_history_pool_returns_past_fakes_half_the_time_once_full():
    """Once full, each new fake comes back with probability 1/2, else a stored one (which it replaces).  Over n
    draws the count of stored ones is Binomial(n, 1/2): within 4 standard deviations, sqrt(n / 4)."""
    pool = HistoryPool(50, 1, 2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first = pool(torch.arange(50.0)[:, None, None, None].expand(50, 1, 2, 2))
        assert torch.equal(first[:, 0, 0, 0], torch.arange(50.0)) and int(pool.count) == 50   # filling: as given
        n, past, seen = 4000, 0, set(range(50))
        for i in range(50, 50 + n, 8):
            new = torch.arange(float(i), float(i + 8))
            got = pool(new[:, None, None, None].expand(8, 1, 2, 2))[:, 0, 0, 0]
            for g, x in zip(got.tolist(), new.tolist()):
                if g != x:
                    past += 1
                    assert g in seen and g < x                   # a fake the pool was given before
                seen.add(x)                                      # (pictures go in one by one, in batch order)
    assert abs(past - n / 2) < 4 * math.sqrt(n / 4), past
    assert int(pool.count) == 50


def test_history_pool_survives_a_checkpoint(tmp_path):
    pool = HistoryPool(5, 3, 4)
    pool(pictures(3, 3, 4))
    save_file(pool.state_dict(), str(tmp_path / "pool.safetensors"))
    back = HistoryPool(5, 3, 4)
    back.load_state_dict(load_file(str(tmp_path / "pool.safetensors")))
    assert int(back.count) == 3 and torch.equal(back.images, pool.images)
    model = tiny("cyclegan")
    model.loss(Batch(pictures(4, 3, 16), roles={"a": Batch(pictures(4, 3, 16, 1))}), "d", 0, {})
    state = model.state_dict()
    assert int(state["pool_a.count"]) == 4 and int(state["pool_b.count"]) == 4


def test_cycle_loss_is_zero_for_identity_generators():
    a, b = pictures(2, 3, 16, 1), pictures(2, 3, 16, 2)
    assert float(cycle_loss(lambda x: x, lambda x: x, a, b)) == 0.0
    assert float(cycle_loss(lambda x: x, lambda x: -x, a, b)) > 0
    model = tiny("cyclegan")
    model.g.ab, model.g.ba = nn.Identity(), nn.Identity()            # both generators the identity
    out = model.loss(Batch(b, roles={"a": Batch(a)}), "g", 0, {})
    assert float(out["cycle"]) == 0.0 and float(out["identity"]) == 0.0


def test_cyclegan_reverse_goes_from_b_to_a():
    model = tiny("cyclegan", input_channels=1, identity_weight=0.0).eval()
    options = spec("cyclegan").Options
    b = pictures(2, 3, 16)
    back = model.translate(Cond(image=b), options=options(reverse=True))
    assert back.shape == (2, 1, 16, 16)
    torch.testing.assert_close(back, model.g.ba(b).clamp(-1, 1), atol=0, rtol=0)
    forward = model.translate(Cond(image=pictures(2, 1, 16)))
    assert forward.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="1-channel"):
        model.translate(Cond(image=b))


# ---------------------------------------------------------------- CUT

@pytest.mark.parametrize("n", [2, 8, 16])
def test_patch_nce_closed_form(n):
    """Orthonormal features with q_i = k_i: the positive logit is 1/tau, the n - 1 negatives 0, so every patch's
    loss is -log(e^(1/tau) / (e^(1/tau) + n - 1))."""
    tau = 0.07
    q = torch.eye(16)[:n].expand(3, -1, -1)                  # (B, N, D)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n - 1))
    got = patch_nce(q, q.clone(), tau)
    assert got.shape == (3, n)
    torch.testing.assert_close(got, torch.full((3, n), expected), atol=1e-6, rtol=1e-6)
    # keys that match no query: every logit 0, the loss is log n
    keys = torch.eye(16)[n:2 * n].expand(3, -1, -1) if 2 * n <= 16 else torch.zeros(3, n, 16)
    torch.testing.assert_close(patch_nce(q, keys, tau), torch.full((3, n), math.log(n)), atol=1e-6, rtol=1e-6)


def test_fastcut_trains_without_the_identity_term():
    model = tiny("cut", fast=True)
    out = model.loss(Batch(pictures(2, 3, 16), roles={"a": Batch(pictures(2, 3, 16, 1))}), "g", 0, {})
    assert "nce_identity" not in out and model.config.nce_weight == 10.0
    assert "nce_identity" in tiny("cut").loss(Batch(pictures(2, 3, 16), roles={"a": Batch(pictures(2, 3, 16, 1))}),
                                              "g", 0, {})
    with pytest.raises(ValueError, match="nce_layers"):
        tiny("cut", nce_layers=(0, 9))


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan", "cut"])
def test_translate_is_deterministic_per_seed_and_keeps_the_shape(name):
    model = tiny(name).eval()
    for size in (16, 32):
        x = pictures(3, 3, size, 5)
        y = model.translate(Cond(image=x), generator=generators([7, 8, 9]))
        assert y.shape == x.shape and y.abs().max() <= 1
        assert torch.equal(y, model.translate(Cond(image=x), generator=generators([7, 8, 9])))
        torch.testing.assert_close(model.translate(Cond(image=x[2:]), generator=generators([9]))[0], y[2],
                                   atol=1e-5, rtol=0)


def test_translate_command_on_a_folder_writes_each_picture_with_its_parameters(tmp_path, capsys):
    """`danqing train pix2pix --data digit-sketch` (the paired set: sketches as a, digits as b), then
    `danqing translate FOLDER`: one PNG per input at the model's size, carrying its seed and options, and the
    same picture again for the same seed; a model that paints from noise is refused before it loads."""
    from PIL import Image

    from danqing.cli import main
    run = tmp_path / "run"
    assert main(["train", "pix2pix", "--data", "digit-sketch", "--preset", "tiny", "--steps", "2", "--batch-size",
                 "2", "-q", "--bf16", "off", "--train.sample_n=4", "--out", str(run)]) == 0
    grid = Image.open(run / "samples" / "step-0000002.png")
    assert grid.size == (4 * 3 * 18 + 2, 18 + 2)            # four inputs, each with its picture and its target
    (tmp_path / "in").mkdir()
    for name, shade in (("ring", 0), ("blank", 255)):
        Image.new("RGB", (24, 24), (shade,) * 3).save(tmp_path / "in" / f"{name}.png")
    capsys.readouterr()
    assert main(["translate", str(tmp_path / "in"), "--model", str(run), "-o", str(tmp_path / "out"),
                 "--seed", "5", "--bf16", "off"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["blank.png", "ring.png"]
    ring = Image.open(tmp_path / "out" / "ring.png")
    assert ring.size == (16, 16) and "Seed: 5" in ring.text["parameters"] and "Dropout: True" in ring.text["parameters"]
    assert main(["translate", str(tmp_path / "in" / "ring.png"), "--model", str(run), "-o", str(tmp_path / "again"),
                 "--seed", "5", "--bf16", "off"]) == 0
    assert Image.open(tmp_path / "again" / "ring.png").tobytes() == ring.tobytes()
    assert main(["translate", str(tmp_path / "in"), "--model", "emoji", "-o", str(tmp_path / "x")]) == 2
    assert "paints from noise" in capsys.readouterr().err


def held_out_pairs(model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs (side a) and true targets (side b) of tests/data/<model>, (4, 3, 64, 64) in [-1, 1]; skips the
    test where the bundled model is not installed."""
    from PIL import Image

    from danqing.pipeline import WEIGHTS
    from danqing.pixels import from_uint8
    if not (WEIGHTS / model).is_dir():
        pytest.skip(f"the bundled {model} model is not installed")
    folder = Path(__file__).parent / "data" / model

    def read(side: str) -> torch.Tensor:
        files = sorted(folder.glob(f"*.{side}.png"))
        return from_uint8(torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                                       for f in files]))
    return read("a"), read("b")


def test_the_bundled_sketch_to_emoji_model_paints_held_out_sketches():
    """The bundled Pix2Pix (its model card): four held-out sketches of tests/data/sketch-to-emoji (line drawings
    of Fluent Emoji 3D pictures, MIT, subjects never trained on) come out closer to their true emoji than the
    sketch itself is (the copy-the-input floor of the card's table), and filled in, not copied.  The pipeline's
    ``image=`` paints the same picture as the painter for the same seed."""
    from PIL import Image

    from danqing.generate import Request
    from danqing.pipeline import PipelineError, load
    from danqing.pixels import to_uint8
    from danqing.projection import psnr
    sketches, targets = held_out_pairs("sketch-to-emoji")
    pipe = load("sketch-to-emoji")
    out = pipe.painter(Request(list(range(len(sketches))), image=sketches))
    assert out.shape == targets.shape == (4, 3, 64, 64)
    assert (psnr(out, targets) > psnr(sketches, targets) + 2).all()     # the card: 14.6 against 10.3 dB
    assert out.mean() < sketches.mean() - 0.1                       # colour where the sketch is white
    first = Image.fromarray(to_uint8(sketches[0]).permute(1, 2, 0).numpy())
    again = np.asarray(pipe(image=first, n=1, seed=0)[0], np.int16)
    assert np.abs(again - to_uint8(out[0]).permute(1, 2, 0).numpy()).mean() < 2
    with pytest.raises(PipelineError, match="give the picture once"):
        pipe(image=first, init_image=first)
