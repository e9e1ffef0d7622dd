"""EfficientNet-Lite0: by-order weight loading, input checks, and the shipped weights on real photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from danqing.metrics import EfficientNetLite0, MetricsError, extract, state_shapes

DAISY = 985  # ILSVRC-2012 class index of "daisy" (standard 0-based order: 984 rapeseed, 985 daisy)
PALACE = 698


def _synthetic_state(path, *, break_at: int | None = None) -> list[torch.Tensor]:
    """Save tensors of Lite0's shapes, in order, under names unlike the module's; return them."""
    gen = torch.Generator().manual_seed(0)
    tensors, state = [], {}
    for i, (name, shape) in enumerate(state_shapes()):
        t = torch.rand(shape, generator=gen) + 0.5   # positive: valid BatchNorm variances too
        if i == break_at:
            t = torch.zeros(shape[0] + 1, *shape[1:])
        tensors.append(t)
        state[f"layer{i:03d}.{name.rsplit('.', 1)[-1]}"] = t
        if name.endswith("running_var"):
            state[f"layer{i:03d}.num_batches_tracked"] = torch.tensor(7)   # skipped on load
    torch.save(state, path)
    return tensors


@pytest.fixture(scope="module")
def lite0():
    try:
        return EfficientNetLite0()
    except MetricsError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photos (china.jpg, flower.jpg) as uint8 (2, 3, 427, 640)."""
    datasets = pytest.importorskip("sklearn.datasets")
    try:
        images = datasets.load_sample_images().images
    except Exception as e:  # noqa: BLE001 - missing image files or Pillow
        pytest.skip(f"scikit-learn sample images unavailable: {e}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def test_state_dict_loads_by_order_whatever_the_names(tmp_path):
    shapes = state_shapes()
    assert len(shapes) == 247 and shapes[0] == ("stem.0.weight", (32, 3, 3, 3))
    assert shapes[-2:] == [("fc.weight", (1000, 1280)), ("fc.bias", (1000,))]
    tensors = _synthetic_state(tmp_path / "lite0.pth")
    net = EfficientNetLite0(tmp_path / "lite0.pth")
    loaded = [v for k, v in net.net.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert all(torch.equal(a, b) for a, b in zip(loaded, tensors))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == 4_652_008


def test_wrong_shape_names_the_tensor(tmp_path):
    _synthetic_state(tmp_path / "bad.pth", break_at=5)
    expected = r"tensor 5 'layer005\.weight' has shape \(33, 1, 3, 3\).*\(blocks\.0\.depthwise\.0\.weight\)"
    with pytest.raises(MetricsError, match=expected):
        EfficientNetLite0(tmp_path / "bad.pth")


def test_wrong_count_and_missing_file_are_explained(tmp_path):
    torch.save({"only.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "short.pth")
    with pytest.raises(MetricsError, match="holds 1 tensors.*has 247"):
        EfficientNetLite0(tmp_path / "short.pth")
    with pytest.raises(MetricsError, match="no EfficientNet-Lite0 weights"):
        EfficientNetLite0(tmp_path / "absent.pth")


def test_non_uint8_input_is_refused(tmp_path):
    _synthetic_state(tmp_path / "lite0.pth")
    net = EfficientNetLite0(tmp_path / "lite0.pth")
    with pytest.raises(MetricsError, match="uint8"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(MetricsError, match="uint8"):
        net.logits(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_features_of_the_shipped_weights(lite0):
    x = torch.randint(0, 256, (3, 3, 50, 70), dtype=torch.uint8)
    f = lite0(x)
    assert f.shape == (3, 1280) and f.dtype == torch.float64 and (f >= 0).all()   # pooled ReLU6 outputs
    assert extract(lite0, [x[:2], x[2:]]).shape == (3, 1280)
    p = lite0.probs(x)
    assert p.shape == (3, 1000) and torch.allclose(p.sum(-1), torch.ones(3))


def test_sample_photos_get_their_imagenet_classes(lite0, photos):
    # Golden values from running the package's weights through this module (whole picture resized to
    # 224, (x - 127) / 128): flower.jpg -> top-1 985 "daisy" (p ≈ 0.14, next 309 "bee" at 0.07);
    # china.jpg -> 442 "bell cote", 449 "boathouse", 975 "lakeside", 698 "palace", 483 "castle".
    # Class names follow the standard ILSVRC-2012 index order (no label file ships with the weights).
    china, flower = lite0.probs(photos)
    assert flower.argmax() == DAISY
    assert PALACE in china.topk(5).indices
