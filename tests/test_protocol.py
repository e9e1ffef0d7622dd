"""Conformance: every registered family's "tiny" preset speaks the protocol, saves, loads and resumes exactly.

Parametrised over the registry's specs and the capabilities they declare, never over family names: a new
family passes or fails these tests without being named here.
"""
from __future__ import annotations

import csv
import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from danqing import checkpoint as ckpt
from danqing.config import DataConfig, TrainConfig, from_dict, to_dict
from danqing.families import FAMILIES, spec, specs
from danqing.options import describe
from danqing.protocol import (CAPABILITIES, Batch, Cond, Denoises, FamilySpec, FrozenEncoding, Generates, Projects,
                              Scores, Stylizes, Trainable, Translates, generators)
from danqing.train import Run, train

NAMES = sorted(FAMILIES)
GENERATORS = [n for n in NAMES if spec(n).can(Generates)]
PROJECTORS = [n for n in NAMES if spec(n).can(Projects)]
TRANSLATORS = [n for n in NAMES if spec(n).can(Translates)]


def tiny(name):
    torch.manual_seed(0)
    fam = spec(name)
    return fam.Model(fam.presets["tiny"])


def fake_batch(name, model, b=4):
    fam = spec(name)
    f = fam.facts(model.config)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(b) % f.num_classes if f.num_classes else None
    images = torch.rand(b, f.image_channels, f.image_size, f.image_size, generator=g) * 2 - 1
    roles = {r.name: Batch(torch.rand(b, f.image_channels, f.image_size, f.image_size, generator=g) * 2 - 1)
             for r in fam.roles}
    return Batch(images, labels, cond=text_cond(name, model, b), roles=roles)


def text_cond(name, model, n):
    """Random text states for text-conditional models (None otherwise)."""
    t = spec(name).facts(model.config).text
    if t is None:
        return None
    g = torch.Generator().manual_seed(2)
    mask = torch.arange(t.tokens)[None].expand(n, -1) < torch.arange(2, 2 + n)[:, None] % t.tokens + 1
    return Cond(text=torch.randn(n, t.tokens, t.dim, generator=g), text_mask=mask,
                pooled=torch.randn(n, t.dim, generator=g))


def cond_for(name, model, n):
    cond = text_cond(name, model, n)
    k = spec(name).facts(model.config).num_classes
    if k:
        cond = cond or Cond()
        cond.labels = torch.arange(n) % k
    return cond


def pick(cond, i):
    """Row i of a condition, as a batch of one."""
    return None if cond is None else cond.rows(slice(i, i + 1))


@pytest.mark.parametrize("name", NAMES)
def test_spec_shape(name):
    fam = spec(name)
    assert fam.name == name and {"tiny"} <= set(fam.presets) and fam.summary
    for c in fam.presets.values():
        assert dataclasses.is_dataclass(c) and c.__dataclass_params__.frozen
        assert from_dict(fam.Config, to_dict(c)) == c          # JSON round trip
        f = fam.facts(c)
        assert f.image_size >= 1 and f.image_channels in (1, 3)
    assert dataclasses.is_dataclass(fam.Options) and fam.Options.__dataclass_params__.frozen
    describe(fam.Options, fam.default_options(fam.presets["tiny"]))      # every option is int/float/str/bool
    assert isinstance(tiny(name), Trainable)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_declared_exactly(name):
    """A model implements every capability its spec declares, and declares every one it implements."""
    model = tiny(name)
    implemented = {c for c in CAPABILITIES if isinstance(model, c)}
    assert implemented == set(spec(name).capabilities), (implemented, spec(name).capabilities)


@pytest.mark.parametrize("name", NAMES)
def test_phases_and_losses(name):
    model = tiny(name)
    batch = fake_batch(name, model)
    phases = model.phases()
    assert phases and len({p.name for p in phases}) == len(phases)
    for ph in phases:
        out = model.loss(batch, ph.name, 0, {})
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        model.zero_grad(set_to_none=True)
        out["loss"].backward()
        owned = list((model.get_submodule(ph.module) if ph.module else model).parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in owned), f"phase {ph.name} trains nothing"


