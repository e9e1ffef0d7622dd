"""The studio against a hostile web and hostile input: foreign pages refused (Origin, Referer, Sec-Fetch-Site), the
page token, --token, the Host check (IPv6 included), body and upload limits, numbers that must be JSON numbers,
PNG chunk bombs, and no 500 anywhere.  Jobs go to the bundled painter's catalog entry with the worker stopped, so
no model is ever loaded and the whole file runs in a few seconds."""
from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image, PngImagePlugin

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from starlette.testclient import TestClient

from danqing.cli import main
from danqing.studio import create_app

JOB = {"model": "emoji", "prompt": "a fox face", "n": 1, "steps": 2, "seed": 1}
TOKEN = "s3cret-studio-token"
FOREIGN = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://testserver:8000"},
           {"Origin": "http://testserver.evil.example"}, {"Referer": "http://evil.example/page.html"},
           {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
           {"Origin": "http://evil.example", "X-Danqing-Token": "a guess"}]


@pytest.fixture
def make_client(tmp_path):
    """A TestClient on a fresh studio (worker stopped) that shows a server error as a 500, never raises it."""
    apps = []

    def make(**kw):
        kw = {"runs_dir": tmp_path / "runs", "start_worker": False, **kw}
        app = create_app(tmp_path / f"data{len(apps)}", **kw)
        apps.append(app)
        return TestClient(app, raise_server_exceptions=False)

    yield make
    for app in apps:
        app.state.studio.close()


@pytest.fixture
def client(make_client):
    return make_client()


def png(size=(8, 8), **text) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 60, 20)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def upload(client, data: bytes, **headers):
    return client.post("/api/uploads", files={"file": ("x.png", data, "image/png")}, headers=headers)


def uploads_kept(client) -> int:
    return len(list(client.app.state.studio.store.uploads_dir.glob("*.png")))


def test_foreign_pages_change_nothing_and_same_origin_works(client):
    job = client.post("/api/jobs", json=JOB)                     # a script: no Origin, no Referer
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    for headers in FOREIGN:
        for r in (client.post("/api/jobs", json=JOB, headers=headers),
                  client.post(f"/api/jobs/{job_id}/cancel", headers=headers),
                  upload(client, png(), **headers),
                  client.post(f"/api/images/{'0' * 32}/rating", json={"rating": 1}, headers=headers),
                  client.delete(f"/api/jobs/{job_id}", headers=headers)):
            assert r.status_code == 403, (headers, r.status_code, r.text)
            assert "another web page" in r.json()["detail"]
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "queued"
    assert len(client.get("/api/jobs").json()["jobs"]) == 1 and uploads_kept(client) == 0
    assert client.get("/api/models", headers=FOREIGN[0]).status_code == 200   # reads stay (the browser hides them)

    token = client.app.state.page_token
    for headers in ({"Origin": "http://testserver"}, {"Referer": "http://testserver/"},
                    {"Sec-Fetch-Site": "same-origin"}, {"X-Danqing-Token": token},
                    {"Origin": "http://evil.example", "X-Danqing-Token": token}):
        assert upload(client, png(), **headers).status_code == 201, headers
    assert client.post(f"/api/jobs/{job_id}/cancel", headers={"Origin": "http://testserver"}).json()["state"] \
        == "cancelled"


