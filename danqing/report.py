"""The output of ``danqing eval``: the printed table and the report folder (JSON, self-contained HTML, PNG plots)."""
from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .evaluate import COLUMNS, Report, evaluate
from .fileio import atomic_write
from .metrics import MetricsError

__all__ = ["require_matplotlib", "run", "write_report"]


def require_matplotlib():
    """matplotlib's Figure and Agg canvas (imported only for reports), or a MetricsError saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MetricsError("a report's plots need matplotlib: pip install 'danqing[eval]'") from None
    return Figure, FigureCanvasAgg


def _histogram(values: np.ndarray, xlabel: str, title: str, threshold: float | None = None):
    """A matplotlib Figure: the histogram of ``values``, with a dashed line at ``threshold``."""
    Figure, Canvas = require_matplotlib()
    fig = Figure(figsize=(6, 3.5), dpi=100)
    Canvas(fig)
    ax = fig.add_subplot()
    ax.hist(values, bins=int(np.clip(len(values) // 5, 5, 50)), color="#4c72b0")
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"copy threshold {threshold:.4g}")
        ax.legend()
    ax.set(xlabel=xlabel, ylabel="pictures", title=title)
    fig.tight_layout()
    return fig


def write_report(report: Report, out: str | Path) -> list[Path]:
    """report.json, a self-contained report.html (plots embedded) and the plots as PNGs in ``out``."""
    require_matplotlib()
    out, plots, e, data = Path(out), {}, html.escape, report.plots
    if "scores" in data:
        fig = _histogram(data["scores"], "cosine of picture and prompt", "prompt consistency")
        plots["prompt-consistency.png"] = ("prompt-consistency scores", fig.savefig)
    if "distances" in data:
        fig = _histogram(data["distances"], "Inception distance to the nearest training picture", "memorisation",
                         data["threshold"])
        plots["memorisation-distances.png"] = ("distance to the nearest training picture", fig.savefig)
        plots["memorisation-pairs.png"] = ("the closest samples, each beside its nearest training picture",
                                           data["pairs"].save)
    paths = [atomic_write(out / name, lambda f, save=save: save(f, format="png")) for name, (_, save) in plots.items()]
    doc = {"generated": report.generated, "reference": report.reference, **report.info,
           "rows": [asdict(r) for r in report.rows], "notes": report.notes, "plots": list(plots)}
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    paths.append(atomic_write(out / "report.json", lambda f: f.write(text.encode())))
    table = "".join("<tr>" + "".join(f"<{t}>{e(v)}</{t}>" for v in row) + "</tr>\n"
                    for t, row in [("th", COLUMNS)] + [("td", r.cells()) for r in report.rows])
    notes = "".join(f"<li>{e(note)}</li>\n" for note in report.notes)
    figures = "".join(f"<h2>{e(title)}</h2>\n<img alt=\"{e(title)}\" src=\"data:image/png;base64,"
                      f"{base64.b64encode((out / name).read_bytes()).decode()}\">\n"
                      for name, (title, _) in plots.items())
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc}"
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>danqing eval</title><style>{style}</style>"
            f"</head><body>\n<h1>danqing eval</h1>\n<p>generated: {e(report.generated)}<br>reference: "
            f"{e(report.reference)}</p>\n<table>\n{table}</table>\n<ul>\n{notes}</ul>\n{figures}</body></html>\n")
    paths.append(atomic_write(out / "report.html", lambda f: f.write(page.encode())))
    return paths


def run(args, extra) -> None:
    """The body of ``danqing eval``: evaluate, print the table and the notes, write the report."""
    from rich.console import Console
    from rich.table import Table
    if extra:
        raise MetricsError(f"unrecognised arguments: {' '.join(extra)}")
    if args.report:
        require_matplotlib()                                          # fail before the long part
    report = evaluate(args.generated, args.reference, args.metrics, prompts_file=args.prompts, train=args.train,
                      n=args.n, scorer=args.scorer, rounds=args.bootstrap,
                      space=args.features)
    t = Table(*COLUMNS, title=f"{report.generated}\nagainst {report.reference}")
    for r in report.rows:
        t.add_row(*r.cells())
    Console().print(t)
    for note in report.notes:
        print(f"note: {note}")
    if args.report:
        print(f"wrote {write_report(report, args.report)[-1]}")
