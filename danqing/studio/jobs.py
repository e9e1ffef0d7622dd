"""The job runner: one worker thread paints the jobs of a bounded queue, one at a time, in order.

    runner = Runner(store, catalog, queue_size=32)
    job_id, position = runner.submit(request)        # QueueFull when the queue is full
    runner.cancel(job_id)                            # queued: dropped; running: stops at its next step

Each job goes through ``danqing.pipeline``: ``Pipeline.__call__`` (txt2img, img2img, inpaint, best_of),
``variations``, ``interpolate``, and a grid of single-picture calls composed into one sheet.  The sampler's
callback reports progress (with a small preview of the first picture) and is where cancelling and stopping
happen: it raises.  The two most recently used pipelines stay loaded.  A style job goes through
``danqing.style.transfer``: gatys reports each loss evaluation to its callback, which asks it to stop when the
job is cancelled (by returning True); adain is one step, with the decoder loaded once and kept.

State lives in the store, so a job queued or running when the server stops is queued again when it starts.
"""
from __future__ import annotations

import base64
import io
import math
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from .. import pipeline as pl
from ..images import save_with_params
from . import sheet
from .catalog import Catalog
from .store import Store, new_id

PREVIEW_SIZE = 96          # longest side of a progress preview
PREVIEW_EVERY = 0.25       # seconds between previews (the first and last step always get one)


class Cancelled(Exception):
    """Raised inside the sampler callback when the job was cancelled."""


class Stopping(Exception):
    """Raised inside the sampler callback when the server shuts down: the job stays queued for next time."""


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; try again in {retry_after} s")
        self.retry_after = retry_after


