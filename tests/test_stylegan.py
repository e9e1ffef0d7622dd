"""StyleGAN2's building blocks against their definitions, and its truncation and style mixing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from danqing.families import spec
from danqing.families.stylegan import Options
from danqing.nn.equalized import modulated_conv
from danqing.protocol import Cond, generators


def test_modulated_conv_is_a_per_picture_loop_of_plain_convolutions():
    """Golden: the grouped convolution (and the unfused form training uses) equals convolving each picture with
    its own modulated, demodulated weights (StyleGAN2 eq. 1 and 3, written out with F.conv2d one at a time)."""
    g = torch.Generator().manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 8, 8, generator=g), torch.randn(4, 5, 3, 3, generator=g), \
        torch.rand(3, 5, generator=g) + 0.5
    for demodulate in (True, False):
        out = modulated_conv(x, weight, styles, demodulate)
        torch.testing.assert_close(modulated_conv(x, weight, styles, demodulate, fused=False), out,
                                   rtol=1e-5, atol=1e-5)
        for b in range(3):
            wb = weight * styles[b][None, :, None, None]                              # eq. 1
            if demodulate:
                wb = wb / (wb.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()   # eq. 3
            torch.testing.assert_close(out[b], F.conv2d(x[b:b + 1], wb, padding=1)[0], rtol=1e-5, atol=1e-5)


def test_demodulation_gives_unit_output_variance_for_unit_input():
    """With i.i.d. unit-variance input, demodulated weights have unit L2 norm per output channel, so each output
    has unit variance (StyleGAN2 sec. 2.2), whatever the styles."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, 64, 64, generator=g)
    out = modulated_conv(x, torch.randn(32, 64, 3, 3, generator=g), torch.rand(4, 64, generator=g) * 3 + 0.1)
    assert out[..., 1:-1, 1:-1].var().item() == pytest.approx(1.0, abs=0.03)      # interior: no zero padding


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    fam = spec("stylegan")
    m = fam.Model(fam.presets["tiny"]).eval()
    with torch.no_grad():
        m.g.mapping.w_avg.copy_(torch.randn_like(m.g.mapping.w_avg))      # a tracked mean that is not zero
    return m


def test_truncation_zero_is_the_class_mean_and_one_is_the_identity(model):
    z = torch.randn(4, model.config.z_dim, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 3, 3, 7])
    cond = Cond(labels=labels)
    torch.testing.assert_close(model.ws(z, cond, 0.0)[:, 0], model.g.mapping.w_avg[labels])
    torch.testing.assert_close(model.ws(z, cond, 1.0)[:, 0], model.g.mapping(z, cond))
    half = model.ws(z, cond, 0.5)[:, 0]
    torch.testing.assert_close(half, (model.g.mapping.w_avg[labels] + model.g.mapping(z, cond)) / 2)


def test_style_mixing(model):
    """Mixing a picture with its own seed changes nothing; another seed changes it, in any layer range, and the
    ranges cover the styles from the first to the last."""
    cond = Cond(labels=torch.tensor([1, 2]))
    plain = model.sample(2, cond, generator=generators([5, 9]))
    one = model.sample(1, cond.rows(slice(0, 1)), generator=generators([5]))
    same = model.sample(1, cond.rows(slice(0, 1)), generator=generators([5]), options=Options(mix_seed=5))
    assert torch.equal(same, one)
    coarse = model.sample(2, cond, generator=generators([5, 9]), options=Options(mix_seed=11, mix_layers="coarse"))
    fine = model.sample(2, cond, generator=generators([5, 9]), options=Options(mix_seed=11, mix_layers="fine"))
    assert (coarse - plain).abs().mean() > 0 and (fine - plain).abs().mean() > 0
    assert model.mix_range("coarse").start == 0 and model.mix_range("fine").stop == model.num_ws


