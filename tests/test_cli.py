"""CLI smoke tests on tiny models and data: every verb works, every bad argument is one clear line + exit 2."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from danqing import checkpoint as ckpt
from danqing.cli import main

TINY = ["--preset", "tiny", "--steps", "4", "--batch-size", "8", "-q", "--train.sample_n=4", "--bf16", "off"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny conditional diffusion run and one DCGAN run, shared by the sampling tests."""
    root = tmp_path_factory.mktemp("runs")
    os.environ["DANQING_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    for fam in ("diffusion", "dcgan"):
        assert main(["train", fam, "--data", "digits", *TINY, "--out", str(root / fam)]) == 0
    return root


def test_train_writes_checkpoint_log_and_grid(trained):
    for fam in ("diffusion", "dcgan"):
        run_dir = trained / fam
        assert ckpt.resolve(run_dir).name == "step-0000004"
        assert (run_dir / "log.csv").read_text().splitlines()[0].startswith("step,")
        grid = Image.open(run_dir / "samples" / "step-0000004.png")
        assert grid.size[0] > 16


def test_sample_grid_and_batch_size_independence(trained, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    base = ["sample", str(trained / "diffusion"), "-n", "4", "--seed", "3", "--steps", "4", "--sampler", "euler_a",
            "--bf16", "off"]
    assert run(capsys, *base, "-o", str(a))[0] == 0
    assert run(capsys, *base, "--batch-size", "1", "-o", str(b))[0] == 0
    x, y = np.asarray(Image.open(a), np.int16), np.asarray(Image.open(b), np.int16)
    assert x.shape == y.shape and np.abs(x - y).max() <= 1      # same images; at most a rounding step apart
    code, out, _ = run(capsys, "sample", str(trained / "dcgan"), "-n", "3", "--class", "7", "-o", str(tmp_path / "g.png"))
    assert code == 0 and "3 images" in out


@pytest.mark.parametrize("argv, needle", [
    (["train", "diffusion", "--data", "digits", "--preset", "huge"], "has no preset 'huge'"),
    (["train", "diffusion", "--data", "no/such/folder", "--preset", "tiny"], "neither a built-in"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--model.nope=1"], "unknown setting --model.nope"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--model.channels=wide"], "must be an integer"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--train.bf16=maybe"], "must be one of"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--data.size=64"], "follows the model"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "stray"], "unrecognised argument"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--device", "gpu"], "unknown device 'gpu'"),
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--steps", "0"], "steps must be at least 1"),
    (["sample", "no/such/run"], "does not exist"),
    (["data", "fetch", "imagenet"], "imagenet"),
])
def test_bad_arguments_are_one_clear_line(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


@pytest.mark.parametrize("extra, needle", [
    (["--sampler", "plms"], "unknown sampler 'plms'"),
    (["--steps", "0"], "steps must be between 1 and 200, got 0"),
    (["--class", "seven"], "unknown class 'seven'"),
])
def test_bad_sample_arguments(trained, capsys, tmp_path, extra, needle):
    code, _, err = run(capsys, "sample", str(trained / "diffusion"), "-n", "2", "-o", str(tmp_path / "x.png"), *extra)
    assert code == 2 and needle in err


def test_sampler_options_refused_for_gans(trained, capsys, tmp_path):
    code, _, err = run(capsys, "sample", str(trained / "dcgan"), "--sampler", "heun", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "sampler does not apply to the dcgan model" in err and "(its options: none)" in err


def test_existing_run_needs_resume_and_resume_must_match(trained, capsys):
    out = str(trained / "dcgan")
    code, _, err = run(capsys, "train", "dcgan", "--data", "digits", *TINY, "--out", out)
    assert code == 2 and "--resume" in err
    code, _, err = run(capsys, "train", "dcgan", "--data", "digits", *TINY, "--out", out, "--resume", "--model.z_dim=8")
    assert code == 2 and "differ" in err


def test_unknown_family_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "vqgan", "--data", "digits"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_data_info_preview_and_empty_folder(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "info", "digits")
    assert code == 0 and "1797" in out
    assert run(capsys, "data", "preview", "digits", "-n", "16", "-o", str(tmp_path / "p.png"))[0] == 0
    assert Image.open(tmp_path / "p.png").size[0] > 32
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "data", "info", str(tmp_path / "empty"))
    assert code == 2 and "empty" in err


def test_models_lists_every_family(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "diffusion" in out and "dcgan" in out and "tiny" in out


def test_console_script_and_sigkill_leave_a_loadable_checkpoint(tmp_path):
    """The installed `danqing` command runs; a SIGKILL during training (checkpointing every
    step) leaves a checkpoint that loads and resumes."""
    exe = os.path.join(os.path.dirname(sys.executable), "danqing")
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([exe, "train", "dcgan", "--data", "digits", "--preset", "tiny", "--steps", "100000",
                             "--batch-size", "8", "-q", "--out", str(out), "--train.ckpt_every=1", "--train.keep=2",
                             "--train.sample_every=0", "--bf16", "off"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "latest").exists():
        time.sleep(0.1)
    time.sleep(1.5)                                    # many checkpoint writes are now under way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "latest").exists(), proc.stderr.read().decode()
    model, cfg = ckpt.load(out)
    state = ckpt.load_training_state(out)
    assert state["step"] == cfg["step"] >= 1
    step = int(state["step"])
    done = subprocess.run([exe, "train", "dcgan", "--data", "digits", "--preset", "tiny", "--steps", str(step + 2),
                           "--batch-size", "8", "-q", "--out", str(out), "--resume", "--train.ckpt_every=1",
                           "--train.keep=2", "--train.sample_every=0", "--bf16", "off"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ckpt.resolve(out).name == f"step-{step + 2:07d}"


def test_atomic_write_gives_umask_permissions_and_keeps_the_old_file_on_failure(tmp_path):
    from danqing.fileio import atomic_write
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.png", b"first")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"first" and (path.stat().st_mode & 0o777) == 0o644   # not mkstemp's 0600

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["a.png"]   # no temp file left


def test_export_is_weights_only_fp16_and_loads(trained, tmp_path, capsys):
    from safetensors.torch import load_file
    code, out, _ = run(capsys, "export", str(trained / "dcgan"), "-o", str(tmp_path / "shipped"))
    assert code == 0 and "fp16" in out
    files = {p.name for p in (tmp_path / "shipped").iterdir()}
    assert files == {"config.json", "model.safetensors", "manifest.json"}
    weights = load_file(str(tmp_path / "shipped" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    model, cfg = ckpt.load(tmp_path / "shipped")
    ema, _ = ckpt.load(trained / "dcgan")
    for k, v in ema.state_dict().items():          # the EMA weights, rounded to fp16
        if v.is_floating_point():
            assert (model.state_dict()[k] - v.half().float()).abs().max() == 0, k


def test_init_continues_from_exported_weights(trained, tmp_path, capsys):
    """--init starts a new run from a checkpoint's weights (here an fp16 export), with a fresh optimiser."""
    assert run(capsys, "export", str(trained / "dcgan"), "-o", str(tmp_path / "w"))[0] == 0
    code, _, err = run(capsys, "train", "dcgan", "--data", "digits", *TINY, "--out", str(tmp_path / "cont"),
                       "--init", str(tmp_path / "w"), "--steps", "1", "--train.lr=1e-12", "--train.warmup=0")
    assert code == 0, err
    start, _ = ckpt.load(tmp_path / "w", ema=False)
    after, _ = ckpt.load(tmp_path / "cont", ema=False)
    g0, g1 = start.state_dict()["g.project.0.weight"], after.state_dict()["g.project.0.weight"]
    assert (g0 - g1).abs().max() < 1e-6                 # one step at lr 1e-12: still the exported weights
    code, _, err = run(capsys, "train", "diffusion", "--data", "digits", *TINY, "--out", str(tmp_path / "bad"),
                       "--init", str(tmp_path / "w"))
    assert code == 2 and "does not fit" in err


def test_resume_accepts_a_run_from_before_a_setting_existed(trained, capsys):
    """A config.json without a field added later resumes when the field keeps its default, and not otherwise."""
    out = trained / "older"
    shutil.copytree(trained / "diffusion", out)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["model"]["backbone"]
    (out / "config.json").write_text(json.dumps(cfg))
    args = ["train", "diffusion", "--data", "digits", *TINY, "--out", str(out), "--resume"]
    code, _, err = run(capsys, *args, "--model.backbone=diffusers")
    assert code == 2 and "model.backbone ('unet' -> 'diffusers')" in err
    code, _, err = run(capsys, *args, "--steps", "6")
    assert code == 0, err
