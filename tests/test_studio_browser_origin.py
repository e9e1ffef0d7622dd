"""The studio against a foreign web page, in a real browser (Debian's chromium, driven by playwright).  The studio
serves on one port; a tiny http.server on another port (another origin, the same site) serves a page that tries
to upload, queue a job and cancel one, by fetch and by a plain form.  The studio refuses every one (403) and
nothing changes; the studio's own page then does the same things and they work.  A studio started with a token
asks for it once, and its page works after.  No model is loaded (the worker is stopped)."""
from __future__ import annotations

import base64
import http.server
import io
import threading

import pytest
from browser_support import SKIP, browser, free_port, serve  # noqa: F401 - browser is a fixture

TOKEN = "browser-test-token"

pytestmark = SKIP
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the `browser` extra)")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (the `studio` extra)")
pytest.importorskip("fastapi", reason="fastapi is not installed (the `studio` extra)")

FOREIGN_PAGE = """<!doctype html><meta charset="utf-8"><title>a page elsewhere</title>
<iframe name="sink"></iframe>
<form id="form" method="post" target="sink"></form>
<script type="module">
const p = new URLSearchParams(location.search);
const studio = p.get('studio'), job = p.get('job');
const png = Uint8Array.from(atob(p.get('png')), (c) => c.charCodeAt(0));
const tries = [];
async function attempt(name, url, init) {
  try { const r = await fetch(url, init); tries.push([name, r.type, r.status]); }
  catch (e) { tries.push([name, 'error', String(e)]); }
}
const form = new FormData();
form.append('file', new Blob([png], {type: 'image/png'}), 'x.png');
await attempt('upload', `${studio}/api/uploads`, {method: 'POST', mode: 'no-cors', body: form});
await attempt('job', `${studio}/api/jobs`, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
  body: JSON.stringify({model: 'emoji', prompt: 'a fox face', n: 1})});
await attempt('cancel', `${studio}/api/jobs/${job}/cancel`, {method: 'POST', mode: 'no-cors'});
await attempt('cors-cancel', `${studio}/api/jobs/${job}/cancel`, {method: 'POST'});
const frame = document.querySelector('iframe');
const el = document.getElementById('form');
el.action = `${studio}/api/jobs/${job}/cancel`;
await new Promise((done) => { frame.onload = done; el.submit(); });
window.tries = tries;
</script>"""


def serve_studio(tmp_path, **kw):
    """A studio (worker stopped) on a free loopback port, its Host check on: (url, app, answers, stop); answers
    lists (method, path, status, headers) as the server saw them (a browser hides a foreign page's)."""
    from danqing.studio.server import create_app
    port = free_port()
    app = create_app(tmp_path / f"data-{port}", runs_dir=tmp_path / "runs", start_worker=False,
                     allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"], **kw)
    answers = []

    async def recorded(scope, receive, send):
        async def status(message):
            if message["type"] == "http.response.start":
                answers.append((scope["method"], scope["path"], message["status"],
                                {k.decode().lower(): v.decode() for k, v in scope["headers"]}))
            await send(message)
        await app(scope, receive, status if scope["type"] == "http" else send)

    return f"http://127.0.0.1:{port}", app, answers, serve(recorded, port)


@pytest.fixture
def foreign():
    """The foreign page's server: another port, so another origin."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):                                  # noqa: N802 - http.server's name
            body = FOREIGN_PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def tiny_png() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_foreign_page_is_refused_and_the_studios_own_page_works(tmp_path, foreign, browser):
    studio, app, seen, stop = serve_studio(tmp_path)
    store, runner = app.state.studio.store, app.state.studio.runner
    job_id, _ = runner.submit({"type": "txt2img", "model": "emoji", "prompt": "a fox face", "n": 1, "seed": 1})
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        query = f"studio={studio}&job={job_id}&png={base64.b64encode(tiny_png()).decode()}"
        page.goto(f"{foreign}/?{query.replace('+', '%2B')}")
        page.wait_for_function("() => window.tries !== undefined")
        tries = page.evaluate("window.tries")
        posts = [(m, path, status) for m, path, status, _ in seen if m == "POST"]
        assert len(posts) == 5 and all(status == 403 for _, _, status in posts), (posts, tries)
        assert [t[0] for t in tries] == ["upload", "job", "cancel", "cors-cancel"]
        assert store.job(job_id)["state"] == "queued" and len(store.jobs()) == 1
        assert not list(store.uploads_dir.iterdir())

        seen.clear()
        page.goto(studio)
        page.wait_for_selector("#model option[value='emoji']", state="attached")
        result = page.evaluate("""async ([job, png]) => {
            const {api} = await import('/static/api.js');
            const form = new FormData();
            const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
            form.append('file', new Blob([bytes], {type: 'image/png'}), 'x.png');
            const up = await api('/api/uploads', {method: 'POST', form});
            const cancel = await api(`/api/jobs/${job}/cancel`, {method: 'POST'});
            return [up.width, cancel.state];
        }""", [job_id, base64.b64encode(tiny_png()).decode()])
        assert result == [64, "cancelled"]
        assert store.job(job_id)["state"] == "cancelled" and len(list(store.uploads_dir.iterdir())) == 1
        posts = [headers for m, _, _, headers in seen if m == "POST"]
        assert posts and all(h.get("x-danqing-token") == app.state.page_token for h in posts)
    finally:
        context.close()
        stop()


def test_a_studio_with_a_token_asks_for_it_once_then_works(tmp_path, browser):
    studio, _, _, stop = serve_studio(tmp_path, token=TOKEN)
    context = browser.new_context()
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept(TOKEN)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("dialog", answer)
        page.goto(studio)
        page.wait_for_selector("#model option[value='emoji']", state="attached")
        assert len(asked) == 1 and "token" in asked[0]
        assert page.url == f"{studio}/"                        # the token left the address
        assert page.evaluate("document.cookie") == ""             # HttpOnly: no script reads it
        assert page.evaluate("fetch('/api/history').then((r) => r.status)") == 200
        other = browser.new_context()
        try:
            assert other.request.get(f"{studio}/api/history").status == 401
        finally:
            other.close()
    finally:
        context.close()
        stop()
