"""The studio's REST API on tiny models: jobs of every type, limits, the queue, cancelling, restarts, history,
uploads, metadata and the events stream."""
from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from starlette.testclient import TestClient
from tiny_models import train_tiny

from danqing.cli import main
from danqing.studio import create_app

T2I = {"model": "t2i", "prompt": "red apple", "n": 1, "steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_text_encoder):
    """A runs folder with a tiny text-to-image model (inside a tiny autoencoder) and a tiny class-conditional GAN."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    mp.setenv("DANQING_CACHE", str(tmp_path_factory.mktemp("cache")))
    root = tmp_path_factory.mktemp("runs")
    train_tiny(root, "ae", "t2i", "gan")
    yield root
    mp.undo()


@pytest.fixture
def make_app(runs, tmp_path):
    """create_app on a temporary data dir (the same one on every call within a test); closed afterwards."""
    apps = []

    def make(**kw):
        app = create_app(tmp_path / "data", runs_dir=runs, static_dir=tmp_path / "static", **kw)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.studio.close()


@pytest.fixture
def client(make_app):
    return TestClient(make_app())


def runner(client):
    return client.app.state.studio.runner


def submit(client, **body) -> str:
    r = client.post("/api/jobs", json={**T2I, **body})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "queued"
    return r.json()["id"]


def finished(client, job_id) -> dict:
    assert runner(client).wait_idle(60)
    return client.get(f"/api/jobs/{job_id}").json()


def png_bytes(img: Image.Image, **text) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def upload(client, data: bytes, name="x.png"):
    return client.post("/api/uploads", files={"file": (name, data, "application/octet-stream")})


def test_models_lists_runs_with_what_they_take(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert {"t2i", "gan", "ae"} <= set(models)
    t2i, gan = models["t2i"], models["gan"]
    assert (t2i["kind"], t2i["family"], t2i["image_size"]) == ("text", "t2i", 16)
    assert t2i["sizes"] == [8, 12, 16, 20, 24, 28, 32]                       # stride 4 (f=2 latents, 2 levels)
    assert "dpmpp2m" in t2i["samplers"] and t2i["defaults"] == {"steps": 8, "guidance": 1.0, "sampler": "dpmpp2m"}
    assert t2i["supports"]["img2img"] and t2i["supports"]["inpaint"]
    assert (gan["kind"], gan["sizes"], gan["samplers"], len(gan["class_names"])) == ("class", [16], [], 10)
    assert not gan["supports"]["img2img"] and gan["supports"]["variations"]
    assert models["ae"]["kind"] == "unconditional"
    assert all("_folder" not in m and "path" not in m for m in models.values())   # no paths leave the server


@pytest.mark.parametrize("body, field, needle", [
    ({"prompt": "x" * 501}, "prompt", "at most 500"),
    ({"n": 17}, "n", "less than or equal to 16"),
    ({"steps": 500}, "steps", "less than or equal to 200"),
    ({"guidance": 31}, "guidance", "less than or equal to 30"),
    ({"sampler": "plms"}, "sampler", "unknown sampler"),
    ({"model": "nope"}, "model", "no model named"),
    ({"model": "../x"}, "model", "no model named"),
    ({"model": "/etc/passwd"}, "model", "no model named"),
    ({"size": 18}, "size", "paints the sizes"),
    ({"prompt": "  "}, "prompt", "prompt is empty"),
    ({"model": "gan", "prompt": "cat"}, "prompt", "paints the classes"),
    ({"model": "gan", "prompt": "3", "sampler": "euler"}, "sampler", "takes no sampler"),
    ({"type": "img2img"}, None, "needs init_image"),
    ({"type": "img2img", "init_image": "0" * 32}, "init_image", "no upload"),
    ({"init_image": "../../etc/passwd"}, "init_image", "should match pattern"),
    ({"type": "interpolation", "seed_b": None}, None, "needs seed and seed_b"),
    ({"type": "grid", "x": {"param": "steps", "values": list(range(1, 10))},
      "y": {"param": "seed", "values": list(range(8))}}, None, "72 cells"),
    ({"type": "grid", "x": {"param": "size", "values": [8]}}, "x",
     "takes no size to vary; a grid axis is one of prompt, seed, sampler, steps, guidance, strength"),
    ({"type": "grid", "x": {"param": "steps", "values": [4, 0]}}, "x", "steps must be between 1 and 200, got 0"),
    ({"type": "grid", "model": "gan", "prompt": "3", "x": {"param": "guidance", "values": [1, 2]}}, "x",
     "gan is a dcgan model: it takes no guidance to vary"),
    ({"type": "grid", "x": {"param": "Steps!", "values": [4]}}, "param", "String should match"),
    ({"options": {"truncation": 0.5}}, "options", "truncation is not an option of t2i"),
    ({"options": {"steps": 500}}, "options", "steps must be between 1 and 200, got 500"),
    ({"best_of": 2, "model": "gan", "prompt": "3"}, "best_of", "best_of needs"),
    ({"colour": "red"}, "colour", "Extra inputs"),
])
def test_bad_requests_are_422_with_a_clear_message(client, body, field, needle):
    r = client.post("/api/jobs", json={**T2I, **body})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(needle in e["msg"] and (field is None or field in e["loc"]) for e in errors), errors
    assert client.get("/api/jobs").json()["jobs"] == []                    # nothing was queued


def test_txt2img_image_params_history_and_ratings(client):
    job = finished(client, submit(client, n=2, prompt="red apple", negative_prompt="cat"))
    assert job["state"] == "done" and len(job["images"]) == 2 and job["progress"] == {"step": 2, "steps": 2}
    first = job["images"][0]
    r = client.get(f"/api/images/{first}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    params = client.get(f"/api/images/{first}/params").json()
    assert (params["prompt"], params["negative_prompt"], params["seed"], params["steps"]) == ("red apple", "cat", 3, 2)
    restored = client.post("/api/params", files={"file": ("a.png", r.content, "image/png")}).json()
    assert restored["source"] == "danqing" and (restored["prompt"], restored["seed"]) == ("red apple", 3)
    other = finished(client, submit(client, prompt="cat face", model="t2i"))["images"][0]
    gan = finished(client, submit(client, model="gan", prompt="7", n=2, steps=None))
    assert gan["state"] == "done" and gan["request"]["steps"] is None
    assert client.post(f"/api/images/{other}/rating", json={"rating": 1}).json() == {"id": other, "rating": 1}
    assert client.post(f"/api/images/{other}/rating", json={"rating": 2}).status_code == 422
    assert client.post(f"/api/images/{'f' * 32}/rating", json={"rating": 1}).status_code == 404

    def ids(**q):
        return [it["id"] for it in client.get("/api/history", params=q).json()["items"]]
    everything = client.get("/api/history").json()
    assert everything["total"] == 5 and everything["items"][0]["model"] == "gan"    # newest first
    assert ids(q="cat") == [other] and ids(q="apple red") == job["images"] and ids(q="apple cat") == []
    assert ids(q="%") == [] and ids(model="gan") == gan["images"]
    assert ids(rating=1) == [other] and len(ids(rating=0)) == 4
    assert ids(limit=2, offset=3) == [it["id"] for it in everything["items"]][3:5]


def test_events_stream_progress_with_previews_then_done(client):
    run = runner(client)
    run.pause()
    run.on_step = lambda job_id, i, steps: time.sleep(0.25)               # slow enough to watch every step
    job_id = submit(client, steps=4)
    threading.Timer(0.5, run.resume).start()
    text = client.get(f"/api/jobs/{job_id}/events").text                # the stream ends with the job
    events = [(block.split("\n")[0][len("event: "):], json.loads(block.split("\n")[1][len("data: "):]))
              for block in text.strip().split("\n\n") if block.startswith("event:")]
    assert events[0] == ("queued", {"position": 1})
    progress = [d for e, d in events if e == "progress"]
    assert len(progress) >= 3 and all(p["steps"] == 4 for p in progress)
    assert [p["step"] for p in progress] == sorted({p["step"] for p in progress})
    assert progress[0]["step"] == 0 and progress[0]["preview"] is None       # started, nothing painted yet
    assert all(p["preview"].startswith("data:image/png;base64,") for p in progress[1:])
    preview = Image.open(io.BytesIO(base64.b64decode(progress[1]["preview"].split(",", 1)[1])))
    assert preview.size == (16, 16)
    assert events[-1][0] == "done" and events[-1][1]["images"] == client.get(f"/api/jobs/{job_id}").json()["images"]
    assert client.get(f"/api/jobs/{'0' * 32}/events").status_code == 404


def test_full_queue_is_429_with_retry_after_and_queued_jobs_cancel(make_app):
    client = TestClient(make_app(queue_size=1))
    runner(client).pause()
    first = submit(client)
    r = client.post("/api/jobs", json=T2I)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "queue is full" in r.json()["detail"]
    assert client.get(f"/api/jobs/{first}").json()["position"] == 1
    assert client.post(f"/api/jobs/{first}/cancel").json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{first}").json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{first}/cancel").status_code == 409
    assert client.post(f"/api/jobs/{'0' * 32}/cancel").status_code == 404
    second = submit(client)                                                # the place is free again
    runner(client).resume()
    assert finished(client, second)["state"] == "done"


def test_cancel_a_running_job_stops_it_at_the_next_step(client):
    started, release = threading.Event(), threading.Event()
    runner(client).on_step = lambda job_id, i, steps: (started.set(), release.wait(10))
    job_id = submit(client, steps=6)
    assert started.wait(30)
    r = client.post(f"/api/jobs/{job_id}/cancel").json()
    assert r["state"] == "running" and r["cancelling"]
    release.set()
    job = finished(client, job_id)
    assert job["state"] == "cancelled" and job["images"] == []


def test_restart_runs_what_was_left_and_keeps_history_and_ratings(make_app):
    client = TestClient(make_app())
    done = finished(client, submit(client))["images"][0]
    client.post(f"/api/images/{done}/rating", json={"rating": -1})
    started, release = threading.Event(), threading.Event()
    runner(client).on_step = lambda job_id, i, steps: (started.set(), release.wait(10))
    running = submit(client, steps=3, prompt="cat")                      # held running at its first step
    assert started.wait(30)
    runner(client).pause()
    queued = submit(client, prompt="fox face")
    closing = threading.Thread(target=client.app.state.studio.close)
    closing.start()                                                        # stops the worker mid-job ...
    release.set()
    closing.join(30)

    client = TestClient(make_app())                                        # ... and a new server on the same dir
    for job_id in (running, queued):
        job = finished(client, job_id)
        assert job["state"] == "done" and len(job["images"]) == 1, job
    items = client.get("/api/history").json()["items"]
    assert [it["prompt"] for it in items] == ["fox face", "cat", "red apple"]    # ran in creation order
    assert client.get("/api/history", params={"rating": -1}).json()["items"][0]["id"] == done


def test_grid_is_one_labelled_sheet_with_its_axes_inside(client):
    job = finished(client, submit(client, type="grid", x={"param": "steps", "values": [1, 2, 3]},
                                  y={"param": "seed", "values": [1, 2]}))
    assert job["state"] == "done" and len(job["images"]) == 1 and job["progress"]["step"] == 12
    r = client.get(f"/api/images/{job['images'][0]}")
    sheet = Image.open(io.BytesIO(r.content))
    assert sheet.size[0] > 3 * 96 and sheet.size[1] > 2 * 96                  # cells enlarged, labels around
    grid = json.loads(sheet.info["danqing"])["grid"]
    assert grid["x"]["values"] == [1, 2, 3] and [c["seed"] for c in grid["cells"]] == [1, 1, 1, 2, 2, 2]
    assert [c["steps"] for c in grid["cells"]] == [1, 2, 3, 1, 2, 3]
    restored = client.post("/api/params", files={"file": ("g.png", r.content, "image/png")}).json()
    assert restored["grid"]["y"]["param"] == "seed"


def test_variations_and_interpolation_paint_the_right_number(client):
    var = finished(client, submit(client, type="variations", n=3, variation_strength=0.3))
    inter = finished(client, submit(client, type="interpolation", seed_b=9, frames=4))
    gan = finished(client, submit(client, type="interpolation", model="gan", prompt="", seed_b=9, frames=3,
                                  steps=None))
    assert [len(j["images"]) for j in (var, inter, gan)] == [3, 4, 3]
    params = [client.get(f"/api/images/{i}/params").json() for i in inter["images"]]
    assert [p["variation_strength"] for p in params] == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_uploads_are_checked_and_feed_img2img_and_inpainting(client):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 255
    r = upload(client, png_bytes(init))
    assert r.status_code == 201 and (r.json()["width"], r.json()["height"]) == (16, 16)
    init_id = r.json()["id"]
    mask_id = upload(client, png_bytes(Image.fromarray(mask))).json()["id"]
    big = upload(client, png_bytes(Image.new("L", (5000, 4000))))          # 20 MP, a few KB compressed
    assert big.status_code == 413 and "pixels" in big.json()["detail"]
    huge = upload(client, b"\0" * (11 * 1024 * 1024))
    assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
    junk = upload(client, b"this is not a picture")
    assert junk.status_code == 422 and "not a picture" in junk.json()["detail"][0]["msg"]
    assert client.post("/api/uploads", json={"file": "x"}).status_code == 422
    assert client.post("/api/uploads", files={"other": ("x.png", png_bytes(init))}).status_code == 422
    img2img = finished(client, submit(client, type="img2img", init_image=init_id, strength=0.5, steps=4))
    inpaint = finished(client, submit(client, type="inpaint", init_image=init_id, mask=mask_id, steps=4))
    assert img2img["state"] == inpaint["state"] == "done", (img2img, inpaint)
    png = client.get(f"/api/images/{inpaint['images'][0]}").content
    painted = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(painted[:, 8:], np.asarray(init)[:, 8:])            # the kept half is untouched
    assert client.get(f"/api/images/{img2img['images'][0]}/params").json()["strength"] == 0.5


def test_params_reads_a1111_text_and_refuses_pictures_without_any(client):
    text = ('a cat on a sofa\nNegative prompt: blurry, dark\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, '
            'Seed: 1234, Size: 512x512, Model hash: abcdef, Model: sd15, Lora hashes: "x: 1, y: 2"')
    r = client.post("/api/params", files={"file": ("a.png", png_bytes(Image.new("RGB", (8, 8)), parameters=text))})
    p = r.json()
    assert r.status_code == 200 and p["source"] == "a1111"
    assert (p["prompt"], p["negative_prompt"], p["steps"], p["sampler"], p["guidance"], p["seed"], p["size"],
            p["model"], p["weights"]) == ("a cat on a sofa", "blurry, dark", 20, "dpmpp2m", 7.0, 1234, 512, "sd15",
                                          "abcdef")
    assert p["extra"] == {"Lora hashes": "x: 1, y: 2"}
    bare = client.post("/api/params", files={"file": ("b.png", png_bytes(Image.new("RGB", (8, 8))))})
    assert bare.status_code == 422 and "no painting parameters" in bare.json()["detail"][0]["msg"]


def test_nothing_outside_the_data_dir_is_served(client, tmp_path):
    secret = "/api/images/..%2F..%2F..%2Fetc%2Fpasswd"
    for path in (secret, "/api/images/../studio.sqlite", f"/api/images/{'a' * 32}", "/api/images/.%2Fx/params",
                 "/static/..%2F..%2Fstudio.sqlite", "/api/images/..%252F..%252Fetc%252Fpasswd"):
        r = client.get(path)
        assert r.status_code in (404, 422) and b"root:" not in r.content, path
    assert client.get("/").status_code == 404 and "index.html" in client.get("/").json()["detail"]
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "index.html").write_text("<h1>studio</h1>")
    assert "<h1>" in client.get("/").text


def test_cli_refuses_to_serve_beyond_loopback_without_a_token(monkeypatch, capsys, tmp_path):
    import uvicorn
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw) or app.state.studio.close())
    monkeypatch.delenv("DANQING_STUDIO_TOKEN", raising=False)
    base = ["studio", "--data-dir", str(tmp_path / "d"), "--runs", str(tmp_path / "runs"), "--port", "9"]
    assert main(base) == 0 and calls[-1]["host"] == "127.0.0.1" and calls[-1]["workers"] == 1
    assert "warning" not in capsys.readouterr().err
    assert main([*base, "--host", "0.0.0.0"]) == 2 and len(calls) == 1
    err = capsys.readouterr().err
    assert "pass --token" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--host", "0.0.0.0", "--token", "s3cret-token"]) == 0 and calls[-1]["host"] == "0.0.0.0"
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err
    assert main([*base, "--queue", "0"]) == 2


def test_project_a_picture_then_paint_and_interpolate_its_projection(client):
    """A project job finds an upload in a model's space (the tiny text model: DDIM inversion); its picture
    carries the latent's id, and txt2img and interpolation jobs paint from that latent.  Mistakes are 422s."""
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["t2i"]["supports"]["project"] and models["t2i"]["spaces"] == ["ode"]
    assert models["gan"]["supports"]["project"] and models["gan"]["spaces"] == ["z"]
    up = upload(client, png_bytes(Image.new("RGB", (20, 20), (200, 40, 40)))).json()["id"]
    project = {"type": "project", "model": "t2i", "prompt": "red apple", "init_image": up, "steps": 3, "seed": 1}
    r = client.post("/api/jobs", json=project)
    assert r.status_code == 202, r.text
    job = finished(client, r.json()["id"])
    assert job["state"] == "done" and len(job["images"]) == 1, job
    shot = job["images"][0]
    latent = client.get(f"/api/images/{shot}/params").json()["latent"]
    assert len(latent) == 16
    again = finished(client, submit(client, latent=shot))
    assert again["state"] == "done", again
    assert client.get(f"/api/images/{again['images'][0]}/params").json()["latent"] == latent
    frames = finished(client, submit(client, type="interpolation", latent=shot, seed_b=9, frames=3))
    assert frames["state"] == "done" and len(frames["images"]) == 3, frames
    for body, field, needle in [
        ({**project, "model": "gan", "prompt": "3", "space": "w"}, "space", "projects into z, not 'w'"),
        ({**project, "space": "w"}, "space", "projects into ode, not 'w'"),
        ({**project, "init_image": None}, None, "project needs init_image"),
        ({**project, "n": 2}, "n", "a project job takes"),
        ({**project, "prompt": " "}, "prompt", "describe the picture"),
        ({**T2I, "latent": again["images"][0]}, "latent", "is not a projection's picture"),
        ({**T2I, "latent": shot, "n": 2}, None, "a projection is painted once"),
        ({**T2I, "model": "gan", "prompt": "3", "latent": shot}, "latent", "was projected with t2i"),
        ({**T2I, "type": "grid", "latent": shot, "x": {"param": "seed", "values": [1]}}, None,
         "latent paints a projection in txt2img, variations, interpolation jobs, not in grid"),
        ({**T2I, "space": "ode"}, None, "space is the latent space of a project job"),
    ]:
        r = client.post("/api/jobs", json=body)
        assert r.status_code == 422, (body, r.text)
        assert any(needle in e["msg"] and (field is None or field in e["loc"]) for e in r.json()["detail"]), \
            (needle, r.json())