def test_the_page_carries_its_token_and_is_never_cached(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert f'<meta name="danqing-token" content="{client.app.state.page_token}">' in page.text
    assert client.app.state.page_token not in client.get("/static/api.js").text


def test_token_guards_every_api_request_but_not_the_page(make_client):
    client = make_client(token=TOKEN)
    refused = client.get("/api/models")
    assert refused.status_code == 401 and "--token" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    for headers in ({"Authorization": "Bearer nope"}, {"X-Danqing-Token": TOKEN[:-1]}, {"Cookie": "danqing_x=y"}):
        assert client.get("/api/history", headers=headers).status_code == 401
    assert client.get("/api/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/api/models", headers={"X-Danqing-Token": TOKEN}).status_code == 200
    assert client.post("/api/jobs", json=JOB, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
    assert client.get("/").status_code == 200 and client.get("/static/api.js").status_code == 200

    wrong = client.get("/?token=wrong", follow_redirects=False)
    assert wrong.status_code == 303 and wrong.headers["location"] == "/#token-refused"
    assert "set-cookie" not in wrong.headers
    right = client.get(f"/?token={TOKEN}", follow_redirects=False)
    cookie = right.headers["set-cookie"]
    assert right.status_code == 303 and right.headers["location"] == "/"
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert client.get("/api/history").status_code == 200                        # the client keeps the cookie
    # the cookie signs in, but a browser sends it from any page of the site: it proves no origin
    assert client.post("/api/jobs", json=JOB, headers={"Origin": "http://testserver:9000"}).status_code == 403
    assert client.post("/api/jobs", json=JOB, headers={"Origin": "http://testserver"}).status_code == 202


@pytest.mark.parametrize("host, ok", [
    ("[::1]:7860", True), ("127.0.0.1:7860", True), ("localhost:7860", True), ("LOCALHOST:7860", True),
    ("[::1]:7861", False), ("127.0.0.1:80", False), ("127.0.0.1", False), ("evil.example:7860", False),
    ("evil.example", False), ("[::1", False), ("::1", False), ("[::2]:7860", False), ("", False),
    ("127.0.0.1:7860:7860", False), ("[evil]:7860", False)])
def test_host_check_includes_ipv6_and_the_port(make_client, host, ok):
    client = make_client(allowed_hosts=["127.0.0.1:7860", "localhost:7860", "[::1]:7860"])
    r = client.get("/api/models", headers={"host": host})
    assert r.status_code == (200 if ok else 400), r.text
    if not ok:
        assert "DNS rebinding" in r.json()["detail"]


def test_cli_serving_on_ipv6_loopback_checks_the_host(monkeypatch, tmp_path):
    import uvicorn
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append((app, kw)))
    monkeypatch.delenv("DANQING_STUDIO_TOKEN", raising=False)
    assert main(["studio", "--data-dir", str(tmp_path / "d"), "--runs", str(tmp_path / "r"), "--host", "::1",
                 "--port", "7860"]) == 0
    app, kw = apps[0]
    try:
        assert kw["host"] == "::1"
        client = TestClient(app)
        assert client.get("/api/models", headers={"host": "[::1]:7860"}).status_code == 200
        assert client.get("/api/models", headers={"host": "rebound.example:7860"}).status_code == 400
    finally:
        app.state.studio.close()


def test_cli_token_from_flag_or_environment(monkeypatch, tmp_path, capsys):
    import uvicorn
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app) or app.state.studio.close())
    base = ["studio", "--data-dir", str(tmp_path / "d"), "--runs", str(tmp_path / "r")]
    monkeypatch.setenv("DANQING_STUDIO_TOKEN", TOKEN)
    assert main([*base, "--host", "0.0.0.0"]) == 0
    assert "/?token=TOKEN" in capsys.readouterr().err                         # how to sign in, not the token
    assert TestClient(apps[-1]).get("/api/models").status_code == 401
    monkeypatch.delenv("DANQING_STUDIO_TOKEN")
    assert main([*base, "--token", "short"]) == 2 and "8 or more" in capsys.readouterr().err
    assert main([*base, "--bogus"]) == 2


def test_bodies_over_the_limits_are_413_before_they_are_read(make_client):
    client = make_client(max_body=64 * 1024, max_json=4096)
    big = client.post("/api/jobs", json={**JOB, "prompt": "x" * 5000})
    assert big.status_code == 413 and "larger than" in big.json()["detail"]

    def chunks():                                  # no Content-Length: counted while it streams in
        for _ in range(10):
            yield b"x" * 1024
    streamed = client.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert upload(client, png((300, 300)) + b"\0" * 70_000).status_code == 413
    assert upload(client, png()).status_code == 201
    bad = client.post("/api/jobs", json=JOB, headers={"content-length": "12x"})
    assert bad.status_code == 400


