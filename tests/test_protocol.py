"""Conformance: every family's "tiny" preset speaks the protocol, saves, loads and resumes exactly."""
from __future__ import annotations

import csv
import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from danqing import checkpoint as ckpt
from danqing.config import DataConfig, TrainConfig, from_dict, to_dict
from danqing.families import FAMILIES, paints
from danqing.protocol import Batch, Cond, Family, Trainable, generators
from danqing.train import Run, train

NAMES = sorted(FAMILIES)
GENERATORS = [n for n in NAMES if paints(n)]


def tiny(name):
    fam = FAMILIES[name]
    torch.manual_seed(0)
    return fam.Model(fam.PRESETS["tiny"])


def fake_batch(model, b=4):
    c = model.config
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(b) % c.num_classes if getattr(c, "num_classes", 0) else None
    return Batch(torch.rand(b, c.image_channels, c.image_size, c.image_size, generator=g) * 2 - 1, labels,
                 cond=text_cond(c, b))


def text_cond(c, n):
    """Random text states for text-conditional configs (None otherwise)."""
    if not getattr(c, "text_dim", 0):
        return None
    g = torch.Generator().manual_seed(2)
    mask = torch.arange(c.text_tokens)[None].expand(n, -1) < torch.arange(2, 2 + n)[:, None] % c.text_tokens + 1
    return Cond(text=torch.randn(n, c.text_tokens, c.text_dim, generator=g), text_mask=mask,
                pooled=torch.randn(n, c.text_dim, generator=g))


def cond_for(model, n):
    c = model.config
    cond = text_cond(c, n)
    if getattr(c, "num_classes", 0):
        cond = cond or Cond()
        cond.labels = torch.arange(n) % c.num_classes
    return cond


def pick(cond, i):
    """Row i of a condition, as a batch of one."""
    if cond is None:
        return None
    return Cond(**{k: None if v is None else v[i:i + 1] for k, v in vars(cond).items()})


@pytest.mark.parametrize("name", NAMES)
def test_module_shape(name):
    fam = FAMILIES[name]
    assert {"tiny"} <= set(fam.PRESETS)
    for c in fam.PRESETS.values():
        assert dataclasses.is_dataclass(c) and c.__dataclass_params__.frozen
        assert from_dict(fam.Config, to_dict(c)) == c          # JSON round trip
    assert isinstance(tiny(name), Family if paints(name) else Trainable)


@pytest.mark.parametrize("name", NAMES)
def test_phases_and_losses(name):
    model = tiny(name)
    batch = fake_batch(model)
    phases = model.phases()
    assert phases and len({p.name for p in phases}) == len(phases)
    for ph in phases:
        out = model.loss(batch, ph.name)
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        model.zero_grad(set_to_none=True)
        out["loss"].backward()
        owned = list((model.get_submodule(ph.module) if ph.module else model).parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in owned), f"phase {ph.name} trains nothing"


@pytest.mark.parametrize("name", GENERATORS)
def test_sample_shape_range_and_per_image_generators(name):
    model = tiny(name).eval()
    c = model.config
    x = model.sample(3, cond_for(model, 3), generator=generators([5, 6, 7]))
    assert x.shape == (3, c.image_channels, c.image_size, c.image_size)
    assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    # image i depends only on its own generator, not on the batch it was drawn in
    one = model.sample(1, pick(cond_for(model, 3), 1), generator=generators([6]))
    torch.testing.assert_close(one[0], x[1], atol=1e-5, rtol=0)
    # the noise it starts from can be handed in: the same pictures, and other noise gives others
    gens = generators([5, 6, 7])
    z = model.noise(3, gens)
    same = model.sample(3, cond_for(model, 3), generator=gens, noise=z)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    other = model.sample(3, cond_for(model, 3), generator=generators([5, 6, 7]), noise=-z)
    assert not torch.allclose(other, x, atol=1e-3)


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
    if paints(name):
        a = model.sample(2, cond_for(model, 2), generator=generators([0, 1]))
        b = loaded.sample(2, cond_for(model, 2), generator=generators([0, 1]))
    elif hasattr(model, "score"):
        images = fake_batch(model, 2).images
        a, b = model.score(images, cond_for(model, 2)), loaded.score(images, cond_for(model, 2))
    else:                                                     # a stylist: content and style pictures in, one out
        images = fake_batch(model, 2).images
        a, b = model.stylize(images[:1], [images[1:]]), loaded.stylize(images[:1], [images[1:]])
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_exact(name, tmp_path, request, monkeypatch):
    """N steps straight == N/2 steps, a crash, and a resume for the rest (CPU, fp32)."""
    fam = FAMILIES[name]
    if getattr(fam.PRESETS["tiny"], "text_dim", 0):
        monkeypatch.setenv("DANQING_TEXT_ENCODER", str(request.getfixturevalue("tiny_text_encoder")))
    c = fam.PRESETS["tiny"]
    run = Run(name, c, DataConfig("digits", size=c.image_size, channels=c.image_channels, flip=True),
              TrainConfig(steps=6, batch_size=8, warmup=2, bf16="off", ckpt_every=3, sample_every=0, sample_n=4,
                          log_every=1), "tiny")
    straight = train(run, tmp_path / "a", progress=False)

    class Crash(Exception):
        pass

    def crash(step, logs):
        if step == 4:                                         # after the step-3 checkpoint, mid-run
            raise Crash
    with pytest.raises(Crash):
        train(run, tmp_path / "b", progress=False, on_step=crash)
    assert ckpt.resolve(tmp_path / "b").name == "step-0000003"
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
    fam = FAMILIES[name]
    torch.manual_seed(0)
    model = fam.Model(dataclasses.replace(fam.PRESETS["tiny"], backbone="diffusers", attn=(4,)))
    assert type(model.net).__name__ == "DiffusersUNet"
    loss = model.loss(fake_batch(model))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    x = model.sample(2, cond_for(model, 2), generator=generators([0, 1]), steps=2, guidance=2.0)
    assert x.shape == (2, model.config.image_channels, model.config.image_size, model.config.image_size)
    assert x.abs().max() <= 1


