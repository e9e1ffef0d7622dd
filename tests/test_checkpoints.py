"""Checkpoints prove themselves: a manifest written last, damage named in one line, a run folder falling back to
its newest intact checkpoint with a warning, `latest` kept inside its run, leftovers of killed writes removed,
and the final checkpoint written before the final sample grid."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from danqing import checkpoint as ckpt
from danqing.cli import main
from danqing.config import DataConfig, TrainConfig
from danqing.families import spec
from danqing.train import Run, train

WEIGHTS = Path(ckpt.__file__).parent / "weights"
ARGS = ["--data", "digits", "--preset", "tiny", "--batch-size", "4", "-q", "--bf16", "off", "--train.sample_n=2",
        "--train.ckpt_every=1"]
S1, S2 = "step-0000001", "step-0000002"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny DCGAN run (its grids are quick to draw) with checkpoints at steps 1 and 2, and that run resumed
    by hand from step 1 to step 3: what falling back from a damaged step 2 must reproduce exactly."""
    root = tmp_path_factory.mktemp("made")
    os.environ["DANQING_CACHE"] = str(root / "cache")        # the digits, prepared once for every test here
    assert main(["train", "dcgan", *ARGS, "--steps", "2", "--out", str(root / "run")]) == 0
    three = Path(shutil.copytree(root / "run", root / "three"))
    shutil.rmtree(three / S2)
    (three / ckpt.LATEST).write_text(S1 + "\n")
    assert main(["train", "dcgan", *ARGS, "--steps", "3", "--resume", "--out", str(three)]) == 0
    return root


@pytest.fixture(autouse=True)
def _shared_cache(made, monkeypatch):
    monkeypatch.setenv("DANQING_CACHE", str(made / "cache"))