def test_422_never_echoes_a_huge_input(client):
    r = client.post("/api/jobs", json={**JOB, "prompt": "x" * 900_000, "negative_prompt": "y" * 100_000})
    assert r.status_code == 422 and len(r.content) < 2000, len(r.content)
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "prompt"], ["body", "negative_prompt"]]
    many = client.post("/api/jobs", json={**JOB, **{f"k{i}": i for i in range(500)}})
    assert many.status_code == 422 and len(many.json()["detail"]) == 21 and len(many.content) < 10_000
    key = client.post("/api/jobs", json={**JOB, "k" * 50_000: 1})
    assert key.status_code == 422 and len(key.content) < 2000


@pytest.mark.parametrize("raw, field", [
    ('"guidance": NaN', "guidance"), ('"guidance": Infinity', "guidance"), ('"guidance": -Infinity', "guidance"),
    ('"guidance": 1e309', "guidance"), ('"strength": NaN', "strength"), ('"n": "4"', "n"), ('"n": true', "n"),
    ('"n": 2.5', "n"), ('"steps": "2"', "steps"), ('"seed": false', "seed"), ('"size": "64"', "size"),
    ('"variation_strength": NaN', "variation_strength"), ('"best_of": 1e400', "best_of"),
    ('"options": {"guidance": NaN}', "options"), ('"options": {"steps": "4"}', "options"),
    ('"options": {"steps": true}', "options"), ('"type": "grid", "x": {"param": "guidance", "values": [NaN]}', "x"),
    ('"type": "style", "styles": ["' + "a" * 32 + '"], "init_image": "' + "b" * 32 + '", "alpha": NaN', "alpha"),
    ('"type": "style", "styles": ["' + "a" * 32 + '"], "style_weights": [true]', "style_weights"),
    ('"foo": NaN', "foo")])
def test_numbers_must_be_finite_json_numbers(client, raw, field):
    body = json.dumps({**JOB, "steps": 2})[:-1] + ", " + raw + "}"
    if raw.startswith('"type": "style"'):
        body = "{" + raw + "}"
    r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"the reply holds {c}"))["detail"]
    assert any(e["loc"][:2] == ["body", field] for e in detail), detail