def test_unknown_backbone_is_a_clear_error():
    fam = FAMILIES["diffusion"]
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        fam.Model(dataclasses.replace(fam.PRESETS["tiny"], backbone="resnet"))


def test_latent_presets_precondition_for_the_calibrated_latent_std():
    """EDM's c_skip, c_out, c_in and lambda assume data of std sigma_data.  calibrate() scales latents to
    std 1 (latent_scale = 1 / std, a closed form), so every latent preset must use sigma_data = 1."""
    ae = FAMILIES["autoencoder"].Model(FAMILIES["autoencoder"].PRESETS["tiny"])
    images = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ae.calibrate(images)
    assert float(ae.encode(images).std()) == pytest.approx(1.0, rel=1e-4)
    latent = {f"{fam}:{p}": c.sigma_data for fam in FAMILIES for p, c in FAMILIES[fam].PRESETS.items()
              if getattr(c, "ae", None) is not None}
    assert latent and set(latent.values()) == {1.0}, latent


def test_loss_takes_the_frozen_posterior_precomputed():
    """Latent diffusion: a batch carrying frozen_posterior(images) gives the same loss as encoding the images."""
    model = tiny("t2i")
    batch = fake_batch(model)
    cached = dataclasses.replace(batch, posterior=model.frozen_posterior(batch.images))
    assert cached.posterior.shape == (4, 2 * model.config.ae.latent_channels, 8, 8)     # mean and logvar, f=2
    torch.manual_seed(3)
    a = model.loss(batch)["loss"]
    torch.manual_seed(3)
    b = model.loss(cached)["loss"]
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert tiny("diffusion").frozen_posterior(batch.images) is None                     # pixel space: nothing to cache


def test_trainer_encodes_the_data_once_and_trains_the_same(tmp_path, tiny_text_encoder, monkeypatch):
    """With the posterior cache the autoencoder runs once per chunk of the data set, not once per step,
    and the run's losses and weights match encoding every batch."""
    monkeypatch.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    from danqing.families.autoencoder import AutoEncoder
    calls = []
    posterior = AutoEncoder.posterior
    monkeypatch.setattr(AutoEncoder, "posterior", lambda self, x: calls.append(len(x)) or posterior(self, x))
    c = FAMILIES["t2i"].PRESETS["tiny"]
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
    c = FAMILIES["t2i"].PRESETS["tiny"]
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
        seen[share] = asked[2:2 + 3]           # after the up-front call and the sample grid's texts
        up_front = set(asked[0])
        assert {f"thing {i}" for i in range(6)} <= up_front
        assert ({f"item {i}" for i in range(6)} <= up_front) == (share > 0), "variants encoded only when used"
        assert all(t.startswith("thing ") for t in asked[1]), "the sample grid shows captions"
    assert all(t.startswith("thing ") for texts in seen[0.0] for t in texts)
    assert not any(t.startswith("thing ") for texts in seen[1.0] for t in texts)
