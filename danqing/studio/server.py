"""The studio's web server: the REST API of docs/studio.md and the page in ``static/``.

    app = create_app("studio-data", runs_dir="runs")        # uvicorn danqing.studio.server:app ... or `danqing studio`

Requests are checked twice: by the pydantic models (limits of any model) and against the chosen model
(``schema.check``); both answer 422 with FastAPI's usual ``{"detail": [{"loc", "msg", "type"}]}``.
Ids in paths are matched against ids the server made, never used as paths.  Every request first passes
``guard.Guard`` (Host, token, origin, size); a 422 never quotes more than a little of what was sent.
"""
from __future__ import annotations

import asyncio
import io
import json
import math
import mimetypes
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, BeforeValidator

from ..pipeline import PipelineError
from ..version import __version__
from . import schema
from .catalog import Catalog
from .guard import MAX_BODY, MAX_JSON, Guard
from .jobs import QueueFull, Runner
from .pngparams import parameters_from_png, picture_error
from .sketch import SketchError, SketchPad
from .store import FINAL, Store, new_id

STATIC = Path(__file__).parent / "static"
# The page is ES modules, which browsers refuse unless served as JavaScript; some systems map .js to text/plain.
mimetypes.add_type("text/javascript", ".js")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 16 * 1024 * 1024
UPLOAD_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP"]
MULTIPART_SLACK = 64 * 1024                      # boundaries and part headers around the file
MAX_UPLOADS, MAX_UPLOAD_STORE = 256, 1024**3     # uploads kept; the oldest that no waiting job needs make room
MAX_ERRORS, SHOWN = 20, 100                      # a 422 lists this many errors, quoting this much of each input
SSE_TICK, SSE_PING = 0.2, 15.0


class Studio:
    """What the app holds: the store, the model catalog and the job runner."""

    def __init__(self, data_dir: str | Path, runs_dir: str | Path | None, queue_size: int, start_worker: bool,
                 device: str, decoder: str | Path | None):
        self.store = Store(data_dir)
        self.catalog = Catalog(runs_dir)
        self.runner = Runner(self.store, self.catalog, queue_size=queue_size, device=device, start=start_worker,
                             decoder=decoder)

    def close(self) -> None:
        self.runner.close()
        self.store.close()


class Rating(BaseModel):
    rating: Annotated[Literal[-1, 0, 1], BeforeValidator(schema.json_number)]


def invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def create_app(data_dir: str | Path, runs_dir: str | Path | None = "runs", queue_size: int = 32, *,
               start_worker: bool = True, device: str = "cpu", static_dir: str | Path = STATIC,
               allowed_hosts: list[str] | None = None, decoder: str | Path | None = None, token: str | None = None,
               max_body: int = MAX_BODY, max_json: int = MAX_JSON,
               upload_quota: tuple[int, int] = (MAX_UPLOADS, MAX_UPLOAD_STORE)) -> FastAPI:
    """The studio app.  ``start_worker=False`` leaves the worker stopped (``app.state.studio.runner.start()``);
    ``allowed_hosts`` (``host:port`` or ``host``) refuses other Host headers (against DNS rebinding when serving on
    loopback); ``token``: every API request must carry it; ``max_body``/``max_json``: the largest multipart and
    other bodies; ``upload_quota``: (uploads, bytes) kept; ``decoder``: the AdaIN decoder of style jobs (a run or
    checkpoint folder; None: the bundled one)."""
    studio = Studio(data_dir, runs_dir, queue_size, start_worker, device, decoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(studio.close)

    app = FastAPI(title="danqing studio", version=__version__, lifespan=lifespan,
                  description="Paint with danqing's models: jobs, history, ratings, uploads (docs/studio.md).")
    app.state.studio = studio
    # proves a request came from the studio's own page (it is written into the page; see guard.py)
    app.state.page_token = page_token = secrets.token_urlsafe(24)

    # the outermost layer: a refused request reaches nothing else (it also marks every answer nosniff)
    app.add_middleware(Guard, page_token=page_token, token=token, allowed_hosts=allowed_hosts, max_body=max_body,
                       max_json=max_json)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": brief_errors(exc.errors())}, status_code=422)

    store, runner, catalog = studio.store, studio.runner, studio.catalog
    pad = SketchPad(device)

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def job_view(job: dict[str, Any]) -> dict[str, Any]:
        live = runner.live(job["id"]) if job["state"] == "running" else None
        if live:
            job["progress"] = {"step": live["step"], "steps": live["steps"], "eta_s": live["eta_s"]}
        job["position"] = runner.position(job["id"]) if job["state"] == "queued" else None
        return job

    # ---------------------------------------------------------------- models and jobs

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        unavailable = {}
        try:
            runner.decoder()
        except (ValueError, OSError) as e:          # no AdaIN decoder: the message says how to get one
            unavailable["adain"] = str(e)
        return {"models": catalog.models(), "style": {
            "methods": [m for m in ("adain", "gatys") if m not in unavailable], "unavailable": unavailable}}

    def projected_by(image_id: str) -> str | None:
        """The model a history picture was projected with; None when it is not a projection."""
        image = store.image(image_id)
        return None if image is None or store.latent_path(image_id) is None else image["model"]

    @app.post("/api/jobs", status_code=202)
    def create_job(req: schema.JobRequest) -> dict[str, Any]:
        try:
            if req.type == "style":
                checked = schema.check_style(req, store.upload, store.image, runner.decoder)
            else:
                checked = schema.check(req, catalog.get(req.model) if req.model else None,
                                       lambda u: store.upload_path(u) is not None, projected_by)
        except schema.Invalid as e:
            raise invalid(e.field, e.message) from None
        try:
            job_id, position = runner.submit(checked)
        except QueueFull as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        return {"id": job_id, "state": "queued", "position": position}

    @app.get("/api/jobs")
    def list_jobs(state: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
                  limit: int = Query(50, ge=1, le=200)) -> dict[str, Any]:
        jobs = store.jobs((state,) if state else ("queued", "running", "done", "failed", "cancelled"), limit)
        return {"jobs": [job_view(j) for j in jobs]}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return job_view(job_or_404(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        before = job_or_404(job_id)["state"]
        if before in FINAL:
            raise HTTPException(409, f"the job is already {before}")
        state = runner.cancel(job_id)
        return {"id": job_id, "state": state, "cancelling": state == "running"}

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        await run_in_threadpool(job_or_404, job_id)
        return StreamingResponse(_events(job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(job_id: str, request: Request):
        def sse(event: str, data: dict[str, Any]) -> str:
            return f"event: {event}\ndata: {json.dumps(data)}\n\n"

        sent, position, quiet = None, None, 0.0
        while True:
            live = runner.live(job_id)
            if live is not None:
                now = (live["step"], live["steps"], live["preview"] is not None)
                if now != sent:
                    sent, quiet = now, 0.0
                    yield sse("progress", {k: live[k] for k in ("step", "steps", "eta_s", "preview")})
            else:
                job = await run_in_threadpool(store.job, job_id)
                if job is None:
                    return
                if job["state"] in FINAL:
                    yield sse(job["state"], {"done": {"images": job["images"]}, "failed": {"error": job["error"]},
                                             "cancelled": {}}[job["state"]])
                    return
                if job["state"] == "queued" and runner.position(job_id) != position:
                    position, quiet = runner.position(job_id), 0.0
                    yield sse("queued", {"position": position})
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_TICK)
            quiet += SSE_TICK
            if quiet >= SSE_PING:
                quiet = 0.0
                yield ": ping\n\n"

    # ---------------------------------------------------------------- images and history

    @app.get("/api/images/{image_id}", response_class=FileResponse)
    def get_image(image_id: str) -> FileResponse:
        path = store.image_path(image_id)
        if path is None:
            raise HTTPException(404, f"no image {image_id}")
        return FileResponse(path, media_type="image/png",
                            headers={"Cache-Control": "public, max-age=31536000, immutable"})

    @app.get("/api/images/{image_id}/params")
    def image_params(image_id: str) -> dict[str, Any]:
        image = store.image(image_id)
        if image is None:
            raise HTTPException(404, f"no image {image_id}")
        return image["params"]

    @app.post("/api/images/{image_id}/rating")
    def rate_image(image_id: str, body: Rating) -> dict[str, Any]:
        if not store.rate(image_id, body.rating):
            raise HTTPException(404, f"no image {image_id}")
        return {"id": image_id, "rating": body.rating}

    @app.get("/api/history")
    def history(q: str = Query("", max_length=500), model: str | None = Query(None, max_length=300),
                rating: int | None = Query(None, ge=-1, le=1), limit: int = Query(50, ge=1, le=200),
                offset: int = Query(0, ge=0)) -> dict[str, Any]:
        items, total = store.history(q, model, rating, limit, offset)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    # ---------------------------------------------------------------- files in

    upload_doc = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}

    @app.post("/api/uploads", status_code=201, openapi_extra=upload_doc)
    async def upload(request: Request) -> dict[str, Any]:
        data = await _read_file(request)
        upload_id = new_id()
        w, h = await run_in_threadpool(_store_upload, store, upload_id, data, upload_quota)
        return {"id": upload_id, "width": w, "height": h}

    @app.post("/api/sketch", openapi_extra=upload_doc, response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def sketch(request: Request, model: str = Query(..., min_length=1, max_length=300),
                     seed: int = Query(0, ge=0, le=schema.MAX_SEED),
                     options: str = Query("{}", max_length=2000, description='the model\'s options as a JSON '
                                          'object, e.g. {"reverse": true} (GET /api/models lists them)')) -> Response:
        """The sketch pad: the posted drawing translated at once by ``model`` (a PNG; not queued, not kept)."""
        entry = catalog.get(model)
        if entry is None:
            raise invalid("model", f"no model named {model!r}; GET /api/models lists them")
        chosen = _sketch_options(options, entry)
        picture = await run_in_threadpool(_decode, await _read_file(request))
        try:
            png = await run_in_threadpool(pad.translate, entry, picture, seed, **chosen)
        except (SketchError, PipelineError) as e:
            raise invalid("file", str(e)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/params", openapi_extra=upload_doc)
    async def params(request: Request) -> dict[str, Any]:
        data = await _read_file(request)
        try:
            return await run_in_threadpool(parameters_from_png, data)
        except PipelineError as e:
            raise invalid("file", str(e)) from None

    # ---------------------------------------------------------------- the page

    static = Path(static_dir)

    @app.get("/", include_in_schema=False)
    def index():
        page = static / "index.html"
        if not page.is_file():
            return JSONResponse({"detail": "the studio page is not installed (static/index.html is missing); "
                                           "the API is documented at /docs"}, status_code=404)
        # the page token in a meta tag: api.js sends it with every request (the page is never cached)
        html = page.read_text(encoding="utf-8").replace(
            "<head>", f'<head>\n<meta name="danqing-token" content="{page_token}">', 1)
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "same-origin"})

    if static.is_dir():
        app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def brief_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's errors, with what they quote of the request cut short (a 5 MB prompt is not sent back) and made
    JSON (NaN and Infinity, which JSON has not, become text); at most MAX_ERRORS of them."""
    def short(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        try:
            text = json.dumps(v, allow_nan=False, default=str)
        except (TypeError, ValueError):
            text = None
        if text is not None and len(text) <= SHOWN:
            return v
        text = text if text is not None else repr(v)
        return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text):,} characters)"

    out = []
    for e in errors[:MAX_ERRORS]:
        e = {k: v for k, v in e.items() if k != "url"}
        e["loc"] = [x if not isinstance(x, str) or len(x) <= SHOWN else short(x) for x in e.get("loc", ())]
        e["msg"] = str(e.get("msg", ""))[:1000]
        if "input" in e:
            e["input"] = short(e["input"])
        if "ctx" in e:
            e["ctx"] = {k: short(v) if isinstance(v, (int, float, str, list, dict)) else str(v)[:SHOWN]
                        for k, v in e["ctx"].items()}
        out.append(e)
    if len(errors) > MAX_ERRORS:
        out.append({"loc": ["body"], "msg": f"and {len(errors) - MAX_ERRORS} more errors", "type": "too_many_errors"})
    return jsonable_encoder(out)


async def _read_file(request: Request) -> bytes:
    """The ``file`` part of a multipart body, read into memory with a size cap (never spooled to disk)."""
    from python_multipart import create_form_parser

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise invalid("file", "send the picture as multipart/form-data in a field named `file`")
    cap = MAX_UPLOAD_BYTES + MULTIPART_SLACK
    too_big = HTTPException(413, f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_big
    files: dict[bytes, Any] = {}
    try:
        parser = create_form_parser({"Content-Type": ctype.encode("latin-1")}, None,
                                    lambda f: files.setdefault(f.field_name, f),
                                    config={"MAX_MEMORY_FILE_SIZE": cap + 1, "MAX_BODY_SIZE": cap + 1})
        parser.write(bytes(body))
        parser.finalize()
    except Exception as e:                                   # noqa: BLE001 - any parse failure is the client's
        raise invalid("file", f"the multipart body cannot be read ({e})") from None
    f = files.get(b"file")
    if f is None:
        raise invalid("file", "no field named `file` in the multipart body")
    f.file_object.seek(0)
    data = f.file_object.read()
    if len(data) > MAX_UPLOAD_BYTES:
        raise too_big
    if not data:
        raise invalid("file", "the file is empty")
    return data


def _sketch_options(text: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` query of /api/sketch (a JSON object), checked as a translate job's options would be."""
    from pydantic import ValidationError

    def not_finite(word: str) -> None:
        raise ValueError(f"options must be finite JSON numbers, not {word}")
    try:
        given = json.loads(text, parse_constant=not_finite)
        # a translate job's request around them (its init_image a stand-in: the drawing comes in the body)
        req = schema.JobRequest(type="translate", model=entry["name"], init_image="0" * 32, options=given)
        return schema._options(req, entry)
    except ValidationError as e:
        raise invalid("options", "; ".join(f"{'.'.join(map(str, err['loc'][1:])) or 'options'}: {err['msg']}"
                                           for err in e.errors()[:3])) from None
    except schema.Invalid as e:
        raise invalid("options", e.message) from None
    except json.JSONDecodeError:
        raise invalid("options", f'options must be a JSON object, e.g. {{"reverse": true}}; got '
                                 f"{text[:SHOWN]!r}") from None
    except ValueError as e:
        raise invalid("options", str(e)) from None


def _store_upload(store: Store, upload_id: str, data: bytes, quota: tuple[int, int]) -> tuple[int, int]:
    """Decode an uploaded picture, re-encode it as PNG, and keep it if the quota (uploads, bytes) has room once
    the oldest uploads no waiting job needs are dropped."""
    img = _decode(data)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    png = buf.getvalue()
    if not store.make_room(*quota, len(png)):
        raise HTTPException(429, f"the studio keeps at most {quota[0]} uploads ({quota[1] / 1024**2:g} MB), and the "
                                 "ones it has are all needed by jobs still waiting; retry when they have run",
                            headers={"Retry-After": "30"})
    store.add_upload(upload_id, png, img.size[0], img.size[1], img.mode)
    return img.size


def _decode(data: bytes) -> Image.Image:
    """An uploaded picture, decoded safely (its size checked before any pixel is decoded), in L, LA, RGB or RGBA."""
    from PIL import ImageOps, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as img:
            w, h = img.size
            if w * h > MAX_UPLOAD_PIXELS:
                raise HTTPException(413, f"the picture is {w}x{h} = {w * h:,} pixels; at most "
                                         f"{MAX_UPLOAD_PIXELS:,} ({MAX_UPLOAD_PIXELS // 1024 // 1024} MP)")
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("1", "I", "I;16", "F"):
                from ..data.transforms import to_8bit
                img = to_8bit(img, 1)
            elif img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode not in ("L", "LA", "RGB", "RGBA"):
                img = img.convert("RGB")
    except Image.DecompressionBombError:
        raise HTTPException(413, f"the picture has too many pixels; at most {MAX_UPLOAD_PIXELS:,}") from None
    except UnidentifiedImageError:
        raise invalid("file", f"not a picture the studio reads ({', '.join(UPLOAD_FORMATS)}): the file's "
                              "content is none of them, whatever its name says") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise invalid("file", f"not a picture the studio reads ({', '.join(UPLOAD_FORMATS)}): "
                              f"{picture_error(e)}") from None
    return img
