"""The Sketch tab in a real browser (Debian's chromium, driven by playwright) against the real server, with the toy
picture-to-picture model of tests/test_studio_sketch.py (it inverts the drawing): draw two strokes with the mouse,
the model's picture appears beside the pad; undo, Ctrl+Z and clear; Keep and an uploaded picture become translate
jobs in the gallery and the history.  Skipped where chromium or playwright is missing.
"""
from __future__ import annotations

import json
import re
import urllib.request

import pytest
from browser_support import SKIP, browser, free_port, serve  # noqa: F401 - browser is a fixture
from test_studio_sketch import SIDE, drawing, translator_runs

pytestmark = SKIP
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the `browser` extra)")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (the `studio` extra)")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from danqing.studio.server import create_app
    mp = pytest.MonkeyPatch()
    runs = translator_runs(tmp_path_factory.mktemp("toy"), mp, gan=False)
    app = create_app(data_dir=tmp_path_factory.mktemp("studio-data"), runs_dir=runs)
    port = free_port()
    stop = serve(app, port)
    yield f"http://127.0.0.1:{port}"
    stop()
    mp.undo()


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


# The live picture: its size and the darkest and lightest values of its red channel.
LIVE = """() => {
  const img = document.querySelector('#sketch-out');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0;
  for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
  return [c.width, lo, hi];
}"""
SHOWN = "() => !document.querySelector('#sketch-out').hidden && document.querySelector('#sketch-out').complete"


def stroke(page, box, points) -> None:
    """A mouse stroke through ``points`` (fractions of the pad)."""
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def new_picture(page, before: str | None) -> str:
    """Wait for the live picture to change from ``before``; its src."""
    page.wait_for_function(f"() => ({SHOWN})() && document.querySelector('#sketch-out').src !== {json.dumps(before)}")
    return page.get_attribute("#sketch-out", "src")


def test_draw_on_the_pad_and_see_the_models_picture(studio, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme="light")
    problems, sketches = [], []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("request", lambda r: "/api/sketch" in r.url and sketches.append(r.url))
    page.set_default_timeout(15_000)
    try:
        page.goto(studio)
        page.wait_for_selector("#model option[value='sketch']", state="attached")
        page.select_option("#model", "sketch")
        # a translator opens on its Sketch tab; what it cannot do is greyed out, Style stays
        page.wait_for_selector("#tab-sketch[aria-selected='true']")
        for tab in ("txt2img", "image", "interpolation", "grid", "project"):
            assert page.is_disabled(f"#tab-{tab}"), tab
            assert page.get_attribute(f"#tab-{tab}", "title") == "sketch cannot do this"
        assert page.is_enabled("#tab-style") and page.is_visible("#reverse")       # the model's own option
        assert page.is_visible("#sketch-hint") and page.is_hidden("#sketch-out")
        box = page.locator("#sketch-pad").bounding_box()
        assert round(box["width"]) == 256                                           # shown large
        assert page.evaluate("document.querySelector('#sketch-pad').width") == 4 * SIDE

        stroke(page, box, [(0.2, 0.2), (0.5, 0.4), (0.8, 0.8)])
        first = new_picture(page, None)
        size, lo, hi = page.evaluate(LIVE)
        assert size == SIDE and lo < 60 and hi > 200, (size, lo, hi)               # white lines on black
        stroke(page, box, [(0.2, 0.8), (0.8, 0.2)])
        second = new_picture(page, first)
        assert re.fullmatch(r"· \d+ ms", page.text_content("#sketch-ms")), page.text_content("#sketch-ms")
        assert 1 <= len(sketches) <= 2, sketches                                   # at most one a stroke

        page.click("#sketch-undo")                                                  # back to the first stroke
        new_picture(page, second)
        page.locator("body").press("Control+z")                                    # and to a blank pad: a hint
        page.wait_for_selector("#sketch-hint", state="visible")
        assert page.is_hidden("#sketch-out") and page.is_disabled("#sketch-undo")
        asked = len(sketches)
        stroke(page, box, [(0.3, 0.5), (0.7, 0.5)])
        drawn = new_picture(page, second)
        page.click("#sketch-clear")
        page.wait_for_selector("#sketch-hint", state="visible")
        page.click("#sketch-undo")                                                  # the clear undone
        new_picture(page, drawn)
        assert len(sketches) == asked + 2                                           # a blank pad asks nothing

        page.fill("#seed", "11")
        page.click("#sketch-keep")                                                  # the drawing as a job
        page.wait_for_selector("#gallery .group .card img")
        job = get_json(f"{studio}/api/jobs/{page.get_attribute('#gallery .group', 'data-job')}")
        assert job["state"] == "done" and job["request"]["type"] == "translate" and job["request"]["seed"] == 11
        assert job["request"]["options"] == {"reverse": False}
        page.wait_for_selector(f"#history .item[data-id='{job['images'][0]}']")
        assert page.is_hidden("#error"), page.text_content("#error")
    finally:
        page.screenshot(path=str(tmp_path / "sketch.png"))
        page.close()
    assert not problems, problems


def test_an_uploaded_picture_is_translated_as_a_job(studio, browser, tmp_path):
    drawing(48).save(tmp_path / "drawn.png")
    page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.set_default_timeout(15_000)
    try:
        page.goto(studio)
        page.wait_for_selector("#model option[value='sketch']", state="attached")
        page.select_option("#model", "sketch")
        page.wait_for_selector("#tab-sketch[aria-selected='true']")
        assert page.is_visible("#init-drop") and page.is_hidden("#strength") and page.is_hidden("#brush")
        page.set_input_files("#init-file", str(tmp_path / "drawn.png"))
        page.wait_for_selector("#canvas-wrap:not([hidden])")
        page.fill("#n", "2")
        page.check("#reverse")
        page.click("#generate")
        page.wait_for_function("""() => [...document.querySelectorAll('#gallery .group .card img')]
                                          .filter(i => i.complete && i.naturalWidth > 0).length === 2""")
        job = get_json(f"{studio}/api/jobs/{page.get_attribute('#gallery .group', 'data-job')}")
        assert job["request"]["type"] == "translate" and job["request"]["n"] == 2
        assert job["request"]["options"] == {"reverse": True}
        assert page.is_hidden("#error"), page.text_content("#error")
    finally:
        page.screenshot(path=str(tmp_path / "upload.png"))
        page.close()
    assert not problems, problems