def test_truncation_is_an_option_with_limits():
    from danqing.generate import Painter, PipelineError, Request
    fam = spec("stylegan")
    painter = Painter(fam.Model(fam.presets["tiny"]).eval(), fam)
    assert painter(Request([0, 1], labels=[0, 1], options={"truncation": 0.7})).shape == (2, 3, 16, 16)
    with pytest.raises(PipelineError, match="truncation must be between 0 and 1, got 1.5"):
        painter(Request([0], labels=[0], options={"truncation": 1.5}))


def test_a_prompt_conditioned_stylegan_trains_and_paints_from_pooled_text():
    """With text_dim, the mapping network and the discriminator's projection read the pooled prompt."""
    import dataclasses

    from danqing.generate import Painter, Request
    from danqing.protocol import Batch
    fam = spec("stylegan")
    c = dataclasses.replace(fam.presets["tiny"], num_classes=0, text_dim=8, text_tokens=4)
    assert fam.facts(c).text is not None and fam.facts(c).text.dim == 8
    torch.manual_seed(0)
    model = fam.Model(c)
    g = torch.Generator().manual_seed(3)
    batch = Batch(torch.rand(4, 3, 16, 16, generator=g) * 2 - 1, cond=Cond(pooled=torch.randn(4, 8, generator=g)))
    for ph in model.phases():
        out = model.loss(batch, ph.name, 0, {})
        assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="paints from text"):
        model.loss(Batch(batch.images), "d", 0, {})

    def encode(texts):                                   # a stand-in encoder: one random vector per word count
        return Cond(pooled=torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(len(t.split())))
                                        for t in texts]))
    painter = Painter(model.eval(), fam, encode_text=encode)
    a = painter(Request([1, 2], ["a fox", "a fox"]))
    b = painter(Request([1, 2], ["a red fox face", "a red fox face"]))
    assert a.shape == (2, 3, 16, 16) and not torch.equal(a, b)


def test_mix_grid_sheet(tmp_path, capsys):
    """`danqing sample RUN --mix-grid ROWS/COLS`: (rows + 1) x (cols + 1) cells; a row seed mixed with itself is
    its own picture; seeds that are not numbers are one clear line."""
    import numpy as np
    from PIL import Image

    from danqing.cli import main
    assert main(["train", "stylegan", "--data", "digits", "--preset", "tiny", "--steps", "1", "--batch-size", "4",
                 "-q", "--bf16", "off", "--train.sample_every=0", "--train.sample_n=1", "--out",
                 str(tmp_path / "run")]) == 0
    out = tmp_path / "mix.png"
    assert main(["sample", str(tmp_path / "run"), "--mix-grid", "3,4/4,5,6", "--mix-layers", "coarse", "--bf16", "off",
                 "-o", str(out)]) == 0
    sheet = np.asarray(Image.open(out))
    cell = lambda r, c: sheet[2 + r * 18: 2 + r * 18 + 16, 2 + c * 18: 2 + c * 18 + 16]   # 16 px, 2 px gutters
    assert sheet.shape[:2] == (3 * 18 + 2, 4 * 18 + 2)
    assert np.array_equal(cell(2, 0), cell(2, 1)) and not np.array_equal(cell(2, 0), cell(2, 2))
    assert main(["sample", str(tmp_path / "run"), "--mix-grid", "x/1", "-o", str(out)]) == 2
    assert "give the row seeds and the column seeds" in capsys.readouterr().err


@pytest.fixture(scope="module")
def in_range():
    """A tiny generator whose pictures stay inside [-1, 1] (an untrained one's are clipped in ~40% of their
    values, and no latent reaches a clipped picture), with the mean style of each class tracked."""
    torch.manual_seed(0)
    fam = spec("stylegan")
    m = fam.Model(fam.presets["tiny"]).eval()
    with torch.no_grad():
        for t in m.g.synthesis.torgb:
            t.weight.mul_(0.25)
        for k in range(m.config.num_classes):
            m.g.mapping.w_avg[k] = m.g.mapping(torch.randn(1000, m.config.z_dim), Cond(labels=torch.full((1000,), k))).mean(0)
    return m