def data_url(img: Image.Image) -> str:
    """A small PNG data URL of a picture (shrunk to PREVIEW_SIZE when bigger)."""
    img = img.copy()
    img.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Runner:
    """The queue and its single worker thread."""

    def __init__(self, store: Store, catalog: Catalog, *, queue_size: int = 32, device: str = "cpu",
                 start: bool = True, cache_size: int = 2, bf16: str = "auto", decoder: str | Path | None = None):
        self.store, self.catalog, self.queue_size = store, catalog, queue_size
        self.device, self.cache_size, self.bf16 = device, cache_size, bf16
        self.decoder_path = decoder                                      # AdaIN: None = the bundled decoder
        self._decoder: tuple | None = None
        self._decoder_lock = threading.Lock()
        self.on_step: Callable[[str, int, int], None] | None = None     # a hook (tests hold a job running with it)
        self._cv = threading.Condition()
        self._queue: deque[str] = deque(store.unfinished())              # restart: what was left, in order
        self._cancel: set[str] = set()
        self._current: str | None = None
        self._paused = self._stop = False
        self._live: dict[str, dict[str, Any]] = {}                       # progress of the running job
        self._durations: deque[float] = deque(maxlen=10)
        self._pipes: OrderedDict[tuple, pl.Pipeline] = OrderedDict()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="studio-worker", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker: a running job stops at its next step and stays queued in the store."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def pause(self) -> None:
        """Take no new job off the queue (the running one finishes)."""
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing runs and nothing runnable is queued (paused counts as idle)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._current is None and (not self._queue or self._paused or
                                                                        self._stop), timeout)

    # ---------------------------------------------------------------- requests

    def submit(self, request: dict[str, Any]) -> tuple[str, int]:
        """Store and queue a checked request: (job id, its place in the queue, 1 = next)."""
        with self._cv:
            if len(self._queue) >= self.queue_size:
                raise QueueFull(self.retry_after())
            job_id = new_id()
            self.store.add_job(job_id, request)
            self._queue.append(job_id)
            self._cv.notify_all()
            return job_id, len(self._queue)

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely to free up: the recent mean job time."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, math.ceil(mean))

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job; its state afterwards ("running" while a running one stops), None when unknown."""
        with self._cv:
            if job_id in self._queue:
                self._queue.remove(job_id)
                self.store.set_state(job_id, "cancelled")
                self._cv.notify_all()
                return "cancelled"
            if job_id == self._current:
                self._cancel.add(job_id)
                return "running"
        job = self.store.job(job_id)
        return None if job is None else job["state"]

    def position(self, job_id: str) -> int | None:
        with self._cv:
            return self._queue.index(job_id) + 1 if job_id in self._queue else None

    def live(self, job_id: str) -> dict[str, Any] | None:
        """Progress of the running job: {step, steps, eta_s, preview}; None when it is not running."""
        return self._live.get(job_id)

    def pending(self) -> int:
        with self._cv:
            return len(self._queue) + (self._current is not None)

    def decoder(self) -> tuple:
        """The AdaIN decoder, loaded on first use and kept (``load_decoder``'s tuple); StyleError when none."""
        from ..style import load_decoder
        with self._decoder_lock:
            if self._decoder is None:
                self._decoder = load_decoder(self.decoder_path, self.device)
            return self._decoder

    # ---------------------------------------------------------------- the worker

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or (self._queue and not self._paused))
                if self._stop:
                    return
                job_id = self._current = self._queue.popleft()
            t0 = time.monotonic()
            try:
                self._run(job_id)
            finally:
                with self._cv:
                    self._durations.append(time.monotonic() - t0)
                    self._current = None
                    self._cancel.discard(job_id)
                    self._live.pop(job_id, None)
                    self._cv.notify_all()

    def _checkpoint(self, job_id: str) -> None:
        """Stop here when the job was cancelled or the server is stopping."""
        if job_id in self._cancel:
            raise Cancelled
        if self._stop:
            raise Stopping

    def _run(self, job_id: str) -> None:
        job = self.store.job(job_id)
        if job is None or job["state"] != "queued":
            return
        req = job["request"]
        try:
            images, plan = (self._style if req["type"] == "style" else self._painting)(job_id, req)
            saved = [self._save(img, req) for img in images]
        except Cancelled:
            self.store.set_state(job_id, "cancelled")
        except Stopping:
            self.store.set_state(job_id, "queued")
        except Exception as e:                                 # noqa: BLE001 - a job's failure never stops the worker
            user = isinstance(e, (pl.PipelineError, ValueError, OSError))
            if not user:
                traceback.print_exc()
            self.store.set_state(job_id, "failed", error=str(e) if user else f"{type(e).__name__}: {e}")
        else:
            self.store.finish(job_id, saved, sum(plan))

    def _started(self, job_id: str, plan: list[int]) -> None:
        self.store.set_state(job_id, "running", steps=sum(plan))
        self._live[job_id] = {"step": 0, "steps": sum(plan), "eta_s": None, "preview": None}

    def _painting(self, job_id: str, req: dict[str, Any]) -> tuple[list[Image.Image], list[int]]:
        entry = self.catalog.get(req["model"])
        if entry is None:
            raise pl.PipelineError(f"the model {req['model']!r} is no longer there (GET /api/models lists them)")
        plan = self._plan(req, entry)
        self._started(job_id, plan)
        pipe = self._pipeline(entry)
        self._checkpoint(job_id)
        return self._paint(job_id, req, pipe, _Progress(self, job_id, plan, pipe)), plan

    def _style(self, job_id: str, req: dict[str, Any]) -> tuple[list[Image.Image], list[int]]:
        """Style transfer from stored pictures (their file names, ids, go into the PNG's parameters)."""
        from ..style import transfer
        gatys = req["method"] == "gatys"
        plan = [req["steps"] if gatys else 1]
        self._started(job_id, plan)
        content = self._path(req["init_image"]) if req["init_image"] else self._path(req["content_image"], "image")
        styles = [self._path(u) for u in req["styles"]]
        decoder = None if gatys else self.decoder()
        self._checkpoint(job_id)
        progress = _Progress(self, job_id, plan)

        def callback(p) -> bool:                   # a gatys.Progress, after every loss evaluation
            plan[0] = p.steps
            try:
                progress.report(p.step, p.steps)
            except (Cancelled, Stopping):
                return True                        # transfer stops; the checkpoint below says why
            return False

        img = transfer(content, styles, method=req["method"], style_weights=req["style_weights"],
                       alpha=1.0 if gatys else req["alpha"], preserve_color=req["preserve_color"], size=req["size"],
                       steps=req["steps"], decoder=decoder, bf16=self.bf16, device=self.device,
                       callback=callback if gatys else None)
        self._checkpoint(job_id)
        return [img], plan

    def _plan(self, req: dict[str, Any], entry: dict[str, Any]) -> list[int]:
        """Expected sampler steps of each pipeline call of the job (1 for a one-pass GAN or VAE)."""
        steps = _options(req).get("steps") or entry["defaults"]["steps"] or 1
        if req["type"] == "project":
            return [req["steps"]]
        if req["type"] != "grid":
            return [steps]
        cells = []
        for yv in (req["y"]["values"] if req["y"] else [None]):
            for xv in req["x"]["values"]:
                over = {req["x"]["param"]: xv, **({req["y"]["param"]: yv} if req["y"] else {})}
                cells.append(int(over["steps"]) if "steps" in over and entry["samplers"] else steps)
        return cells

    def _pipeline(self, entry: dict[str, Any]) -> pl.Pipeline:
        """A loaded pipeline, from the cache of the last ``cache_size`` used (reloaded when the run moved on)."""
        from .. import checkpoint as ckpt
        folder = ckpt.resolve(entry["_folder"])
        key = (entry["name"], str(folder), (folder / ckpt.MODEL).stat().st_mtime_ns)
        if key in self._pipes:
            self._pipes.move_to_end(key)
            return self._pipes[key]
        for old in [k for k in self._pipes if k[0] == entry["name"]]:
            del self._pipes[old]
        pipe = pl.load(entry["_folder"], device=self.device)
        self._pipes[key] = pipe
        while len(self._pipes) > self.cache_size:
            self._pipes.popitem(last=False)
        return pipe

    def _path(self, ident: str, what: str = "upload") -> Path:
        """The file of an upload (or, ``what="image"``, of a history picture); PipelineError when it is gone."""
        path = self.store.upload_path(ident) if what == "upload" else self.store.image_path(ident)
        if path is None:
            again = "upload the picture again" if what == "upload" else "choose another picture"
            raise pl.PipelineError(f"the {what} {ident} is gone; {again}")
        return path

    def _upload(self, upload_id: str | None) -> Image.Image | None:
        if upload_id is None:
            return None
        with Image.open(self._path(upload_id)) as img:
            img.load()
            return img.copy()

    def _paint(self, job_id: str, req: dict[str, Any], pipe: pl.Pipeline, progress: _Progress) -> list[Image.Image]:
        kw: dict[str, Any] = {**_options(req), "size": req["size"], "bf16": self.bf16}
        init = self._upload(req["init_image"])
        if init is not None:
            kw.update(init_image=init)
            if req["mask"] is not None:
                kw["mask"] = self._upload(req["mask"])
        t, prompt, negative, seed = req["type"], req["prompt"], req["negative_prompt"], req["seed"]
        if t == "project":
            return [self._project(req, pipe, progress, init)]
        if req.get("latent"):
            kw["latent"] = self._latent(req["latent"])
        if t in ("txt2img", "img2img", "inpaint", "translate"):
            return pipe(prompt, negative, req["n"], seed=seed, best_of=req["best_of"], callback=progress, **kw)
        if t == "variations":
            return pipe.variations(prompt, negative, req["n"], seed=seed, variation_strength=req["variation_strength"],
                                   callback=progress, **kw)
        if t == "interpolation":
            return pipe.interpolate(prompt, negative, req["frames"], seed=seed, seed_b=req["seed_b"],
                                    callback=progress, **kw)
        return [self._grid(job_id, req, pipe, progress, kw)]

    def _project(self, req: dict[str, Any], pipe: pl.Pipeline, progress: _Progress, picture) -> Image.Image:
        """The model's picture of an upload; its latent travels in ``info`` to ``_save``."""
        from ..images import to_pil

        def report(i: int, steps: int, pictures, loss: float) -> None:
            progress.report(i + 1, steps, hook=(i, steps), preview=lambda: to_pil(pictures[:1])[0],
                            force=i == 0 or i + 1 == steps)
        latent, img = pipe.project(picture, req["prompt"], steps=req["steps"], space=req["space"], seed=req["seed"],
                                   callback=report)
        img.info["latent"] = (latent, {"family": pipe.spec.name, "model": req["model"], "space": req["space"],
                                       "steps": req["steps"], "prompt": req["prompt"], "seed": req["seed"]})
        return img

    def _latent(self, image_id: str) -> dict[str, Any]:
        from ..projection import ProjectionError, load_latent
        path = self.store.latent_path(image_id)
        if path is None:
            raise pl.PipelineError(f"the projection {image_id} is gone; project the picture again")
        try:
            return load_latent(path)[0]
        except ProjectionError as e:
            raise pl.PipelineError(str(e)) from None

    def _grid(self, job_id: str, req: dict[str, Any], pipe: pl.Pipeline, progress: _Progress,
              kw: dict[str, Any]) -> Image.Image:
        x, y = req["x"], req["y"]
        rows, cell_params = [], []
        for yv in (y["values"] if y else [None]):
            row = []
            for xv in x["values"]:
                self._checkpoint(job_id)
                over = {x["param"]: xv, **({y["param"]: yv} if y else {})}
                args = {"prompt": req["prompt"], "seed": req["seed"], **kw, **over}
                img = pipe(args.pop("prompt"), negative_prompt=req["negative_prompt"], n=1, callback=progress,
                           **args)[0]
                progress.next_call()
                row.append(img)
                cell_params.append(img.info["params"])
            rows.append(row)
        params, a1111 = sheet.sheet_params(cell_params, x, y)
        out = sheet.compose(rows, [sheet.label(x["param"], v) for v in x["values"]],
                            [sheet.label(y["param"], v) for v in y["values"]] if y else None)
        out.info["sheet"] = (params, a1111)
        return out

    def _save(self, img: Image.Image, req: dict[str, Any]) -> dict[str, Any]:
        image_id = new_id()
        path = self.store.images_dir / f"{image_id}.png"
        if "sheet" in img.info:
            params, a1111 = img.info["sheet"]
            sheet.save_sheet(img, path, params, a1111)
        else:
            if "latent" in img.info:                          # a projection: its latent first, then the picture
                from ..projection import save_latent
                save_latent(self.store.latents_dir / f"{image_id}.safetensors", *img.info["latent"])
            save_with_params(img, path)                       # a painting's Params or a StyleParams
            params = asdict(img.info["params"])
        # what the history searches: the prompt, or a style picture's description line (its A1111 text's first)
        prompt = img.info["params"].a1111().split("\n")[0] if req["type"] == "style" else params["prompt"]
        return {"id": image_id, "type": req["type"], "model": req["model"], "prompt": prompt,
                "params": params, "width": img.size[0], "height": img.size[1]}