@pytest.mark.parametrize("name", GENERATORS)
def test_sample_shape_range_and_per_image_generators(name):
    model = tiny(name).eval()
    f = spec(name).facts(model.config)
    x = model.sample(3, cond_for(name, model, 3), generator=generators([5, 6, 7]))
    assert x.shape == (3, f.image_channels, f.image_size, f.image_size)
    assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    # image i depends only on its own generator, not on the batch it was drawn in
    one = model.sample(1, pick(cond_for(name, model, 3), 1), generator=generators([6]))
    torch.testing.assert_close(one[0], x[1], atol=1e-5, rtol=0)
    # the noise it starts from can be handed in: the same pictures, and other noise gives others
    gens = generators([5, 6, 7])
    z = model.noise(3, gens)
    same = model.sample(3, cond_for(name, model, 3), generator=gens, noise=z)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    other = model.sample(3, cond_for(name, model, 3), generator=generators([5, 6, 7]), noise=-z)
    assert not torch.allclose(other, x, atol=1e-3)


@pytest.mark.parametrize("name", GENERATORS)
def test_default_options_paint_and_foreign_options_are_refused(name):
    """The family's default Options are what sample uses without any; an option it does not have is refused."""
    from danqing.generate import Painter, PipelineError, Request
    model = tiny(name).eval()
    fam = spec(name)
    painter = Painter(model, fam, encode_text=lambda texts: text_cond(name, model, len(texts)))
    prompts = ["a thing"] * 2 if painter.takes_text else None
    x = painter(Request([0, 1], prompts))
    y = model.sample(2, cond_for(name, model, 2) if not painter.takes_text else text_cond(name, model, 2),
                     generator=generators([0, 1]), options=fam.default_options(model.config))
    if not painter.takes_text and not painter.class_names:
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    with pytest.raises(PipelineError, match="does not apply"):
        painter(Request([0], prompts and prompts[:1], options={"no_such_option": 1}))


