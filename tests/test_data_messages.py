"""What the data layer tells a user about files it cannot use: each skipped file by name with its reason, one
warning per data set, the full list on disk, and SVGs drawn (or named as unsupported with what to install)."""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from danqing.cli import main
from danqing.config import DataConfig
from danqing.data import DataError, DataWarning, load_dataset, transforms, write_skipped
from danqing.data.skips import LIST_FILE, MAX_LISTED, listing
from danqing.data.sources import cache_root

HAS_RESVG = transforms.svg_renderer() is not None
RED_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10" viewBox="0 0 20 10">'
           '<rect width="20" height="10" fill="#ff0000"/></svg>')
BROKEN = {"empty.png": "empty file", "trunc.png": "truncated", "text.png": "not an image"}


def load(source, **kw):
    return load_dataset(DataConfig(source=str(source), **kw), progress=False)


def make_folder(root: Path) -> Path:
    """Two good PNGs, an SVG, an empty file, a truncated PNG and a text file named .png."""
    root.mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 0, 255)).save(root / "a.png")
    Image.new("RGB", (16, 16), (0, 255, 0)).save(root / "b.png")
    (root / "red.svg").write_text(RED_SVG)
    (root / "empty.png").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    (root / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "text.png").write_text("this is a shopping list, not a picture")
    return root


@pytest.fixture
def no_resvg(monkeypatch):
    real = transforms.find_spec
    monkeypatch.setattr(transforms, "find_spec", lambda name: None if name == "resvg" else real(name))


