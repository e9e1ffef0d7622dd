"""What the browser tests share: Debian's chromium driven by playwright, and a uvicorn server on a free port."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SKIP = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no chromium at {CHROMIUM} (Debian package `chromium`; "
                          "`make install` installs it where it may)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app, port: int) -> Callable[[], None]:
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a thread until it is up; returns a function stopping it."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the studio server did not start"

    def stop() -> None:
        server.should_exit = True
        thread.join(15)
    return stop


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()
