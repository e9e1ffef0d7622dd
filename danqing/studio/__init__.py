"""danqing studio: a local web studio and REST API for painting with danqing's models (docs/studio.md).

    from danqing.studio import create_app
    app = create_app("studio-data", runs_dir="runs")     # a FastAPI app; `danqing studio` serves one

    store.py    SQLite (jobs, images, uploads, ratings) and the PNG files beside it
    catalog.py  the models: bundled painters and run folders, described from their config.json
    schema.py   job requests: limits, and the checks against the chosen model
    jobs.py     the single worker thread, its bounded queue, progress, cancelling, the pipeline cache
    sheet.py    a grid job's labelled sheet
    pngparams.py  parameters read back from a PNG (danqing's chunk or A1111 text)
    server.py   the FastAPI app: the REST API, events, uploads, the page in static/
    guard.py    what every request passes first: the Host, the token, the page it comes from, its size

Needs the `studio` extra (fastapi, uvicorn, python-multipart).
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    """See ``danqing.studio.server.create_app``."""
    from .server import create_app as _create_app
    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
