"""The FID InceptionV3 module: pytorch-fid's state-dict layout, the shipped weights through it, and bad files."""
from __future__ import annotations

import pytest
import torch

from danqing.metrics import (
    FIDInceptionV3,
    Inception,
    MetricsError,
    load_fid_state,
    state_from_torchscript,
)

# Key names and shapes of pytorch-fid's FID InceptionV3 (torchvision's InceptionV3 with aux_logits=False and
# num_classes=1008, the pool branches patched), as its published architecture defines them.
GOLDEN = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.weight": (32,),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch3x3dbl_1.bn.running_mean": (448,),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


def _skeleton() -> FIDInceptionV3:
    return FIDInceptionV3(device=torch.device("meta"))


def test_state_dict_follows_pytorch_fid_names_and_shapes():
    state = _skeleton().state_dict()
    for key, shape in GOLDEN.items():
        assert tuple(state[key].shape) == shape, key
    # 94 conv+BN units (conv weight + 4 BN tensors + counter each) and the classifier; no aux classifier
    assert len(state) == 94 * 6 + 2
    assert not any(k.startswith("AuxLogits") for k in state)
    bns = [m for m in _skeleton().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 94 and all(m.eps == 1e-3 for m in bns)


def test_forward_gives_pool3_features():
    net = FIDInceptionV3().eval()
    with torch.no_grad():
        f = net(torch.rand(1, 3, 75, 75) * 2 - 1)   # 75 px: the smallest input the strides allow
    assert f.shape == (1, 2048)


@pytest.fixture(scope="module")
def shipped():
    try:
        return Inception()
    except MetricsError as e:
        pytest.skip(str(e))


def test_converted_torchscript_weights_give_the_same_features(shipped, tmp_path, monkeypatch):
    if shipped.kind != "torchscript":
        pytest.skip(f"$DANQING_INCEPTION points to a {shipped.kind} file, not the TorchScript network")
    state = state_from_torchscript(shipped.net)
    assert state.keys() == _skeleton().state_dict().keys()
    path = tmp_path / "pt_inception-converted.pth"
    # the pre-1.6 (non-zip) format, as older state-dict files like pytorch-fid's may be
    torch.save(state, path, _use_new_zipfile_serialization=False)
    converted = Inception(path)
    assert converted.kind == "state_dict" and isinstance(converted.net, FIDInceptionV3)
    assert converted.name == shipped.name
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 40, 48), generator=gen, dtype=torch.uint8)
    torch.testing.assert_close(converted(images), shipped(images), rtol=0, atol=1e-4)

    monkeypatch.setenv("DANQING_INCEPTION", str(path))
    assert Inception().kind == "state_dict"


def test_optional_keys_may_be_missing():
    """pytorch-fid-style files without BatchNorm counters or classifier still load (neither affects pool3)."""
    full = {k: torch.rand(v.shape) if v.is_floating_point() else torch.tensor(3)
            for k, v in _skeleton().state_dict().items()}
    partial = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
    net = load_fid_state(_skeleton(), partial)
    assert torch.equal(net.Mixed_7c.branch_pool.bn.running_var, full["Mixed_7c.branch_pool.bn.running_var"])
    assert not net.fc.weight.any() and not net.fc.weight.is_meta


def test_a_file_that_is_neither_kind_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a network, nor a state dict")
    with pytest.raises(MetricsError, match="cannot read TF-FID Inception weights"):
        Inception(path)
    torch.save([torch.zeros(3)], path)
    with pytest.raises(MetricsError, match="holds a list, not a state dict"):
        Inception(path)


def test_wrong_state_dicts_name_the_key(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"Mixed_6b.branch7x7_2.conv.weight": torch.zeros(128, 128, 7, 1)}, path)
    with pytest.raises(MetricsError, match=r"'Mixed_6b.branch7x7_2.conv.weight' has shape \(128, 128, 7, 1\), "
                                           r"the FID InceptionV3 needs \(128, 128, 1, 7\)"):
        Inception(path)
    torch.save({"AuxLogits.fc.weight": torch.zeros(1000, 768)}, path)
    with pytest.raises(MetricsError, match="unexpected key 'AuxLogits.fc.weight'"):
        Inception(path)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(MetricsError, match="lacks 469 .* first 'Conv2d_1a_3x3.bn.weight'"):
        Inception(path)


def test_state_from_torchscript_rejects_another_network():
    with pytest.raises(MetricsError, match="1 weight groups"):
        state_from_torchscript({"layer.weight": torch.zeros(3, 3)})
