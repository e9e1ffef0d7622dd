"""Time from Generate to the first preview in the studio, on the bundled painter.

    python bench/studio_preview.py [--model emoji] [--repeats 5] [--screenshot docs/studio.png]

Starts `danqing studio` (loopback, a temporary data dir) in a subprocess, then for each repeat submits a
txt2img job (4 pictures, the model's default steps and guidance) and reads its event stream: reports the
time to the first `progress` event that carries a preview picture, and to `done`, as medians.  The first job
also loads the model, so it is reported apart ("cold").  With --screenshot, headless chromium (Debian's,
driven by playwright) paints "a fox face, 3d style" on the page and saves a screenshot.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from studio_load import HOST, free_port  # noqa: E402


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the studio exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/api/models")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the studio did not start")


def one_job(port: int, model: str, prompt: str, seed: int) -> tuple[float, float]:
    """(seconds to the first preview, seconds to done) of one job, timed from its submission."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    body = json.dumps({"type": "txt2img", "model": model, "prompt": prompt, "n": 4, "seed": seed})
    t0 = time.perf_counter()
    conn.request("POST", "/api/jobs", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    job = json.loads(resp.read())
    if resp.status != 202:
        raise SystemExit(f"job refused: {resp.status} {job}")
    conn.request("GET", f"/api/jobs/{job['id']}/events")
    stream = conn.getresponse()
    first = None
    event = ""
    while True:
        line = stream.readline().decode().strip()
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = json.loads(line.split(":", 1)[1])
            if event == "progress" and data.get("preview") and first is None:
                first = time.perf_counter() - t0
            if event in ("done", "failed", "cancelled"):
                if event != "done":
                    raise SystemExit(f"job {event}: {data}")
                return first if first is not None else float("nan"), time.perf_counter() - t0


def screenshot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.fill("#prompt", "a fox face, 3d style")
        page.click("#generate")
        page.wait_for_selector("#gallery img", timeout=120_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--screenshot", type=Path)
    a = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(sys.executable).with_name("danqing")
        proc = subprocess.Popen([str(exe), "studio", "--port", str(port), "--data-dir", f"{tmp}/data",
                                 "--runs", f"{tmp}/runs"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(port, proc)
            cold = one_job(port, a.model, "a red apple, 3d style", 0)
            warm = [one_job(port, a.model, "a red apple, 3d style", k) for k in range(1, a.repeats + 1)]
            print(f"model {a.model}, 4 pictures a job, default steps and guidance")
            print(f"cold (the model loads): first preview {cold[0]:.2f} s, done {cold[1]:.2f} s")
            print(f"warm, median of {a.repeats}: first preview {statistics.median(w[0] for w in warm):.2f} s, "
                  f"done {statistics.median(w[1] for w in warm):.2f} s")
            if a.screenshot:
                screenshot(f"http://{HOST}:{port}/", a.screenshot)
                print(f"screenshot: {a.screenshot}")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