def input_pictures(name, model, n, seed=3):
    """Input pictures for a translating model, (n, C, S, S) in [-1, 1] at its size (the channels of its input)."""
    f = spec(name).facts(model.config)
    channels = getattr(model.config, "input_channels", f.image_channels)
    return torch.rand(n, channels, f.image_size, f.image_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name", TRANSLATORS)
def test_translate_shape_range_and_per_image_generators(name):
    """A translating model turns input pictures into pictures of its size and channels in [-1, 1]; picture i
    depends only on its input and its own generator; the same seeds give the same pictures."""
    model = tiny(name).eval()
    f = spec(name).facts(model.config)
    x = input_pictures(name, model, 3)
    y = model.translate(Cond(image=x), generator=generators([5, 6, 7]))
    assert y.shape == (3, f.image_channels, f.image_size, f.image_size)
    assert y.min() >= -1 and y.max() <= 1 and torch.isfinite(y).all()
    torch.testing.assert_close(model.translate(Cond(image=x), generator=generators([5, 6, 7])), y, atol=0, rtol=0)
    one = model.translate(Cond(image=x[1:2]), generator=generators([6]))
    torch.testing.assert_close(one[0], y[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", TRANSLATORS)
def test_translators_paint_through_the_one_path(name):
    """The Painter hands a translating model the request's input picture with one generator per seed and the
    family's default Options; an option the family does not have is refused."""
    from danqing.generate import Painter, PipelineError, Request
    model = tiny(name).eval()
    fam = spec(name)
    painter = Painter(model, fam)
    x = input_pictures(name, model, 2)
    got = painter(Request([0, 1], image=x))
    want = model.translate(Cond(image=x), generator=generators([0, 1]), options=fam.default_options(model.config))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(PipelineError, match="does not apply"):
        painter(Request([0], image=x[:1], options={"no_such_option": 1}))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    model = tiny(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))               # not the init, so the test can fail
    ckpt.write_checkpoint(tmp_path / "c", family=name, model=model)
    loaded, cfg = ckpt.load(tmp_path / "c")
    assert cfg["family"] == name and loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    fam = spec(name)
    images = fake_batch(name, model, 2).images
    outputs = []
    for m in (model, loaded):                                 # what each capability makes must be the same
        if fam.can(Generates):
            outputs.append(m.sample(2, cond_for(name, model, 2), generator=generators([0, 1])))
        if fam.can(Scores):
            outputs.append(m.score(images, cond_for(name, model, 2)))
        if fam.can(Stylizes):                                 # content and style pictures in, one out
            outputs.append(m.stylize(images[:1], [images[1:]]))
        if fam.can(Translates):                               # an input picture in, its translation out
            outputs.append(m.translate(Cond(image=images), generator=generators([0, 1])))
    assert outputs, f"{name} declares nothing this test can compare"
    half = len(outputs) // 2
    for a, b in zip(outputs[:half], outputs[half:]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_exact(name, tmp_path, request, monkeypatch):
    """N steps straight == N/2 steps, a crash, and a resume for the rest (CPU, fp32)."""
    fam = spec(name)
    c = fam.presets["tiny"]
    f = fam.facts(c)
    if f.text is not None:
        monkeypatch.setenv("DANQING_TEXT_ENCODER", str(request.getfixturevalue("tiny_text_encoder")))
    run = Run(name, c, DataConfig("digits", size=f.image_size, channels=f.image_channels, flip=True),
              TrainConfig(steps=6, batch_size=8, warmup=2, bf16="off", ckpt_every=3, sample_every=0, sample_n=4,
                          log_every=1), "tiny", roles={r.name: "digits" for r in fam.roles})
    straight = train(run, tmp_path / "a", progress=False)

    class Crash(Exception):
        pass

    def crash(step, logs):
        if step == 4:                                         # after the step-3 checkpoint, mid-run
            raise Crash
    with pytest.raises(Crash):
        train(run, tmp_path / "b", progress=False, on_step=crash)
    assert ckpt.resolve(tmp_path / "b").name == "step-0000003"
    saved = load_file(str(tmp_path / "b" / "step-0000003" / ckpt.MODEL))
    assert all(saved[k].item() > 0 for k in saved if k.endswith("aug.p")), "ADA's p must have moved off 0 here"
    resumed = train(run, tmp_path / "b", resume=True, progress=False)
    with open(tmp_path / "b" / "log.csv") as f:            # the crashed segment's step-4 row is replaced
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    for f in (ckpt.MODEL, ckpt.EMA):
        a, b = load_file(str(straight / f)), load_file(str(resumed / f))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{f}:{k}"


@pytest.mark.parametrize("name", ["t2i", "diffusion"])
def test_diffusers_backbone_trains_and_samples(name):
    """The benchmark peer (diffusers' UNets behind the same preconditioning) runs the same loss and samplers."""
    pytest.importorskip("diffusers")
    fam = spec(name)
    torch.manual_seed(0)
    model = fam.Model(dataclasses.replace(fam.presets["tiny"], backbone="diffusers", attn=(4,)))
    assert type(model.net).__name__ == "DiffusersUNet"
    loss = model.loss(fake_batch(name, model))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    x = model.sample(2, cond_for(name, model, 2), generator=generators([0, 1]),
                     options=fam.Options(steps=2, guidance=2.0))
    assert x.shape == (2, model.config.image_channels, model.config.image_size, model.config.image_size)
    assert x.abs().max() <= 1


def test_unknown_backbone_is_a_clear_error():
    fam = spec("diffusion")
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        fam.Model(dataclasses.replace(fam.presets["tiny"], backbone="resnet"))


def test_latent_presets_precondition_for_the_calibrated_latent_std():
    """EDM's c_skip, c_out, c_in and lambda assume data of std sigma_data.  calibrate() scales latents to
    std 1 (latent_scale = 1 / std, a closed form), so every latent preset must use sigma_data = 1."""
    ae = spec("autoencoder").Model(spec("autoencoder").presets["tiny"])
    images = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ae.calibrate(images)
    assert float(ae.encode(images).std()) == pytest.approx(1.0, rel=1e-4)
    latent = {f"{name}:{p}": c.sigma_data for name, fam in specs().items() for p, c in fam.presets.items()
              if fam.can(Denoises) and fam.facts(c).latent_factor > 1}
    assert latent and set(latent.values()) == {1.0}, latent


def test_loss_takes_the_frozen_posterior_precomputed():
    """Latent diffusion: a batch carrying frozen_stats(images) gives the same loss as encoding the images."""
    name, model = "t2i", tiny("t2i")
    assert isinstance(model, FrozenEncoding)
    batch = fake_batch(name, model)
    cached = dataclasses.replace(batch, posterior=model.frozen_stats(batch.images))
    assert cached.posterior.shape == (4, 2 * model.config.ae.latent_channels, 8, 8)     # mean and logvar, f=2
    torch.manual_seed(3)
    a = model.loss(batch)["loss"]
    torch.manual_seed(3)
    b = model.loss(cached)["loss"]
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert tiny("diffusion").frozen_stats(batch.images) is None                     # pixel space: nothing to cache


def test_trainer_encodes_the_data_once_and_trains_the_same(tmp_path, tiny_text_encoder, monkeypatch):
    """With the posterior cache the autoencoder runs once per chunk of the data set, not once per step,
    and the run's losses and weights match encoding every batch."""
    monkeypatch.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    from danqing.families.autoencoder import AutoEncoder
    calls = []
    posterior = AutoEncoder.posterior
    monkeypatch.setattr(AutoEncoder, "posterior", lambda self, x: calls.append(len(x)) or posterior(self, x))
    c = spec("t2i").presets["tiny"]
    runs = {}
    for cache in (True, False):
        calls.clear()
        run = Run("t2i", c, DataConfig("digits", size=c.image_size, channels=c.image_channels),
                  TrainConfig(steps=4, batch_size=8, warmup=2, bf16="off", sample_every=0, sample_n=2,
                              log_every=1, cache_posterior=cache), "tiny")
        runs[cache] = train(run, tmp_path / str(cache), progress=False)
        with open(tmp_path / str(cache) / "log.csv") as f:
            runs[cache, "loss"] = [float(r["main/loss"]) for r in csv.DictReader(f)]
        runs[cache, "calls"] = list(calls)
    n = sum(runs[True, "calls"]) - 1                          # every picture once, after a one-picture probe
    assert n > 1000 and runs[True, "calls"][0] == 1 and max(runs[True, "calls"]) == 16
    assert runs[False, "calls"] == [8] * 4                    # without the cache: one encoding per step
    torch.testing.assert_close(runs[True, "loss"], runs[False, "loss"], rtol=1e-5, atol=0)
    a, b = load_file(str(runs[True] / ckpt.MODEL)), load_file(str(runs[False] / ckpt.MODEL))
    for k in a:                                               # 4 steps move weights by up to ~6e-4
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_trainer_draws_caption_variants(tmp_path, tiny_text_encoder, monkeypatch):
    """Pictures with caption variants are trained on them as often as --train.variants says; all texts
    are encoded once, up front, and evaluation-side texts (the sample grid) stay the captions."""
    import json

    import numpy as np
    from PIL import Image

    from danqing.text import EmbeddingCache
    monkeypatch.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    c = spec("t2i").presets["tiny"]
    root = tmp_path / "pics"
    root.mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(np.full((c.image_size, c.image_size, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"thing {i}", "variants": [f"a thing {i}", f"item {i}"]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    asked: list[list[str]] = []
    embed = EmbeddingCache.embed
    monkeypatch.setattr(EmbeddingCache, "embed", lambda self, texts, enc: asked.append(list(texts)) or embed(self, texts, enc))
    seen = {}
    for share in (0.0, 1.0):
        asked.clear()
        run = Run("t2i", c, DataConfig(str(root), size=c.image_size, channels=c.image_channels),
                  TrainConfig(steps=3, batch_size=4, bf16="off", sample_every=0, sample_n=2, variants=share), "tiny")
        train(run, tmp_path / f"run{share}", progress=False)
        seen[share] = asked[1:1 + 3]           # after the up-front call; the sample grid's texts come last
        up_front = set(asked[0])
        assert {f"thing {i}" for i in range(6)} <= up_front
        assert ({f"item {i}" for i in range(6)} <= up_front) == (share > 0), "variants encoded only when used"
        assert all(t.startswith("thing ") for t in asked[-1]), "the sample grid shows captions"
    assert all(t.startswith("thing ") for texts in seen[0.0] for t in texts)
    assert not any(t.startswith("thing ") for texts in seen[1.0] for t in texts)


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_is_estimated_without_allocating(name):
    """Every preset builds on the meta device and passes the memory check it is trained under; the parameter
    count matches the real model's (the tiny one, built for real)."""
    from danqing.estimate import check_training, cost
    fam = spec(name)
    for c in fam.presets.values():
        check_training(fam, c, 1)
    assert cost(fam, fam.presets["tiny"]).params == sum(p.numel() for p in tiny(name).parameters())


@pytest.mark.parametrize("name", PROJECTORS)
def test_projection_shapes(name):
    """Every family that projects: a latent of one row per picture in each of its spaces, which ``render``
    paints at the pictures' shape, the same twice; a move all the way ``toward`` other codes paints something
    else; an unknown space is refused.  (Whether projection finds the picture is tested per family: an
    untrained tiny model cannot reach an arbitrary picture.)"""
    model = tiny(name).eval()
    cond = cond_for(name, model, 2)
    target = model.sample(2, cond, generator=generators([1, 2]))
    for space in model.spaces:
        latent = model.project(target, cond, steps=3, space=space, generator=torch.Generator().manual_seed(0))
        assert latent and all(len(v) == 2 for v in latent.values())
        back = model.render(latent, cond)
        assert back.shape == target.shape and torch.equal(back, model.render(latent, cond))
        moved = model.render(latent, cond, toward=model.noise(2, generators([5, 6])), strength=torch.ones(2))
        assert not torch.allclose(moved, back)
    with pytest.raises(ValueError, match="projects into"):
        model.project(target, cond, steps=1, space="nowhere")


def test_diffusion_inversion_finds_the_noise_of_its_own_picture():
    """A pixel diffusion model's picture painted by Euler from noise z (unclipped: an untrained model paints
    outside [-1, 1]): inverted with the same steps, the noise comes back to 5% of its spread (measured 3%), and Euler from
    it paints the picture again."""
    from danqing.sampling import euler, karras_sigmas

    model = tiny("diffusion").eval()
    c = model.config
    full = model._full_cond(cond_for("diffusion", model, 2), 2)
    denoise = lambda x, s: model.denoise(x, s, full)                            # noqa: E731
    sigmas = karras_sigmas(30, c.sigma_min, c.sigma_max, c.rho)
    z = model.noise(2, generators([1, 2]))
    with torch.no_grad():
        target = euler(denoise, z * c.sigma_max, sigmas)
        latent = model.project(target, cond_for("diffusion", model, 2), steps=30)
        assert (latent["noise"] - z).abs().max() < 0.05 * z.std()
        assert (euler(denoise, latent["noise"] * c.sigma_max, sigmas) - target).abs().max() < 0.02
