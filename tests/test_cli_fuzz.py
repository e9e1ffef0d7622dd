"""Bad input to every command, and to `danqing train` for every family in the registry: a non-zero exit, one
clear line on stderr (after argparse's usage lines, for what argparse refuses itself), no traceback, no
runaway memory, and nothing the user had changed.  A family added to the registry is walked here too."""
from __future__ import annotations

import hashlib
import resource
from pathlib import Path

import pytest
from PIL import Image

from danqing.cli import main
from danqing.families import FAMILIES, spec

HUGE = str(10**9)
MEMORY_BOUND = 2 << 30            # bytes of peak memory all the cases together may add


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A working folder with a picture, a corrupt picture, a file where a folder should be, a tiny run of every
    painting family, and a damaged run."""
    root = tmp_path_factory.mktemp("fuzz")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "pic.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "file").write_text("a file, not a folder")
    for name in ("diffusion", "dcgan"):
        assert main(["train", name, "--data", "digits", "--preset", "tiny", "--steps", "1", "--batch-size", "4",
                     "-q", "--bf16", "off", "--train.sample_every=0", "--train.sample_n=1", "--out",
                     str(root / name)]) == 0
    assert main(["train", "pix2pix", "--data", "digit-sketch", "--preset", "tiny", "--steps", "1", "--batch-size",
                 "2", "-q", "--bf16", "off", "--train.sample_every=0", "--train.sample_n=1", "--out",
                 str(root / "pix2pix")]) == 0
    Image.new("RGB", (40, 30), (255, 255, 255)).save(root / "wide.png")
    (root / "empty").mkdir()
    (root / "twins").mkdir()
    for ext in ("png", "jpg"):
        Image.new("RGB", (16, 16), (0, 0, 0)).save(root / "twins" / f"same.{ext}")
    (root / "damaged").mkdir()
    (root / "damaged" / "config.json").write_text("{not json")
    (root / "damaged" / "model.safetensors").write_bytes(b"\0" * 10)
    return root


def cases(p: Path) -> list[list[str]]:
    out = ["paint", "a fox", "-o", str(p / "out"), "-q"]
    unwritable = str(p / "file" / "sub")
    paint = [[*out, "-n", v] for v in ("0", "-1", HUGE, "x")]
    paint += [[*out, "--size", v] for v in ("0", "7", "100", HUGE)]
    paint += [[*out, "--steps", v] for v in ("0", "-1", HUGE, "nan")]
    paint += [[*out, "--guidance", v] for v in ("nan", "inf", "-1", "1e309")]
    paint += [[*out, "--best-of", v] for v in ("0", HUGE)]
    paint += [[*out, "--strength", "0", "--init", str(p / "pic.png")], [*out, "--init", str(p / "corrupt.png")],
              [*out, "--init", str(p / "missing.png")], [*out, "--mask", str(p / "pic.png")],
              [*out, "--model", str(p / "missing")], [*out, "--model", str(p / "damaged")],
              ["paint", "--from", str(p / "corrupt.png"), "-o", str(p / "out")],
              ["paint", "--from", str(p / "missing.png"), "-o", str(p / "out")],
              ["paint", "a fox", "-o", unwritable], ["paint", "a fox", "--seed", "x"]]
    sample = []
    for run in ("diffusion", "dcgan"):
        s = ["sample", str(p / run), "-o", str(p / "s.png")]
        sample += [[*s, "-n", v] for v in ("0", "-1", HUGE)] + [[*s, "--batch-size", "0"], [*s, "--class", "nine"],
                                                                [*s, "--steps", "0"], [*s, "--guidance", "nan"],
                                                                ["sample", str(p / run), "-o", unwritable + "/s.png"]]
    sample += [["sample", str(p / "missing")], ["sample", str(p / "damaged")], ["sample", str(p / "file")]]
    project = []
    for run in ("diffusion", "dcgan"):
        j = ["project", str(p / "pic.png"), "--model", str(p / run), "--class", "3", "-o", str(p / "proj")]
        project += [[*j, "--steps", v] for v in ("0", "-1", HUGE, "x")] + [[*j, "--space", "nosuch"],
                                                                          [*j, "--class", "nine"],
                                                                          [*j, "--distance", "lpips"]]
        project += [["project", str(p / f), "--model", str(p / run), "--class", "3", "-o", str(p / "proj")]
                    for f in ("missing.png", "corrupt.png", "file")]
        project += [["project", str(p / "pic.png"), "--model", str(p / run), "--class", "3", "-o", unwritable],
                    ["project", *[str(p / "pic.png")] * 17, "--model", str(p / run), "-o", str(p / "proj")],
                    ["sample", str(p / run), "--latent", str(p / "missing.safetensors"), "-o", str(p / "s.png")],
                    ["sample", str(p / run), "--latent", str(p / "corrupt.png"), "-o", str(p / "s.png")]]
    project += [["project", str(p / "pic.png"), "--model", str(p / m), "-o", str(p / "proj")]
                for m in ("missing", "damaged", "file")]
    t = ["translate", str(p / "pic.png"), "--model", str(p / "pix2pix"), "-o", str(p / "tr")]
    translate = [["translate", str(p / f), "--model", str(p / "pix2pix"), "-o", str(p / "tr")]
                 for f in ("missing.png", "corrupt.png", "file", "wide.png", "empty", "twins")]
    translate += [[*t[:3], str(p / m), *t[4:]] for m in ("missing", "damaged", "dcgan")]
    translate += [[*t, "--seed", "x"], [*t, "--dropout", "maybe"], [*t, "--reverse", "yes"], [*t[:-1], unwritable],
                  [*t, "--fit", "stretch"]]
    train = []
    for name in FAMILIES:
        t = ["train", name, "--data", "digits", "--preset", "tiny", "-q", "--out", str(p / "runs" / name)]
        train += [[*t, "--steps", v] for v in ("0", "-1", "x")] + [[*t, "--batch-size", v] for v in ("0", "-4")]
        train += [[*t, "--model.image_size=100000"], [*t, "--model.image_size=0"], [*t, "--model.nosuch=1"],
                  [*t, "--train.lr=nan"], [*t, "--train.lr=-1"], [*t, "--preset", "nosuch"],
                  ["train", name, "--data", str(p / "missing"), "--preset", "tiny", "-q"],
                  ["train", name, "--data", "digits", "--preset", "tiny", "-q", "--out", unwritable]]
        if not spec(name).roles:
            train.append([*t, "--role", "style=digits"])
    other = [["data", "info", str(p / "missing")], ["data", "preview", "digits", "-n", "0", "-o", str(p / "v.png")],
             ["data", "preview", "digits", "--size", HUGE, "-o", str(p / "v.png")],
             ["data", "preview", "digits", "-o", unwritable + "/v.png"], ["data", "fetch", "nosuch"],
             ["data", "preview", "digits", "--augment", "rotate", "-o", str(p / "v.png")],
             ["eval", "--generated", str(p / "missing"), "--reference", "digits"],
             ["eval", "--generated", str(p / "dcgan"), "--reference", "digits", "--metrics", "nosuch"],
             ["eval", "--generated", str(p / "dcgan"), "--reference", "digits", "-n", "-1"],
             ["export", str(p / "missing"), "-o", str(p / "e")], ["export", str(p / "dcgan"), "-o", unwritable],
             ["style", str(p / "missing.png"), "--style", str(p / "pic.png"), "-o", str(p / "st.png")],
             ["style", str(p / "pic.png"), "--style", str(p / "corrupt.png"), "-o", str(p / "st.png")],
             ["style", str(p / "pic.png"), "--style", str(p / "pic.png"), "--size", "0", "-o", str(p / "st.png")],
             ["style", str(p / "pic.png"), "--style", str(p / "pic.png"), "--method", "adain", "--alpha", "2",
              "-o", str(p / "st.png")],
             ["style", str(p / "pic.png"), "--style", str(p / "pic.png"), "-o", unwritable + "/st.png"]]
    return paint + sample + project + translate + train + other


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` with a digest of its bytes."""
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def test_every_bad_invocation_is_one_clear_line(place, capsys):
    before = snapshot(place)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    bad = []
    all_cases = cases(place)
    for argv in all_cases:
        try:
            code = main(argv)
        except SystemExit as e:                                 # argparse's own refusals
            code = e.code
        except Exception as e:  # noqa: BLE001 - what main lets through is a traceback for the user
            code, err = None, f"Traceback: {type(e).__name__}: {e}"
            bad.append(f"{' '.join(argv)} -> {err}")
            capsys.readouterr()
            continue
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))
                 and not line.startswith("warning:")]
        if code in (0, None) or "Traceback" in err or len(lines) != 1:
            bad.append(f"{' '.join(argv)} -> exit {code}: {err.strip()[-300:]!r}")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    assert not bad, f"{len(bad)} of {len(all_cases)} invocations were not one clear line:\n" + "\n".join(bad)
    assert grown < MEMORY_BOUND, f"peak memory grew by {grown / 2**30:.1f} GiB"
    assert snapshot(place) == before, "a refused command changed the user's files"

