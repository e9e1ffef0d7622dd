"""The studio's memory: one SQLite file (jobs, images, uploads, ratings) and PNG files beside it.

    data_dir/studio.sqlite      WAL journal, schema created on open
    data_dir/images/<id>.png    painted pictures (PNG with their parameters)
    data_dir/uploads/<id>.png   init images, masks and style pictures, re-encoded

Ids are ``uuid4().hex``, made here; a file name never comes from a client.  One connection is shared by all
threads behind a lock: every statement is short, and SQLite serialises writers anyway.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

ID = re.compile(r"^[0-9a-f]{32}$")        # what new_id() makes: anything else names nothing
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,     -- creation order: the order jobs run in
    id       TEXT UNIQUE NOT NULL,
    type     TEXT NOT NULL,
    model    TEXT NOT NULL,
    state    TEXT NOT NULL,
    request  TEXT NOT NULL,                         -- JSON, the seed already drawn
    images   TEXT NOT NULL DEFAULT '[]',            -- JSON list of image ids
    error    TEXT,
    step     INTEGER NOT NULL DEFAULT 0,
    steps    INTEGER NOT NULL DEFAULT 0,
    created  REAL NOT NULL,
    started  REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS images (
    id      TEXT PRIMARY KEY,
    job_id  TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    model   TEXT NOT NULL,
    prompt  TEXT NOT NULL,
    params  TEXT NOT NULL,                          -- JSON: what the PNG's `danqing` chunk holds
    width   INTEGER NOT NULL,
    height  INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_created ON images(created DESC, idx);
CREATE TABLE IF NOT EXISTS uploads (
    id      TEXT PRIMARY KEY,
    width   INTEGER NOT NULL,
    height  INTEGER NOT NULL,
    mode    TEXT NOT NULL,
    bytes   INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    image_id TEXT PRIMARY KEY,
    rating   INTEGER NOT NULL,
    updated  REAL NOT NULL
);
"""


def new_id() -> str:
    return uuid.uuid4().hex


