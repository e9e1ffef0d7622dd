"""The studio under load: many clients submitting jobs and polling at once.

Starts `danqing studio` (loopback only, queue 32) in a subprocess with a tiny class-conditional diffusion model
trained for a few steps into a temporary folder (or --run RUN), then runs --clients threads for --seconds: each
submits a txt2img job, polls it, reads the model list, the job list and the history, and submits again (backing
off briefly on 429).  Afterwards it waits for the queue to drain (cancelling what is left after --drain seconds).

    python bench/studio_load.py [--seconds 60] [--clients 50] [--steps 8] [--run RUN] [--json out.json]

Reports, with targets: server errors (5xx or broken connections) = 0; lost jobs (accepted but not ending done
or cancelled) = 0; 429 refusals (expected: the queue is bounded); p50/p95 latency of GET /api/models,
GET /api/jobs/{id} and GET /api/history under that load.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HOST = "127.0.0.1"
READ_ENDPOINTS = ("GET /api/models", "GET /api/jobs/{id}", "GET /api/history", "GET /api/jobs")


class Client:
    """One keep-alive HTTP connection to the studio, reconnecting after errors; records every request."""

    def __init__(self, port: int, stats: Stats):
        self.port, self.stats = port, stats
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, label: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):                         # one retry: the server may close an idle keep-alive
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt == 0 and isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError,
                                                   BrokenPipeError)):
                    continue
                self.stats.record(label, None, time.perf_counter() - t0)
                return None, {}, None
            self.stats.record(label, resp.status, time.perf_counter() - t0)
            try:
                return resp.status, dict(resp.getheaders()), json.loads(payload) if payload else None
            except ValueError:
                return resp.status, dict(resp.getheaders()), None
        return None, {}, None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.accepted: list[str] = []

    def record(self, label: str, status: int | None, seconds: float) -> None:
        with self.lock:
            self.status[label][status if status is not None else "conn-error"] += 1
            if status is not None and status < 500:
                self.latency[label].append(seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def train_tiny(root: Path) -> Path:
    exe = Path(sys.executable).with_name("danqing")
    out = root / "runs" / "tiny-digits"
    subprocess.run([str(exe), "train", "diffusion", "--data", "digits", "--preset", "tiny", "--steps", "3",
                    "--batch-size", "8", "-q", "--bf16", "off", "--train.sample_n=2", "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def client_loop(port: int, stats: Stats, deadline: float, model: str, steps: int, classes: list[str]) -> None:
    c = Client(port, stats)
    rng = random.Random()
    while time.monotonic() < deadline:
        body = {"type": "txt2img", "model": model, "prompt": rng.choice(classes) if classes else "", "n": 1,
                "steps": steps, "seed": rng.randrange(2**31)}
        status, _, data = c.request("POST", "/api/jobs", "POST /api/jobs", body)
        job = None
        if status == 202:
            job = data["id"]
            with stats.lock:
                stats.accepted.append(job)
        elif status == 429:
            time.sleep(rng.uniform(0.2, 0.6))            # shorter than Retry-After: keep the pressure on
        for _ in range(3):
            if time.monotonic() >= deadline:
                break
            if job:
                c.request("GET", f"/api/jobs/{job}", "GET /api/jobs/{id}")
            c.request("GET", "/api/models", "GET /api/models")
            c.request("GET", f"/api/history?limit=20&offset={rng.randrange(3) * 20}", "GET /api/history")
            c.request("GET", "/api/jobs?limit=20", "GET /api/jobs")
            time.sleep(rng.uniform(0.05, 0.2))


def drain(port: int, stats: Stats, jobs: list[str], timeout: float) -> dict[str, str]:
    """Wait for every accepted job to end; cancel whatever is still open after ``timeout`` seconds."""
    c = Client(port, Stats())
    states: dict[str, str] = {}
    end, cancelled = time.monotonic() + timeout, False
    while True:
        open_jobs = [j for j in jobs if states.get(j) not in ("done", "failed", "cancelled")]
        for j in open_jobs:
            status, _, data = c.request("GET", f"/api/jobs/{j}", "drain")
            states[j] = data["state"] if status == 200 else f"http-{status}"
        open_jobs = [j for j in jobs if states.get(j) not in ("done", "failed", "cancelled")]
        if not open_jobs:
            return states
        if time.monotonic() > end and not cancelled:
            for j in open_jobs:
                c.request("POST", f"/api/jobs/{j}/cancel", "cancel")
            cancelled, end = True, time.monotonic() + 60
        elif time.monotonic() > end:
            return states
        time.sleep(0.5)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000 if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--queue", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="sampler steps of each job")
    ap.add_argument("--drain", type=float, default=180, help="seconds to wait for the queue before cancelling")
    ap.add_argument("--run", help="paint with this run folder instead of a freshly trained tiny model")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = Path(a.run).resolve() if a.run else train_tiny(root)
        port = free_port()
        exe = Path(sys.executable).with_name("danqing")
        server = subprocess.Popen([str(exe), "studio", "--host", HOST, "--port", str(port), "--data-dir",
                                   str(root / "data"), "--runs", str(run.parent), "--queue", str(a.queue)],
                                  env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        try:
            c = Client(port, Stats())
            for _ in range(600):
                status, _, data = c.request("GET", "/api/models", "startup")
                if status == 200:
                    break
                if server.poll() is not None:
                    raise SystemExit("the studio did not start")
                time.sleep(0.1)
            model = next(m for m in data["models"] if m["name"] == run.name)
            stats = Stats()
            deadline = time.monotonic() + a.seconds
            threads = [threading.Thread(target=client_loop, daemon=True,
                                        args=(port, stats, deadline, run.name, a.steps, model["class_names"]))
                       for _ in range(a.clients)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            load_s = time.monotonic() - t0
            t1 = time.monotonic()
            states = drain(port, stats, stats.accepted, a.drain)
            drain_s = time.monotonic() - t1
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    ends = Counter(states.values())
    errors = sum(n for label, cnt in stats.status.items() for code, n in cnt.items()
                 if code == "conn-error" or (isinstance(code, int) and code >= 500))
    lost = sum(n for s, n in ends.items() if s not in ("done", "cancelled"))
    refused = stats.status["POST /api/jobs"][429]
    result = {"clients": a.clients, "seconds": round(load_s, 1), "queue": a.queue, "steps": a.steps,
              "requests": sum(sum(c.values()) for c in stats.status.values()), "server_errors": errors,
              "accepted": len(stats.accepted), "refused_429": refused, "lost": lost, "ends": dict(ends),
              "drain_s": round(drain_s, 1),
              "latency_ms": {k: {"n": len(stats.latency[k]), "p50": round(pct(stats.latency[k], 0.5), 1),
                                 "p95": round(pct(stats.latency[k], 0.95), 1)} for k in READ_ENDPOINTS},
              "status": {k: {str(code): n for code, n in v.items()} for k, v in stats.status.items()}}
    print(f"{a.clients} clients for {load_s:.0f} s, queue {a.queue}, {a.steps}-step jobs on {run.name}: "
          f"{result['requests']} requests")
    print(f"server errors (5xx, broken connections): {errors}   (target 0)")
    print(f"jobs: {len(stats.accepted)} accepted, {refused} refused with 429; after the load: "
          f"{', '.join(f'{n} {s}' for s, n in sorted(ends.items()))} (drained in {drain_s:.1f} s)")
    print(f"lost jobs (accepted, not done or cancelled): {lost}   (target 0)")
    for k in READ_ENDPOINTS:
        lat = result["latency_ms"][k]
        print(f"{k:22s} p50 {lat['p50']:7.1f} ms   p95 {lat['p95']:7.1f} ms   ({lat['n']} requests)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    if errors or lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
