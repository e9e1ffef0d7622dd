"""Property-based tests of the studio's REST API: generated bodies for POST /api/jobs (near-valid ones built from
the request schema's fields, and plain JSON junk with NaN, Infinity, huge numbers and deep nesting), ratings,
history queries and PNG parameter chunks.  Whatever comes in, the answer is never a 500, it is JSON a strict
parser reads, and every 4xx says what was wrong.  The worker is stopped, so no model loads; a few seconds in all."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image, PngImagePlugin

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (the `test` extra)")
pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from danqing.studio import create_app
from danqing.studio.schema import JobRequest

FAST = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

numbers = st.one_of(st.integers(-2, 40), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 2, 4, 16, 17, 2**32, 2**32 - 1, 0.5, 1e309, -1e309, 10**30]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30),
                    st.sampled_from(["emoji", "txt2img", "grid", "style", "euler", "prompt", "seed", "a" * 32, "4"]))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                     st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                    max_leaves=20)
FIELDS = sorted(JobRequest.model_fields)
axis = st.fixed_dictionaries({"param": st.sampled_from(["prompt", "seed", "steps", "guidance", "sampler", "size"]),
                              "values": st.lists(scalars, min_size=0, max_size=6)})
field_values = {"type": st.sampled_from(["txt2img", "img2img", "inpaint", "variations", "interpolation", "grid",
                                         "style", "bogus"]),
                "model": st.sampled_from(["emoji", "style", "nope", "../x", ""]),
                "x": st.one_of(axis, junk), "y": st.one_of(axis, junk),
                "options": st.dictionaries(st.sampled_from(["steps", "guidance", "sampler", "strength", "x"]),
                                           scalars, max_size=4)}


def from_schema(prop: dict):
    """Values near a field's limits, as its JSON schema states them (plus anything at all, now and then)."""
    kinds = [prop, *prop.get("anyOf", [])]
    out = [scalars]
    for k in kinds:
        lo, hi = k.get("minimum", k.get("exclusiveMinimum")), k.get("maximum")
        if k.get("type") == "integer":
            out.append(st.integers(None if lo is None else lo - 1, None if hi is None else hi + 1))
        elif k.get("type") == "number":
            out.append(st.floats(None if lo is None else lo - 0.5, None if hi is None else hi + 0.5))
        elif "enum" in k:
            out.append(st.sampled_from(k["enum"]))
    return st.one_of(out)


PROPS = JobRequest.model_json_schema()["properties"]
plausible = {f: field_values.get(f, from_schema(PROPS[f])) for f in FIELDS}
BASES = [{"model": "emoji", "prompt": "a fox face", "n": 1, "steps": 2, "seed": 1},
         {"type": "variations", "model": "emoji", "prompt": "a cat", "seed": 5, "variation_strength": 0.3},
         {"type": "interpolation", "model": "emoji", "prompt": "a cat", "seed": 1, "seed_b": 2, "frames": 3},
         {"type": "grid", "model": "emoji", "prompt": "a cat", "x": {"param": "steps", "values": [1, 2]}},
         {"type": "style", "init_image": "a" * 32, "styles": ["b" * 32], "method": "gatys", "steps": 3}]
job_bodies = st.one_of(
    st.tuples(st.sampled_from(BASES), st.fixed_dictionaries({}, optional=plausible)).map(lambda t: {**t[0], **t[1]}),
    st.tuples(st.sampled_from(BASES), st.sampled_from(FIELDS).flatmap(
        lambda f: plausible[f].map(lambda v: {f: v}))).map(lambda t: {**t[0], **t[1]}),
    st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=8).map(lambda d: {"model": "emoji", **d}),
    junk)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("data"), runs_dir=tmp_path_factory.mktemp("runs"), start_worker=False,
                     queue_size=10_000)
    yield TestClient(app, raise_server_exceptions=False)
    app.state.studio.close()


def strict(text: str):
    def refuse(constant):
        raise AssertionError(f"the reply holds {constant}, which JSON has not")
    return json.loads(text, parse_constant=refuse)


def check(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    data = strict(r.text) if r.headers.get("content-type", "").startswith("application/json") else None
    if r.status_code >= 400:
        detail = data["detail"]
        assert detail, r.text
        if isinstance(detail, list):
            assert all(isinstance(e.get("msg"), str) and e["msg"] and e.get("loc") for e in detail), detail
        assert len(r.content) < 20_000, len(r.content)


def post_json(client, path: str, body) -> None:
    check(client.post(path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}))


@FAST
@given(body=job_bodies)
def test_jobs_never_answer_500(client, body):
    post_json(client, "/api/jobs", body)


@settings(FAST, max_examples=40)
@given(body=junk, image=st.sampled_from(["0" * 32, "x", "..%2F"]))
def test_ratings_never_answer_500(client, body, image):
    post_json(client, f"/api/images/{image}/rating", {"rating": body} if not isinstance(body, dict) else body)


@settings(FAST, max_examples=40)
@given(params=st.dictionaries(st.sampled_from(["q", "model", "rating", "limit", "offset", "state"]),
                              st.one_of(st.text(max_size=20), st.integers().map(str)), max_size=5))
def test_history_and_job_lists_never_answer_500(client, params):
    check(client.get("/api/history", params=params))
    check(client.get("/api/jobs", params=params))


@settings(FAST, max_examples=40)
@given(own=st.one_of(junk.map(lambda v: json.dumps(v, allow_nan=True)), st.text(max_size=200)),
       a1111=st.one_of(st.none(), st.text(max_size=300),
                       st.lists(st.tuples(st.sampled_from(["Steps", "Seed", "CFG scale", "Size", "Sampler", "Model",
                                                           "Denoising strength", "Best of", "Odd key"]),
                                          st.one_of(scalars.map(str), st.text(max_size=12))), max_size=6)
                       .map(lambda kv: "a prompt\nNegative prompt: x\n" + ", ".join(f"{k}: {v}" for k, v in kv))))
def test_png_parameters_never_answer_500(client, own, a1111):
    info = PngImagePlugin.PngInfo()
    info.add_text("danqing", own)
    if a1111 is not None:
        info.add_text("parameters", a1111)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    check(client.post("/api/params", files={"file": ("a.png", buf.getvalue())}))
