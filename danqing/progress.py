"""Progress: the training log (CSV/TensorBoard) and bar, and the bar over a count of items that building a data
set cache, encoding captions, painting for evaluation and extracting features share."""
from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

QUIET_BELOW = 200           # items: below this a progress bar is just noise


class Log:
    """CSV log, one row per logged step, appended as it goes; TensorBoard too when it is installed.

    On resume, rows after the checkpoint's step (written by the interrupted
    run) are dropped once.  A metric that appears later (e.g. a lazy phase)
    adds a column, which rewrites the file once.
    """

    def __init__(self, run_dir: Path, start_step: int):
        self.path = run_dir / "log.csv"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        self.cols = list(dict.fromkeys(k for r in self.rows for k in r)) or ["step"]
        self._rewrite()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.cols)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)

    def write(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        self.rows.append(row)
        if set(row) - set(self.cols):
            self.cols += [k for k in row if k not in self.cols]
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.cols).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class _Bar:
    def __init__(self, total: int, done: int, title: str, time_limit: float):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("eta"),
                          TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
        self.task = self.p.add_task(title, total=total, completed=done, speed="", losses="")
        self.t0, self.s0, self.total, self.time_limit = time.perf_counter(), done, total, time_limit
        self.p.start()

    def update(self, step: int, logs: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.s0) / max(1e-9, elapsed)
        losses = " ".join(f"{k.replace('/loss', '')}={v:.4g}" for k, v in logs.items() if k.endswith("loss"))
        total = self.total
        if self.time_limit:       # a time budget ends the run first: show the steps it will reach
            total = min(total, step + int(rate * max(0.0, self.time_limit * 60 - elapsed)))
        self.p.update(self.task, completed=step, total=total, speed=f"{rate:.2f} it/s", losses=losses)

    def close(self) -> None:
        self.p.stop()


def progress_bar(enabled: bool, total: int, done: int, title: str, time_limit: float = 0.0) -> _Bar | None:
    """A rich progress bar with it/s, elapsed, ETA and the latest losses (None when disabled)."""
    return _Bar(total, done, title, time_limit) if enabled else None


@contextmanager
def counting_bar(total: int | None, enabled: bool, what: str) -> Iterator[Callable[[int], None]]:
    """A transient bar on stderr over ``total`` items (None: unknown); yields ``advance(n)``.  Nothing is
    shown (``advance`` does nothing) when not ``enabled`` or for fewer than ``QUIET_BELOW`` items."""
    if not enabled or (total is not None and total < QUIET_BELOW):
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