def test_ratings_take_numbers_not_strings_or_booleans(client):
    for value in ("1", True, 2, None, float("nan")):
        r = client.post(f"/api/images/{'0' * 32}/rating", content=json.dumps({"rating": value}),
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rating"], (value, r.text)
    assert client.post(f"/api/images/{'0' * 32}/rating", json={"rating": 1}).status_code == 404


@pytest.mark.parametrize("text, needle", [
    ({"danqing": "[" * 100_000 + "]" * 100_000}, "nested"),
    ({"danqing": '{"prompt": "p", "grid": {"a": ' + "[" * 40 + "1" + "]" * 40 + "}}"}, "nested"),
    ({"danqing": '{"prompt": "p", "guidance": NaN}'}, "NaN"),
    ({"danqing": '{"prompt": "p", "guidance": 1e999}'}, "too large"),
    ({"danqing": "[1, 2]"}, "not an object"),
    ({"danqing": "{" * 3}, "cannot be read"),
    ({"danqing": json.dumps({"prompt": "x" * (1024 * 1024 + 1)})}, "at most"),
    ({"parameters": "p" * 70_000}, "at most 65,536"),
])
def test_parameter_chunk_bombs_are_a_clean_422(client, text, needle):
    r = client.post("/api/params", files={"file": ("a.png", png(**text))})
    assert r.status_code == 422, r.text[:300]
    assert needle in r.json()["detail"][0]["msg"] and len(r.content) < 2000


def test_a1111_text_with_odd_numbers_and_long_lines_reads_quickly(client):
    t0 = time.monotonic()
    odd = client.post("/api/params", files={"file": ("a.png", png(parameters="p\nSteps: 2, CFG scale: nan, "
                                                                             "Seed: 1e999, Denoising strength: inf"))})
    assert odd.status_code == 200 and odd.json()["steps"] == 2
    assert odd.json()["extra"] == {"CFG scale": "nan", "Seed": "1e999", "Denoising strength": "inf"}
    for line in ("Steps: 1, " + "a " * 30_000, "Steps: 1, " + 'k:"' * 20_000, "Seed: 1, " + "a" * 60_000):
        assert client.post("/api/params", files={"file": ("a.png", png(parameters=line))}).status_code == 200
    assert time.monotonic() - t0 < 3
    fallback = client.post("/api/params", files={"file": ("a.png", png(danqing="[" * 5000, parameters="cat\nSteps: "
                                                                       "3, Seed: 4"))})
    assert fallback.json()["source"] == "a1111" and fallback.json()["seed"] == 4


def test_upload_errors_name_the_problem_not_a_python_object(client):
    good = png((64, 64))
    for data in (b"this is not a picture", good[:20], good[:40], good[:100], b"GIF89a" + b"\0" * 20):
        r = upload(client, data)
        msg = r.json()["detail"][0]["msg"]
        assert r.status_code == 422 and "not a picture" in msg, r.text
        assert "0x" not in msg and "BytesIO" not in msg and "<" not in msg, msg
    r = client.post("/api/params", files={"file": ("a.png", b"junk")})
    assert r.status_code == 422 and "BytesIO" not in r.text and "0x" not in r.text


def test_upload_quota_drops_the_oldest_unneeded_and_refuses_when_all_are_needed(make_client):
    client = make_client(upload_quota=(2, 10**9))
    store = client.app.state.studio.store
    first, second = (upload(client, png((64, 64))).json()["id"] for _ in range(2))
    third = upload(client, png((64, 64))).json()["id"]
    assert store.upload(first) is None and store.upload(second) and store.upload(third)   # the oldest went
    jobs = [client.post("/api/jobs", json={**JOB, "type": "img2img", "init_image": u}).json()["id"]
            for u in (second, third)]
    full = upload(client, png((64, 64)))
    assert full.status_code == 429 and "retry" in full.json()["detail"] and full.headers["retry-after"]
    client.post(f"/api/jobs/{jobs[0]}/cancel")
    assert upload(client, png((64, 64))).status_code == 201
    assert store.upload(second) is None and store.upload(third) and uploads_kept(client) == 2


GARBAGE = [
    ("post", "/api/jobs", {"content": b"[" * 200_000, "headers": {"content-type": "application/json"}}),
    ("post", "/api/jobs", {"content": b'{"seed": ' + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}}),
    ("post", "/api/jobs", {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}}),
    ("post", "/api/jobs", {"content": b"[]", "headers": {"content-type": "application/json"}}),
    ("post", "/api/jobs", {"content": b"null", "headers": {"content-type": "application/json"}}),
    ("post", "/api/jobs", {"content": b'{"model": "emoji"}', "headers": {"content-type": "text/plain"}}),
    ("post", "/api/jobs", {"json": {"options": {"x" * 100: 1}}}),
    ("post", "/api/jobs", {"json": {**JOB, "x": {"param": "prompt", "values": [1e300, None]}}}),
    ("post", "/api/jobs", {"json": {**JOB, "type": "grid", "x": {"param": "seed", "values": ["nan", "inf", -1]}}}),
    ("post", "/api/uploads", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}}),
    ("post", "/api/uploads", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}),
    ("post", "/api/params", {"files": {"file": ("a", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)}}),
    ("post", "/api/images/..%2F..%2Fx/rating", {"json": {"rating": 1}}),
    ("post", "/api/jobs/%00/cancel", {}),
    ("get", "/api/history?limit=abc&rating=nan&offset=-1", {}),
    ("get", "/api/history?q=" + "%25_" * 200, {}),
    ("get", "/api/jobs?state=bogus&limit=1e9", {}),
    ("get", "/api/images/" + "a" * 5000 + "/params", {}),
]


@pytest.mark.parametrize("method, path, kw", GARBAGE)
def test_garbage_never_gets_a_500_and_every_4xx_says_why(client, method, path, kw):
    r = getattr(client, method)(path, **kw)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code < 400:
        return
    detail = r.json()["detail"]
    assert detail and (isinstance(detail, str) or all(e.get("msg") for e in detail)), detail