class Store:
    """Jobs, images, uploads and ratings in ``data_dir``."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir).resolve()
        self.images_dir, self.uploads_dir = self.root / "images", self.root / "uploads"
        self.latents_dir = self.root / "latents"              # the projected latent of a projection's picture
        for d in (self.root, self.images_dir, self.uploads_dir, self.latents_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "studio.sqlite", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _write(self, *statements: tuple[str, tuple]) -> None:
        """Run statements in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ---------------------------------------------------------------- jobs

    def add_job(self, job_id: str, request: dict[str, Any]) -> None:
        self._write(("INSERT INTO jobs (id, type, model, state, request, created) VALUES (?, ?, ?, 'queued', ?, ?)",
                     (job_id, request["type"], request["model"], json.dumps(request), time.time())))

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,)) if ID.match(job_id) else None
        return None if row is None else _job(row)

    def jobs(self, states: tuple[str, ...] = STATES, limit: int = 50) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(states))
        rows = self._all(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?", (*states, limit))
        return [_job(r) for r in rows]

    def unfinished(self) -> list[str]:
        """Ids of jobs queued or running (when the server stopped), in creation order; all marked queued."""
        rows = self._all("SELECT id FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq")
        self._write(("UPDATE jobs SET state = 'queued', started = NULL, step = 0 WHERE state = 'running'", ()))
        return [r["id"] for r in rows]

    def set_state(self, job_id: str, state: str, *, error: str | None = None, steps: int | None = None) -> None:
        now = time.time()
        if state == "running":
            self._write(("UPDATE jobs SET state = ?, started = ?, step = 0, steps = COALESCE(?, steps) WHERE id = ?",
                         (state, now, steps, job_id)))
        elif state == "queued":
            self._write(("UPDATE jobs SET state = 'queued', started = NULL, step = 0 WHERE id = ?", (job_id,)))
        else:
            self._write(("UPDATE jobs SET state = ?, error = ?, finished = ? WHERE id = ?",
                         (state, error, now, job_id)))

    def finish(self, job_id: str, images: list[dict[str, Any]], steps: int) -> None:
        """Record a job's pictures (already written to disk) and mark it done, in one transaction."""
        now = time.time()
        statements = [(("INSERT INTO images (id, job_id, idx, type, model, prompt, params, width, height, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                       (im["id"], job_id, k, im["type"], im["model"], im["prompt"], json.dumps(im["params"]),
                        im["width"], im["height"], now)) for k, im in enumerate(images)]
        statements.append((("UPDATE jobs SET state = 'done', images = ?, step = ?, steps = ?, finished = ? "
                            "WHERE id = ?"), (json.dumps([im["id"] for im in images]), steps, steps, now, job_id)))
        self._write(*statements)

    # ---------------------------------------------------------------- images

    def image(self, image_id: str) -> dict[str, Any] | None:
        if not ID.match(image_id):
            return None
        row = self._one("SELECT i.*, COALESCE(r.rating, 0) AS rating FROM images i "
                        "LEFT JOIN ratings r ON r.image_id = i.id WHERE i.id = ?", (image_id,))
        return None if row is None else _image(row)

    def image_path(self, image_id: str) -> Path | None:
        """The PNG of a known image; None for anything else (so no client string ever becomes a path)."""
        if self.image(image_id) is None:
            return None
        path = self.images_dir / f"{image_id}.png"
        return path if path.is_file() else None

    def latent_path(self, image_id: str) -> Path | None:
        """The latent file of a known image that is a projection; None for anything else."""
        if self.image(image_id) is None:
            return None
        path = self.latents_dir / f"{image_id}.safetensors"
        return path if path.is_file() else None

    def rate(self, image_id: str, rating: int) -> bool:
        if self.image(image_id) is None:
            return False
        self._write((("INSERT INTO ratings (image_id, rating, updated) VALUES (?, ?, ?) ON CONFLICT(image_id) "
                      "DO UPDATE SET rating = excluded.rating, updated = excluded.updated"),
                     (image_id, rating, time.time())))
        return True

    def history(self, q: str = "", model: str | None = None, rating: int | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Images newest first: every word of ``q`` somewhere in the prompt, the model, the rating."""
        where, args = [], []
        for word in q.split():
            where.append("i.prompt LIKE ? ESCAPE '\\'")
            args.append("%" + re.sub(r"([\\%_])", r"\\\1", word) + "%")
        if model:
            where.append("i.model = ?")
            args.append(model)
        if rating is not None:
            where.append("COALESCE(r.rating, 0) = ?")
            args.append(rating)
        sql = " FROM images i LEFT JOIN ratings r ON r.image_id = i.id" + \
              (" WHERE " + " AND ".join(where) if where else "")
        total = self._one("SELECT COUNT(*) AS n" + sql, tuple(args))["n"]
        rows = self._all("SELECT i.*, COALESCE(r.rating, 0) AS rating" + sql +
                         " ORDER BY i.created DESC, i.job_id, i.idx LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_image(r) for r in rows], total

    # ---------------------------------------------------------------- uploads

    def add_upload(self, upload_id: str, png: bytes, width: int, height: int, mode: str) -> None:
        atomic_write(self.uploads_dir / f"{upload_id}.png", png)
        self._write(("INSERT INTO uploads (id, width, height, mode, bytes, created) VALUES (?, ?, ?, ?, ?, ?)",
                     (upload_id, width, height, mode, len(png), time.time())))

    def make_room(self, max_count: int, max_bytes: int, adding: int) -> bool:
        """Drop the oldest uploads that no queued or running job names until one more of ``adding`` bytes fits in
        ``max_count`` uploads and ``max_bytes``; False when it cannot fit (what is left is needed)."""
        needed = set()
        for row in self._all("SELECT request FROM jobs WHERE state IN ('queued', 'running')"):
            req = json.loads(row["request"])
            needed.update(u for u in (req.get("init_image"), req.get("mask"), *(req.get("styles") or ())) if u)
        rows = self._all("SELECT id, bytes FROM uploads ORDER BY created, rowid")
        count, total = len(rows) + 1, sum(r["bytes"] for r in rows) + adding
        dropped = []
        for row in rows:
            if count <= max_count and total <= max_bytes:
                break
            if row["id"] not in needed:
                dropped.append(row["id"])
                count, total = count - 1, total - row["bytes"]
        for upload_id in dropped:
            self._write(("DELETE FROM uploads WHERE id = ?", (upload_id,)))
            (self.uploads_dir / f"{upload_id}.png").unlink(missing_ok=True)
        return count <= max_count and total <= max_bytes

    def upload(self, upload_id: str) -> dict[str, Any] | None:
        """An upload's ``{id, width, height, mode, bytes, created}``; None for anything else."""
        row = self._one("SELECT * FROM uploads WHERE id = ?", (upload_id,)) if ID.match(upload_id) else None
        return None if row is None else dict(row)

    def upload_path(self, upload_id: str) -> Path | None:
        if self.upload(upload_id) is None:
            return None
        path = self.uploads_dir / f"{upload_id}.png"
        return path if path.is_file() else None


def _job(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "type": row["type"], "model": row["model"], "state": row["state"],
            "progress": {"step": row["step"], "steps": row["steps"]}, "images": json.loads(row["images"]),
            "error": row["error"], "request": json.loads(row["request"]), "created": row["created"],
            "started": row["started"], "finished": row["finished"]}


def _image(row: sqlite3.Row) -> dict[str, Any]:
    params = json.loads(row["params"])
    return {"id": row["id"], "job": row["job_id"], "index": row["idx"], "type": row["type"], "model": row["model"],
            "prompt": row["prompt"], "negative_prompt": params.get("negative_prompt", ""), "seed": params.get("seed"),
            "width": row["width"], "height": row["height"], "rating": row["rating"], "created": row["created"],
            "url": f"/api/images/{row['id']}", "params": params}