def data_info(capsys, folder: Path) -> tuple[str, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert main(["data", "info", str(folder), "--size", "8"]) == 0
    return capsys.readouterr().out, [w for w in caught if issubclass(w.category, DataWarning)]


def test_data_info_names_each_skipped_file_and_warns_once(tmp_path, capsys):
    folder = make_folder(tmp_path / "pics")
    out, caught = data_info(capsys, folder)
    for name, reason in BROKEN.items():
        assert f"  {name}: {reason}" in out
    if HAS_RESVG:
        assert "red.svg" not in out and "count            │ 3" in out      # drawn, not skipped
    assert len(caught) == 1
    text = str(caught[0].message)
    assert text.startswith("skipped 3 of 6 image files in folder")
    assert all(f"{name} ({reason})" in text for name, reason in BROKEN.items())
    assert "copy them again" in text                                    # what to do, not only what happened
    out, caught = data_info(capsys, folder)                             # from the cache: the same names
    assert all(f"  {name}: {reason}" in out for name, reason in BROKEN.items()) and caught == []


def test_unsupported_svg_is_named_with_what_to_install(tmp_path, capsys, no_resvg):
    folder = make_folder(tmp_path / "pics")
    out, caught = data_info(capsys, folder)
    assert "  red.svg: unsupported format (svg)" in out and "pip install 'danqing[emoji]'" in out
    assert len(caught) == 1 and "red.svg (unsupported format (svg))" in str(caught[0].message)
    assert "install resvg" in str(caught[0].message)
    only_svg = tmp_path / "vector"
    only_svg.mkdir()
    (only_svg / "logo.svg").write_text(RED_SVG)
    with pytest.raises(DataError, match=r"all 1 image file\(s\) were skipped .*logo.svg.*install resvg"):
        load(only_svg, size=8)


def test_one_warning_when_the_cli_and_the_trainer_both_read_the_data(tmp_path):
    folder = make_folder(tmp_path / "pics")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert main(["train", "dcgan", "--data", str(folder), "--preset", "tiny", "--steps", "1", "--batch-size",
                     "2", "--train.sample_n=1", "--bf16", "off", "--out", str(tmp_path / "run"), "-q"]) == 0
    skips = [w for w in caught if issubclass(w.category, DataWarning) and "skipped" in str(w.message)]
    assert len(skips) == 1
    with pytest.warns(DataWarning, match="skipped 3 of 6"):             # an "always" filter still sees each
        load(folder, size=8)


def test_write_skipped_names_them_all_beyond_the_stored_list(tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "good.png")
    n = MAX_LISTED + 3
    for i in range(n):
        (folder / f"e{i:04d}.png").write_bytes(b"")
    with pytest.warns(DataWarning, match=f"skipped {n} of {n + 1} .*{n} empty file; `danqing data info`") as rec:
        ds = load(folder, size=8)
    assert "e0000.png" not in str(rec[0].message)                        # too many to name in one line
    assert len(ds.skipped_files) == MAX_LISTED and ds.skipped == {"empty file": n}
    assert ds.skipped_list == cache_root() / "datasets" / ds.fingerprint / LIST_FILE
    lines = listing(ds)
    assert lines[0] == "e0000.png: empty file" and len(lines) == 21
    assert lines[-1] == f"... and {n - 20} more; all {n} are in {ds.skipped_list}"

    path = write_skipped(ds, tmp_path / "run")
    assert path == tmp_path / "run" / "skipped.txt"
    rows = [r for r in path.read_text(encoding="utf-8").splitlines() if not r.startswith("#")]
    assert len(rows) == n and rows[0].split("\t")[:2] == ["e0000.png", "empty file"]
    assert rows[-1].startswith(f"e{n - 1:04d}.png\tempty file")
    assert f"# {n} of {n + 1} image files in folder {folder.resolve()} were skipped" in path.read_text()

    for i in range(n):                                                 # all fixed: the old list goes
        (folder / f"e{i:04d}.png").unlink()
    assert write_skipped(load(folder, size=8), tmp_path / "run") is None and not path.exists()


@pytest.mark.skipif(not HAS_RESVG, reason="needs resvg (pip install 'danqing[emoji]')")
def test_svg_is_drawn_through_the_same_limits_and_fingerprint(tmp_path, monkeypatch):
    folder = tmp_path / "vec"
    folder.mkdir()
    (folder / "red.svg").write_text(RED_SVG)
    ds = load(folder, size=8, fit="pad")
    assert ds.images.shape == (1, 3, 8, 8) and tuple(ds.images[0, :, 4, 4]) == (255, 0, 0)
    assert tuple(ds.images[0, :, 0, 4]) == (255, 255, 255)              # 2:1, padded with white
    with pytest.raises(DataError, match=r"red.svg \(too many pixels\)"):   # the canvas counts like a header
        load(folder, size=8, max_pixels=100)
    (folder / "wide.svg").write_text(RED_SVG.replace('width="20"', 'width="20000000"'))
    (folder / "page.svg").write_text("<html><body>not a drawing</body></html>")
    bomb = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
            + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcdefg", "bcdefgh"))
            + ']><svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><text>&h;</text></svg>')
    (folder / "bomb.svg").write_text(bomb)
    with pytest.warns(DataWarning, match="skipped 3 of 4"):
        ds = load(folder, size=8)
    reasons = {e[0]: e[1] for e in ds.skipped_files}
    assert reasons == {"bomb.svg": "not an image", "page.svg": "not an image", "wide.svg": "too many pixels"}

    for name in reasons:
        (folder / name).unlink()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(folder / "blue.png")
    first = load(folder, size=8).fingerprint
    st = (folder / "red.svg").stat()
    os.utime(folder / "red.svg", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    drawn = load(folder, size=8).fingerprint
    assert drawn != first                                               # an edited SVG: a new cache
    monkeypatch.setattr(transforms, "find_spec", lambda name: None)
    with pytest.warns(DataWarning, match=r"red.svg \(unsupported format \(svg\)\)"):
        assert load(folder, size=8).fingerprint != drawn                # without resvg: not the same cache


def test_a_cache_without_names_is_rebuilt_with_them(tmp_path):
    folder = make_folder(tmp_path / "pics")
    with pytest.warns(DataWarning):
        ds = load(folder, size=8)
    meta_path = cache_root() / "datasets" / ds.fingerprint / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["skipped_files"]                          # as caches were written before files were named
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(DataWarning, match="text.png"):
        again = load(folder, size=8)
    assert again.fingerprint == ds.fingerprint and np.array_equal(again.images, ds.images)
    assert {e[0] for e in again.skipped_files} >= set(BROKEN)