def test_projection_recovers_the_generators_own_sample(in_range):
    """Projected into W, a picture the generator painted comes back to its own style (PSNR > 40 dB); W+ has
    more freedom and lands elsewhere but still far closer than any other sample of the class."""
    from danqing.projection import psnr

    m, cond = in_range, Cond(labels=torch.tensor([3, 5]))
    target = m.sample(2, cond, generator=generators([1, 2]))
    true_w = m.g.mapping(torch.stack([m.noise(1, generators([s]))[0] for s in (1, 2)]), cond)
    others = m.sample(16, Cond(labels=torch.tensor([3, 5] * 8)), generator=generators(range(10, 26)))
    nearest_other = psnr(others, target.repeat(8, 1, 1, 1)).view(8, 2).max(0).values
    found = {}
    for space in ("w", "w+"):
        found[space] = m.project(target, cond, steps=150, space=space, generator=torch.Generator().manual_seed(0))
        assert found[space]["ws"].shape == (2, m.num_ws, m.config.w_dim)
        got = psnr(m.render(found[space], cond), target)
        assert (got > nearest_other + 8).all(), (space, got, nearest_other)
    assert (psnr(m.render(found["w"], cond), target) > 40).all()
    start = (m.g.mapping.w_avg[[3, 5]] - true_w).norm(dim=1)              # the search starts at the class mean
    assert ((found["w"]["ws"][:, 0] - true_w).norm(dim=1) < 0.1 * start).all()
    with pytest.raises(ValueError, match="projects into w or w\\+"):
        m.project(target, cond, steps=1, space="z")


def test_render_edits_a_projected_latent_like_a_sample(in_range):
    """A sample's own styles and noise, rendered, are the sample; rendering moves them all the way to another
    seed's styles, truncates them to the class mean at psi 0, and mixes in a seed as ``sample`` does."""
    m, cond = in_range, Cond(labels=torch.tensor([4]))
    z = m.noise(1, generators([3]))
    gen = generators([3])
    m.noise(1, gen)                                                 # the maps come after z from the same generator
    latent = {"ws": m.ws(z, cond), **{f"noise.{i}": t for i, t in enumerate(m._layer_noise(1, gen, z.device))}}
    sample = m.sample(1, cond, generator=generators([3]))
    torch.testing.assert_close(m.render(latent, cond), sample)
    mixed = m.sample(1, cond, generator=generators([3]), options=Options(mix_seed=8, mix_layers="coarse"))
    torch.testing.assert_close(m.render(latent, cond, options=Options(mix_seed=8, mix_layers="coarse")), mixed)
    other = m.noise(1, generators([6]))
    toward = m.render(latent, cond, toward=other, strength=torch.ones(1))
    maps = [latent[f"noise.{i}"] for i in range(len(m.g.synthesis.convs))]
    torch.testing.assert_close(toward, m.g.synthesis(m.ws(other, cond), maps).clamp(-1, 1))
    mean = m.render(latent, cond, options=Options(truncation=0.0))
    torch.testing.assert_close(mean, m.g.synthesis(m.g.mapping.w_avg[[4]][:, None].expand(-1, m.num_ws, -1),
                                                   maps).clamp(-1, 1))
    with pytest.raises(ValueError, match="projected with another model"):
        m.render({**latent, "ws": latent["ws"][:, :2]}, cond)