@pytest.fixture
def run(made, tmp_path, monkeypatch):
    """A private copy of the two-checkpoint run, with the once-per-process warning memory emptied."""
    monkeypatch.setattr(ckpt, "_WARNED", set())
    return Path(shutil.copytree(made / "run", tmp_path / "run"))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_every_checkpoint_and_export_carries_a_manifest_of_its_files(run, tmp_path):
    folder = run / S2
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())["files"]
    assert set(manifest) == {p.name for p in folder.iterdir()} - {ckpt.MANIFEST}
    for name, entry in manifest.items():
        data = (folder / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    shipped = ckpt.export(run, tmp_path / "shipped")
    assert set(json.loads((shipped / ckpt.MANIFEST).read_text())["files"]) == {ckpt.CONFIG, ckpt.MODEL}
    assert ckpt.damage(shipped, hashes=True) is None
    assert not list(run.glob(".*"))                                   # no temporary folder left behind


@pytest.mark.parametrize("name", [ckpt.MODEL, ckpt.EMA, ckpt.STATE_T, ckpt.CONFIG])
def test_a_truncated_file_is_named_and_the_run_falls_back(name, run, made, tmp_path, capsys):
    truncate(run / S2 / name)
    # the checkpoint folder itself: one line naming the file (CLI: exit 2)
    with pytest.raises(ckpt.CheckpointError, match=f"{S2}/{name} is damaged") as e:
        ckpt.load(run / S2) if name != ckpt.STATE_T else ckpt.load_training_state(run / S2)
    one_line(str(e.value))
    if name != ckpt.STATE_T:                          # `sample` does not read the training state
        assert main(["sample", str(run / S2), "-n", "1", "-o", str(tmp_path / "x.png")]) == 2
        assert f"{name} is damaged" in one_line(capsys.readouterr().err)
    # the run folder: the previous intact checkpoint, with one warning naming both
    with pytest.warns(ckpt.CheckpointWarning) as caught:
        assert ckpt.resolve(run) == run / S1
        assert ckpt.resolve(run) == run / S1                         # warned once, not at every look
    assert len(caught) == 1
    message = one_line(str(caught[0].message))
    assert f"{S2}/{name}" in message and f"using {S1} instead" in message
    # `sample` and `--resume` use it too
    ckpt._WARNED.clear()
    with pytest.warns(ckpt.CheckpointWarning, match=f"{S2}/{name}"):
        assert main(["sample", str(run), "-n", "1", "-o", str(tmp_path / "s.png")]) == 0
    ckpt._WARNED.clear()
    with pytest.warns(ckpt.CheckpointWarning, match=f"using {S1} instead"):
        assert main(["train", "dcgan", *ARGS, "--steps", "3", "--resume", "--out", str(run)]) == 0
    capsys.readouterr()
    assert ckpt.resolve(run).name == "step-0000003"                    # the damaged step 2 was written again
    for f in (ckpt.MODEL, ckpt.EMA):                                   # ... from step 1, exactly
        a, b = load_file(str(run / "step-0000003" / f)), load_file(str(made / "three" / "step-0000003" / f))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_size_damage_is_caught_by_the_hash(run):
    data = bytearray((run / S2 / ckpt.MODEL).read_bytes())
    data[-1] ^= 0xFF                                                  # a tensor's last byte: the header still fits
    (run / S2 / ckpt.MODEL).write_bytes(bytes(data))
    assert ckpt.damage(run / S2) is None                              # sizes and header: cheap, and fooled
    with pytest.warns(ckpt.CheckpointWarning, match="sha256 differs"):
        assert ckpt.resolve(run) == run / S1
    with pytest.raises(ckpt.CheckpointError, match="sha256 differs"):
        ckpt.load(run / S2)


def test_no_intact_checkpoint_is_one_error(run):
    for step in (S1, S2):
        truncate(run / step / ckpt.EMA)
    with pytest.raises(ckpt.CheckpointError, match="holds no intact checkpoint") as e:
        ckpt.resolve(run)
    assert f"{S1}/{ckpt.EMA}" in one_line(str(e.value)) and f"{S2}/{ckpt.EMA}" in str(e.value)


def test_checkpoints_without_a_manifest_load_and_are_still_checked(run, tmp_path):
    for step in (S1, S2):                                             # as older versions wrote them
        (run / step / ckpt.MANIFEST).unlink()
    assert ckpt.resolve(run) == run / S2 and ckpt.load(run)[1]["step"] == 2
    truncate(run / S2 / ckpt.EMA)
    with pytest.warns(ckpt.CheckpointWarning, match=f"{S2}/{ckpt.EMA} \\(truncated"):
        assert ckpt.resolve(run) == run / S1
    for name in sorted(p.name for p in WEIGHTS.iterdir() if (p / ckpt.MODEL).is_file()):
        assert not (WEIGHTS / name / ckpt.MANIFEST).exists() and ckpt.damage(WEIGHTS / name) is None
        assert ckpt.resolve(WEIGHTS / name) == WEIGHTS / name
    model, cfg = ckpt.load(WEIGHTS / "emoji-autoencoder")
    assert cfg["family"] == "autoencoder"
    copy = Path(shutil.copytree(WEIGHTS / "emoji-autoencoder", tmp_path / "ae"))
    truncate(copy / ckpt.MODEL)
    with pytest.raises(ckpt.CheckpointError, match=f"{copy / ckpt.MODEL} is damaged \\(truncated"):
        ckpt.load(copy)


@pytest.mark.parametrize("target", ["../../etc", "/etc", "step-0000002/..", "link"])
def test_latest_must_name_a_folder_inside_the_run(run, tmp_path, target):
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(run / S2, tmp_path / "elsewhere" / "ckpt")
    (run / "link").symlink_to(tmp_path / "elsewhere" / "ckpt")       # a symlink escaping the run folder
    (run / ckpt.LATEST).write_text(target + "\n")
    with pytest.raises(ckpt.CheckpointError, match="not a folder inside the run folder") as e:
        ckpt.resolve(run)
    one_line(str(e.value))


def test_stale_temporary_folders_are_removed_when_a_run_is_opened(run):
    done = subprocess.Popen(["true"])
    done.wait()                                                       # a PID no process has any more
    dead, live = done.pid, os.getpid()
    names = {f".{S2}.tmp-{dead}-abc": False, f".{S2}.old-{dead}": False, f".{S1}.tmp-{live}-abc": True,
             ".step-0000003.tmp-k2j4h1x0": True, ".step-0000004.tmp-q8w7e6r5": False, ".best.tmp": False}
    for name, fresh in names.items():
        (run / name).mkdir()
        (run / name / ckpt.MODEL).write_bytes(b"half")
        if not fresh:                                                 # idle for longer than STALE_AFTER
            old = time.time() - ckpt.STALE_AFTER - 60
            for p in (run / name / ckpt.MODEL, run / name):
                os.utime(p, (old, old))
    (run / S1).rename(run / f".{S1}.old-{dead}")                  # killed between moving it aside and the new one in
    removed = {p.name for p in ckpt.clean_stale(run)}
    assert removed == {n for n, fresh in names.items() if not fresh}
    assert {p.name for p in run.glob(".*")} == {n for n, fresh in names.items() if fresh}
    assert ckpt.damage(run / S1, hashes=True) is None                 # put back, not thrown away
    (run / f".{S2}.tmp-{dead}-abc").mkdir()                            # and training clears them on --resume
    assert main(["train", "dcgan", *ARGS, "--steps", "3", "--resume", "--out", str(run)]) == 0
    assert not (run / f".{S2}.tmp-{dead}-abc").exists() and (run / f".{S1}.tmp-{live}-abc").exists()


def test_the_final_checkpoint_comes_before_the_final_grid(tmp_path, monkeypatch):
    c = spec("dcgan").presets["tiny"]
    f = spec("dcgan").facts(c)
    tc = TrainConfig(steps=2, batch_size=4, bf16="off", ckpt_every=0, sample_every=0, sample_n=2)
    run = Run("dcgan", c, DataConfig("digits", size=f.image_size, channels=f.image_channels), tc, "tiny")

    def broken(*a, **k):
        raise RuntimeError("the grid failed")
    monkeypatch.setattr("danqing.train.sample_grid", broken)
    with pytest.raises(RuntimeError, match="the grid failed"):
        train(run, tmp_path / "run", progress=False)
    assert ckpt.resolve(tmp_path / "run") == tmp_path / "run" / S2
    assert ckpt.damage(tmp_path / "run" / S2, hashes=True) is None
    assert not (tmp_path / "run" / "samples" / f"{S2}.png").exists()
    monkeypatch.undo()
    longer = dataclasses.replace(run, train=dataclasses.replace(tc, steps=3))
    assert train(longer, tmp_path / "run", resume=True, progress=False).name == "step-0000003"
