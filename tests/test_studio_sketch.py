"""The sketch pad's API and translate jobs, on a toy picture-to-picture family registered in the test (one file, one
registry line): POST /api/sketch answers the translation of a drawing at once, a translate job puts it in history,
and what does not fit (a wrong size, a blank pad, no picture, a model that paints from noise) is a clear 422.

``translator_runs`` is shared with the browser test of the pad (tests/test_studio_browser_sketch.py).
"""
from __future__ import annotations

import io
import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from starlette.testclient import TestClient
from tiny_models import train_tiny

from danqing.cli import main
from danqing.families import FAMILIES

SIDE = 32           # the toy translates SIDE x SIDE RGB pictures

TOY = textwrap.dedent('''
    """A toy translator: the input picture inverted (its `reverse`, like CycleGAN's, gives it back unchanged); one
    scalar parameter, already at its optimum, so that `danqing train` has something to step; its role `a` (the
    trainer's grid shows its pictures translated) defaults to the digits."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from danqing.options import option
    from danqing.protocol import DataRole, Facts, FamilySpec, Phase, Translates


    @dataclass(frozen=True)
    class Config:
        image_size: int = 32
        image_channels: int = 3


    @dataclass(frozen=True)
    class Options:
        reverse: bool = option(False, "the other way: give the picture back as it came")


    class Toy(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.gain = nn.Parameter(torch.ones(()))

        def phases(self):
            return [Phase("main")]

        def loss(self, batch, phase, step=0, carry=None):
            return {"loss": (self.gain * batch.images - batch.images).square().mean()}

        def translate(self, cond, *, generator=None, options=None):
            o = options or Options()
            return cond.image if o.reverse else -cond.image          # (B, C, S, S) in [-1, 1]


    SPEC = FamilySpec("toytrans", Config, Toy, {"tiny": Config()}, "a toy picture-to-picture model",
                      {"lr": 1e-2, "warmup": 0}, Options, frozenset({Translates}),
                      lambda c: Facts(c.image_size, c.image_channels),
                      roles=(DataRole("a", "the pictures to translate", default="digits"),))
''')


def translator_runs(root: Path, mp: pytest.MonkeyPatch, *, gan: bool = True) -> Path:
    """Register the toy family (one module written to ``root``, one FAMILIES entry, undone with ``mp``) and train
    it 1 step into ``root``/runs/sketch; with ``gan``, a tiny class-conditional DCGAN too (``runs/gan``)."""
    (root / "toytrans_family.py").write_text(TOY)
    mp.syspath_prepend(str(root))
    mp.setitem(FAMILIES, "toytrans", "toytrans_family")            # the one registry line
    runs = root / "runs"
    assert main(["train", "toytrans", "--data", "digits", "--preset", "tiny", "--steps", "1", "--batch-size", "4",
                 "--out", str(runs / "sketch"), "-q", "--bf16", "off", "--train.sample_every=0"]) == 0
    if gan:
        train_tiny(runs, "gan")
    return runs


def drawing(side: int = SIDE, *, lines: bool = True) -> Image.Image:
    """A white pad with two black strokes (or none)."""
    img = Image.new("RGB", (side, side), "white")
    if lines:
        d = ImageDraw.Draw(img)
        d.line([(3, 4), (side - 5, side - 6)], fill="black", width=2)
        d.line([(4, side - 4), (side - 4, 6)], fill=(40, 40, 40), width=1)
    return img


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    yield translator_runs(tmp_path_factory.mktemp("toy"), mp)
    mp.undo()


@pytest.fixture
def client(runs, tmp_path):
    from danqing.studio.server import create_app
    app = create_app(tmp_path / "data", runs_dir=runs, static_dir=tmp_path / "static")
    try:
        yield TestClient(app)
    finally:
        app.state.studio.close()


def sketch(client, data: bytes, model: str = "sketch", **query):
    return client.post("/api/sketch", params={"model": model, **query}, files={"file": ("pad.png", data)})


def message(r) -> str:
    assert r.status_code == 422, r.text
    return " ".join(e["msg"] for e in r.json()["detail"])


