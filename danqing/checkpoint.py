"""Checkpoints: a folder with ``config.json`` + ``model.safetensors`` (+ ``ema.safetensors``)
and, for training, ``training_state.safetensors`` + ``training_state.json``.

Writes are atomic: everything goes into a hidden temporary folder beside the
target, which is renamed into place only when complete, and the run folder's
``latest`` pointer is replaced with ``os.replace``.  A kill at any moment leaves
the previous checkpoint intact.  Loading never unpickles: tensors come from
safetensors, everything else from JSON.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, to_dict
from .fileio import atomic_write
from .version import __version__

CONFIG, MODEL, EMA, STATE_T, STATE_J, LATEST = (
    "config.json", "model.safetensors", "ema.safetensors",
    "training_state.safetensors", "training_state.json", "latest")


class CheckpointError(ValueError):
    """A checkpoint path is missing or not a danqing checkpoint; the message says what to do."""


# ---------------------------------------------------------------- nested state <-> (tensors, JSON)

def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested dict/list structure into a JSON tree and a flat dict of tensors.

    Tensors are replaced by ``{"__tensor__": key}``; int dict keys (optimiser
    state) are kept as ``{"__int__": [...]}`` so they survive JSON.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[path] = o.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(o, dict):
            if o and all(isinstance(k, int) for k in o):
                return {"__int__": [[k, walk(v, f"{path}.{k}")] for k, v in o.items()]}
            return {str(k): walk(v, f"{path}.{k}") for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(o)]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store {type(o).__name__} at {path} in a checkpoint")

    return walk(obj, prefix or "s"), tensors


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__int__"}:
            return {int(k): unflatten_state(v, tensors) for k, v in tree["__int__"]}
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


# ---------------------------------------------------------------- writing

def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone so tied or viewed tensors save cleanly
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def write_checkpoint(path: str | Path, *, family: str, model: nn.Module, extra_config: dict[str, Any] | None = None,
                     ema: dict[str, torch.Tensor] | None = None, training_state: Any = None,
                     dtype: torch.dtype | None = None) -> Path:
    """Atomically write a checkpoint folder at ``path`` (replacing one that exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        cfg = {"family": family, "model": to_dict(model.config), "danqing_version": __version__, **(extra_config or {})}
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        weights = _state_dict(model)
        if dtype is not None:
            weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
        save_file(weights, str(tmp / MODEL), metadata={"family": family})
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(tmp / EMA))
        if training_state is not None:
            tree, tensors = flatten_state(training_state)
            save_file(tensors, str(tmp / STATE_T))
            (tmp / STATE_J).write_text(json.dumps(tree))
        os.chmod(tmp, 0o755)                         # mkdtemp makes it private; a checkpoint is ordinary data
        for f in tmp.iterdir():                      # data on disk before the rename makes it visible
            os.chmod(f, 0o644)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def set_latest(run_dir: str | Path, name: str) -> None:
    """Point ``run_dir/latest`` at checkpoint folder ``name`` (atomic replace of a one-line file)."""
    atomic_write(Path(run_dir) / LATEST, (name + "\n").encode())


# ---------------------------------------------------------------- reading

def resolve(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (follows ``latest``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run folder written by `danqing train` or a checkpoint folder")
    if (path / CONFIG).is_file() and (path / MODEL).is_file():
        return path
    if (path / LATEST).is_file():
        target = path / (path / LATEST).read_text().strip()
        if (target / MODEL).is_file():
            return target
    steps = sorted(p for p in path.glob("step-*") if (p / MODEL).is_file())
    if steps:
        return steps[-1]
    raise CheckpointError(f"{path} holds no checkpoint (no {CONFIG} + {MODEL}, no `latest`); "
                          "train one with `danqing train` first")


def read_config(path: str | Path) -> dict[str, Any]:
    ckpt = resolve(path)
    try:
        return json.loads((ckpt / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{ckpt / CONFIG} is not valid JSON ({e}); the checkpoint is damaged") from None


def load(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (EMA weights when present and ``ema``)."""
    from .families import FAMILIES, spec

    ckpt = resolve(path)
    cfg = read_config(ckpt)
    if cfg.get("family", "") not in FAMILIES:
        raise CheckpointError(f"{ckpt} is for family {cfg.get('family')!r}, which this danqing does not know; "
                              f"known: {', '.join(FAMILIES)}")
    try:
        fam = spec(cfg["family"])
        model_cfg = fam.config_from(cfg["model"])
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{ckpt / CONFIG} does not match this danqing's {cfg['family']} config: {e}") from None
    model = fam.Model(model_cfg)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(ckpt / MODEL)).items()}
    model.load_state_dict(weights)
    if ema and (ckpt / EMA).is_file():
        model.load_state_dict(load_file(str(ckpt / EMA)), strict=False)
    return model.to(device).eval(), cfg


def load_training_state(path: str | Path) -> Any:
    ckpt = resolve(path)
    if not (ckpt / STATE_T).is_file():
        raise CheckpointError(f"{ckpt} has no training state (it is a weights-only export); it cannot be resumed")
    return unflatten_state(json.loads((ckpt / STATE_J).read_text()), load_file(str(ckpt / STATE_T)))


def export(path: str | Path, dest: str | Path, *, dtype: torch.dtype | None = torch.float16) -> Path:
    """A weights-only copy of a checkpoint for shipping: EMA weights folded into ``model.safetensors``
    (in ``dtype``, fp16 by default), ``config.json`` kept, no training state."""
    model, cfg = load(path)
    extra = {k: v for k, v in cfg.items() if k not in ("family", "model", "danqing_version")}
    extra["exported_from"] = {"step": cfg.get("step"), "checkpoint": Path(resolve(path)).name}
    return write_checkpoint(dest, family=cfg["family"], model=model, extra_config=extra, dtype=dtype)