class _Progress:
    """One job's progress, ETA and previews into the runner, and where cancelling and stopping happen (it raises).

    A painting job passes it to the pipeline as the sampler callback; a style job calls ``report``.
    """

    def __init__(self, runner: Runner, job_id: str, plan: list[int], pipe: pl.Pipeline | None = None):
        self.runner, self.job_id, self.plan, self.pipe = runner, job_id, plan, pipe
        self.call, self.done_before = 0, 0
        self.t0 = time.monotonic()
        self.last_preview = -1e9

    def next_call(self) -> None:
        self.done_before += self.plan[self.call]
        self.call = min(self.call + 1, len(self.plan) - 1)

    def __call__(self, i: int, steps: int, x, denoised) -> None:
        if len(self.plan) == 1:
            step, total = i + 1, steps
        else:
            total = sum(self.plan)
            step = min(total, round(self.done_before + (i + 1) / steps * self.plan[self.call]))
        self.report(step, total, hook=(i, steps), preview=lambda: self.pipe.preview(denoised[:1])[0],
                    force=i == 0 or i + 1 == steps)

    def report(self, step: int, total: int, *, hook: tuple[int, int] | None = None,
               preview: Callable[[], Image.Image] | None = None, force: bool = False) -> None:
        """``step`` of ``total`` done; ``hook``: (i, steps) for ``Runner.on_step``; ``preview`` makes a picture
        (at most every PREVIEW_EVERY seconds, unless ``force``)."""
        r = self.runner
        r._checkpoint(self.job_id)
        if r.on_step is not None:
            r.on_step(self.job_id, *(hook or (step - 1, total)))
            r._checkpoint(self.job_id)
        elapsed = time.monotonic() - self.t0
        eta = round(elapsed / step * (total - step), 1) if step else None
        live = dict(r._live.get(self.job_id) or {})
        now = time.monotonic()
        if preview is not None and (force or now - self.last_preview >= PREVIEW_EVERY):
            try:
                live["preview"] = data_url(preview())
                self.last_preview = now
            except Exception:                                  # noqa: BLE001, S110 - a preview never fails the job
                pass
        live.update(step=step, steps=total, eta_s=eta)
        r._live[self.job_id] = live


def _options(req: dict[str, Any]) -> dict[str, Any]:
    """The model options of a stored job (jobs queued before options were recorded name the A1111 ones)."""
    if req.get("options") is not None:
        return dict(req["options"])
    return pl.a1111_options(req["sampler"], req["steps"], req["guidance"], req["strength"],
                            req["init_image"] is not None)