def test_the_translator_is_listed_as_one(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    toy = models["sketch"]
    assert toy["family"] == "toytrans" and toy["kind"] == "unconditional" and toy["image_size"] == SIDE
    assert toy["supports"]["translate"] is True
    assert not any(toy["supports"][k] for k in ("variations", "interpolation", "grid", "img2img"))
    assert [o["name"] for o in toy["options"]] == ["reverse"]
    assert models["gan"]["supports"]["translate"] is False


def test_the_bundled_models_that_paint_are_offered_with_the_translator_among_them(client):
    """Every bundled model whose family paints is offered (sketch-to-emoji opens the Sketch tab); the AdaIN decoder
    and the prompt-consistency scorer are parts of other jobs, not models to pick."""
    from danqing.families import spec
    from danqing.pipeline import WEIGHTS, bundled
    names = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    installed = [p.name for p in sorted(WEIGHTS.iterdir()) if (p / "config.json").is_file()] if WEIGHTS.is_dir() else []
    for name in installed:
        family = json.loads((WEIGHTS / name / "config.json").read_text())["family"]
        assert (name in names) == spec(family).paints == (name in bundled("model")), name
    if "sketch-to-emoji" in installed:
        assert names["sketch-to-emoji"]["supports"]["translate"] is True
        assert "sketch-to-emoji" not in bundled("painter")                  # it paints from pictures, not text


def test_a_sketch_comes_back_translated_at_once(client):
    pad = drawing()
    started = time.perf_counter()
    r = sketch(client, png(pad), seed=7)
    ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["cache-control"] == "no-store"
    got = pixels(r.content)
    assert got.shape == (SIDE, SIDE, 3)
    assert np.abs(got - (255 - np.asarray(pad, np.int16))).max() <= 1       # the toy inverts: lines turn white
    print(f"/api/sketch round trip: {ms:.0f} ms (the first call loads the model)")
    assert client.get("/api/history").json()["total"] == 0                  # not kept
    assert client.get("/api/jobs").json()["jobs"] == []                     # not queued


def test_what_the_pad_cannot_translate_is_a_clear_422(client):
    assert "the sketch is 48x48; this model translates 32x32 pictures" in message(sketch(client, png(drawing(48))))
    assert message(sketch(client, png(drawing(lines=False)))) == "the sketch is empty: draw something first"
    assert "not a picture the studio reads" in message(sketch(client, b"these are not pixels"))
    gan = message(sketch(client, png(drawing()), model="gan"))
    assert "gan is a dcgan model; the sketch pad needs a picture-to-picture model" in gan
    assert "no model named 'nothing'" in message(sketch(client, png(drawing()), model="nothing"))


def upload(client, img: Image.Image) -> str:
    r = client.post("/api/uploads", files={"file": ("pad.png", png(img))})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_translate_job_lands_in_history_with_its_parameters(client):
    pad = drawing(64)                                   # a job fits its picture to the model's size
    job = {"type": "translate", "model": "sketch", "init_image": upload(client, pad), "seed": 5, "n": 2}
    r = client.post("/api/jobs", json=job)
    assert r.status_code == 202, r.text
    back = client.post("/api/jobs", json={**job, "options": {"reverse": True}})
    assert back.status_code == 202, back.text
    assert client.app.state.studio.runner.wait_idle(60)
    done = client.get(f"/api/jobs/{r.json()['id']}").json()
    assert done["state"] == "done" and len(done["images"]) == 2, done
    items = client.get("/api/history?model=sketch").json()["items"]
    assert {i["id"] for i in items} >= set(done["images"])
    item = next(i for i in items if i["id"] == done["images"][0])
    assert item["type"] == "translate" and item["width"] == SIDE and item["seed"] == 5
    first = done["images"][0]
    again = client.get(f"/api/jobs/{back.json()['id']}").json()["images"][0]
    inverted, kept = (pixels(client.get(f"/api/images/{i}").content) for i in (first, again))
    assert np.abs(inverted + kept - 255).max() <= 1                          # reverse: the picture as it came


def test_translate_and_the_other_job_types_do_not_mix(client):
    up = upload(client, drawing())
    txt = message(client.post("/api/jobs", json={"type": "txt2img", "model": "sketch", "n": 1}))
    assert "sketch translates pictures: use type translate with init_image" in txt
    wrong = message(client.post("/api/jobs", json={"type": "translate", "model": "gan", "init_image": up}))
    assert "translate needs a picture-to-picture model" in wrong and "gan is a dcgan model" in wrong
    assert "translate needs init_image" in message(client.post("/api/jobs", json={"type": "translate",
                                                                                  "model": "sketch"}))


def test_the_pad_takes_the_models_options(client):
    pad = drawing()
    back = sketch(client, png(pad), options='{"reverse": true}')
    assert back.status_code == 200, back.text
    assert np.abs(pixels(back.content) - np.asarray(pad, np.int16)).max() <= 1       # reverse: as it came
    assert "steps is not an option of sketch" in message(sketch(client, png(pad), options='{"steps": 3}'))
    assert "options must be a JSON object" in message(sketch(client, png(pad), options="reverse"))
    assert "not NaN" in message(sketch(client, png(pad), options='{"reverse": NaN}'))
    assert "valid dictionary" in message(sketch(client, png(pad), options="[1]"))