def test_project_command_writes_the_latent_the_picture_and_the_search(tmp_path, capsys):
    """`danqing project` then `danqing sample --latent`: the files, the figures, and one clear line for each
    mistake (a picture that is not square, a file that is not a picture, no class, a latent of another family)."""
    import numpy as np
    from PIL import Image

    from danqing.cli import main
    from danqing.projection import load_latent, save_latent
    run = tmp_path / "run"
    assert main(["train", "stylegan", "--data", "digits", "--preset", "tiny", "--steps", "1", "--batch-size", "4",
                 "-q", "--bf16", "off", "--train.sample_every=0", "--train.sample_n=1", "--out", str(run)]) == 0
    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (30, 20), (30, 30, 200)).save(tmp_path / "wide.png")
    (tmp_path / "notes.png").write_text("not a picture")
    out = tmp_path / "out"
    assert main(["project", str(tmp_path / "red.png"), "--model", str(run), "--class", "3", "-o", str(out),
                 "--steps", "8"]) == 0
    assert "PSNR" in capsys.readouterr().out
    latent, about = load_latent(out / "red.latent.safetensors")
    assert about["space"] == "w" and about["prompt"] == "3" and about["steps"] == 8 and "vgg_distance" in about
    assert latent["ws"].shape[0] == 1 and Image.open(out / "red.png").size == (16, 16)
    assert Image.open(out / "red-steps.png").size == (9 * 18 + 2, 18 + 2)          # the picture and 8 snapshots
    assert main(["project", str(tmp_path / "wide.png"), "--model", str(run), "--class", "3", "-o", str(out),
                 "--steps", "2", "--distance", "pixel", "--space", "w+"]) == 2
    assert "is 30x20, not square" in capsys.readouterr().err
    assert main(["project", str(tmp_path / "wide.png"), "--model", str(run), "--class", "3", "-o", str(out),
                 "--steps", "2", "--distance", "pixel", "--space", "w+", "--fit", "pad"]) == 0
    assert load_latent(out / "wide.latent.safetensors")[1]["space"] == "w+"
    for args, message in [([str(tmp_path / "notes.png"), "--class", "3"], "cannot read"),
                          ([str(tmp_path / "red.png")], "say which one each picture is with --class"),
                          ([str(tmp_path / "red.png"), "--class", "3", "--steps", "0"], "--steps must be")]:
        assert main(["project", *args, "--model", str(run), "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
    capsys.readouterr()
    assert main(["sample", str(run), "--latent", str(out / "red.latent.safetensors"), "--toward", "5", "-n", "3",
                 "--truncation", "0.8", "-o", str(tmp_path / "toward.png")]) == 0
    strip = np.asarray(Image.open(tmp_path / "toward.png"))
    assert strip.shape[:2] == (18 + 2, 3 * 18 + 2)
    save_latent(tmp_path / "other.safetensors", latent, {"family": "diffusion", "model": "x"})
    assert main(["sample", str(run), "--latent", str(tmp_path / "other.safetensors"), "-o", str(tmp_path / "o.png")]) == 2
    assert "projected with a diffusion model" in capsys.readouterr().err


def test_the_bundled_emoji_faces_model_paints_each_style():
    """The bundled StyleGAN (docs/stylegan.md, its model card): five styles as classes; at psi 0 two seeds of a
    style share its mean style (only the per-pixel noise differs), at psi 1 they differ far more."""
    from danqing.pipeline import WEIGHTS, load
    if not (WEIGHTS / "stylegan-emoji-faces").is_dir():
        pytest.skip("the bundled StyleGAN is not installed")
    pipe = load("stylegan-emoji-faces")
    assert pipe.class_names == ["fluent-3d", "fluent-flat", "noto", "openmoji", "twemoji"]
    import numpy as np
    pictures = [np.asarray(p, dtype=np.float32) for p in pipe("", n=5, seed=0)]     # the styles in turn
    assert all(p.shape == (32, 32, 3) and p.std() > 20 for p in pictures)
    def spread(psi: float) -> float:
        a, b = (np.asarray(p, dtype=np.float32) for p in pipe("noto", n=2, seed=3, truncation=psi))
        return float(np.abs(a - b).mean())
    assert spread(0.0) < 0.5 * spread(1.0)
