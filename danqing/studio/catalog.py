"""The models the studio paints with: the bundled models that paint and every run or checkpoint folder below ``--runs``.

A model is named by its bundled name or by its folder's path relative to the runs folder ("digits-dcgan",
"experiments/t2i"); requests carry that name, which is looked up here, so a client never hands the server a path.
Everything is read from ``config.json`` (no weights are loaded), and the listing is cached for a few seconds.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, cast

from .. import checkpoint as ckpt
from .. import pipeline

MAX_DEPTH = 4           # how deep below the runs folder to look for runs


def describe(name: str, folder: Path, cfg: dict[str, Any], scorer: bool) -> dict[str, Any] | None:
    """The listing entry of one model, or None when it does not paint (a scorer, an unknown family)."""
    from dataclasses import asdict

    from ..config import ConfigError
    from ..families import FAMILIES, spec
    from ..generate import sizes
    from ..options import describe as describe_options
    from ..protocol import Denoises, Generates, Projects, Translates

    if cfg.get("family", "") not in FAMILIES:
        return None
    fam = spec(cfg["family"])
    if not fam.paints:
        return None
    try:
        c = fam.config_from(cfg["model"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
    facts = fam.facts(c)
    diffusion = fam.can(Denoises)
    from_noise = fam.can(Generates)
    takes_text = facts.text is not None
    k = facts.num_classes
    class_names = (cfg.get("class_names") or [str(i) for i in range(k)]) if k else []
    options = [asdict(o) for o in describe_options(fam.Options, fam.default_options(c))]
    named = {o["name"]: o for o in options}
    return {"name": name, "kind": "text" if takes_text else "class" if class_names else "unconditional",
            "family": cfg["family"], "image_size": facts.image_size, "sizes": sizes(facts),
            "samplers": list(named["sampler"]["choices"]) if "sampler" in named else [],
            "defaults": {k: named[k]["default"] if k in named else None for k in ("steps", "guidance", "sampler")},
            "options": options,
            "class_names": class_names,
            "supports": {"img2img": diffusion, "inpaint": diffusion, "variations": from_noise,
                         "interpolation": from_noise, "best_of": scorer and takes_text, "grid": from_noise,
                         "project": fam.can(Projects), "translate": fam.can(Translates) and not from_noise},
            "spaces": list(cast(Any, fam.Model).spaces) if fam.can(Projects) else [],
            "_folder": folder}


class Catalog:
    """name -> model entry; rescanned at most every ``ttl`` seconds."""

    def __init__(self, runs_dir: str | Path | None, ttl: float = 5.0):
        self.runs = Path(runs_dir).resolve() if runs_dir else None
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._when = -1e9

    def models(self) -> list[dict[str, Any]]:
        """The public listing (without the folders)."""
        return [{k: v for k, v in e.items() if not k.startswith("_")} for e in self._scan().values()]

    def get(self, name: str) -> dict[str, Any] | None:
        return self._scan().get(name)

    def folder(self, name: str) -> Path | None:
        e = self.get(name)
        return None if e is None else e["_folder"]

    def _scan(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._when > self.ttl:
                self._entries = self._read()
                self._when = time.monotonic()
            return self._entries

    def _read(self) -> dict[str, dict[str, Any]]:
        scorer = pipeline.SCORER in pipeline.bundled("scorer")
        out: dict[str, dict[str, Any]] = {}
        for name in pipeline.bundled("model"):
            folder = pipeline.WEIGHTS / name
            entry = _entry(name, folder, scorer)
            if entry:
                out[name] = entry
        for folder in self._run_folders():
            name = folder.relative_to(self.runs).as_posix()
            entry = _entry(f"./{name}" if name in out else name, folder, scorer)
            if entry:
                out[entry["name"]] = entry
        return out

    def _run_folders(self) -> list[Path]:
        """Folders below the runs folder holding a run (`latest`) or a checkpoint; not descended into further."""
        if self.runs is None or not self.runs.is_dir():
            return []
        found = []
        for top, dirs, files in os.walk(self.runs, followlinks=False):
            here = Path(top)
            depth = len(here.relative_to(self.runs).parts)
            if here != self.runs and (ckpt.LATEST in files or {ckpt.CONFIG, ckpt.MODEL} <= set(files)):
                found.append(here)
                dirs[:] = []
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH)
        return sorted(found)


def _entry(name: str, folder: Path, scorer: bool) -> dict[str, Any] | None:
    try:
        cfg = ckpt.read_config(folder)
    except (ckpt.CheckpointError, OSError):
        return None
    return describe(name, folder, cfg, scorer)
