"""Checkpoints: a folder with ``config.json`` + ``model.safetensors`` (+ ``ema.safetensors``)
and, for training, ``training_state.safetensors`` + ``training_state.json``.

Writes are atomic: everything goes into a hidden temporary folder beside the
target, which is renamed into place only when complete, and the run folder's
``latest`` pointer is replaced with ``os.replace``.  A kill at any moment leaves
the previous checkpoint intact.  Loading never unpickles: tensors come from
safetensors, everything else from JSON.

Checkpoints prove themselves: ``manifest.json``, written last, holds every
file's size and sha256.  Reading checks the sizes and the safetensors headers
(cheap) and hashes what it loads; a folder without a manifest (older versions,
the bundled weights) is checked for complete safetensors files and valid JSON.
A run folder falls back to its newest intact checkpoint, with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, to_dict
from .fileio import atomic_write
from .version import __version__

CONFIG, MODEL, EMA, STATE_T, STATE_J, LATEST, MANIFEST = (
    "config.json", "model.safetensors", "ema.safetensors",
    "training_state.safetensors", "training_state.json", "latest", "manifest.json")
WEIGHTS = (CONFIG, MODEL, EMA)            # what ``load`` reads, so what resolving for it hashes
# A temporary folder left by a killed write is removed when its run is next opened for training once the
# process named in it is gone, or (no live process to ask: older names, other machines) after this long idle.
STALE_AFTER = 10 * 60
_STALE = re.compile(r"\.(step-[^/]*)\.(?:tmp-(?:(\d+)-)?.*|old-(\d+))|\.best\.(?:tmp|old)")


class CheckpointError(ValueError):
    """A checkpoint path is missing, damaged or not a danqing checkpoint; the message says what to do."""


class CheckpointWarning(UserWarning):
    """A run folder's newest checkpoint is damaged, so an earlier intact one is used."""


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
    # the PID in the name lets `clean_stale` tell a killed writer's leftovers from a live writer's folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
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
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        seal(tmp)
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


def seal(folder: str | Path) -> None:
    """Write ``folder``'s manifest (each file's size and sha256) last, then flush every file to disk, so a
    rename that makes the folder visible shows it complete and able to prove it."""
    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name != MANIFEST)
    entries = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f, remember=False)} for f in files}
    (folder / MANIFEST).write_text(json.dumps({"manifest": 1, "files": entries}, indent=2) + "\n")
    for f in (*files, folder / MANIFEST):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def clean_stale(run_dir: str | Path) -> list[Path]:
    """Remove what killed writes left in ``run_dir`` (``.step-*.tmp-*``, ``.step-*.old-*``, ``.best.tmp``,
    ``.best.old``): a folder whose name carries the PID of a process no longer alive here, or any left idle
    for ``STALE_AFTER`` seconds; a live writer's folder carries a live PID and changes as it is written.
    A checkpoint moved aside whose replacement never arrived (a kill between two renames) is put back."""
    run_dir, removed = Path(run_dir), []
    for p in sorted(run_dir.iterdir()) if run_dir.is_dir() else ():
        m = _STALE.fullmatch(p.name)
        try:
            if not m or not p.is_dir() or p.is_symlink():
                continue
            pid = m.group(2) or m.group(3)
            if (pid and _gone(int(pid))) or time.time() - _last_change(p) > STALE_AFTER:
                if m.group(3) and not (run_dir / m.group(1)).exists():
                    os.replace(p, run_dir / m.group(1))
                    continue
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        except OSError:                              # gone meanwhile, or not ours to remove
            continue
    return removed


def _gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (False for this process, and where we cannot ask)."""
    if pid == os.getpid() or os.name != "posix":      # on Windows os.kill(pid, 0) would send CTRL_C_EVENT
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:                                  # e.g. another user's live process
        pass
    return False


def _last_change(folder: Path) -> float:
    return max([folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()])


def set_latest(run_dir: str | Path, name: str) -> None:
    """Point ``run_dir/latest`` at checkpoint folder ``name`` (atomic replace of a one-line file)."""
    atomic_write(Path(run_dir) / LATEST, (name + "\n").encode())


# ---------------------------------------------------------------- checking

_HASHES: dict[tuple[str, int, int, int], str] = {}     # (path, size, mtime, inode) -> sha256, per process
_WARNED: set[tuple[str, ...]] = set()


def _sha256(path: Path, remember: bool = True) -> str:
    key, h = _key(path), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if remember:
        if len(_HASHES) > 4096:
            _HASHES.clear()
        _HASHES[key] = h.hexdigest()
    return h.hexdigest()


def _key(path: Path) -> tuple[str, int, int, int]:
    """``path`` as it is now: a hash taken once (and so a mismatch found once) holds until the file changes."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def _safetensors_damage(path: Path, size: int) -> str | None:
    """Why ``path`` is not a complete safetensors file (its header must describe exactly its bytes)."""
    if size < 8:
        return f"{size} bytes, too short for a safetensors file"
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8 or n > 100_000_000:
            return f"truncated: its header claims {n} bytes but the file holds {size}"
        try:
            header = json.loads(f.read(n))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors header"
    if 8 + n + end != size:
        return f"{'truncated' if size < 8 + n + end else 'overlong'}: {size} bytes, its header describes {8 + n + end}"
    return None


def damage(folder: str | Path, hashes: bool | tuple[str, ...] = ()) -> tuple[str, str] | None:
    """``(file, why)`` when checkpoint ``folder`` is damaged, None when intact.

    Always checked: every file its manifest lists is there with its size, safetensors headers describe
    their files exactly, JSON parses.  ``hashes`` (True: all files) are also compared with the manifest's
    sha256.  Without a manifest (older versions, the bundled weights) there is nothing to compare with.
    """
    folder = Path(folder)
    listed: Any
    if (folder / MANIFEST).is_file():
        try:
            listed = json.loads((folder / MANIFEST).read_text())["files"]
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            listed = None
        if not isinstance(listed, dict) or any(Path(k).name != k or k in ("", ".", "..") or not isinstance(v, dict)
                                               for k, v in listed.items()):
            return MANIFEST, "not a valid manifest"
    else:
        listed = {f: {} for f in (CONFIG, MODEL, EMA, STATE_T, STATE_J) if (folder / f).is_file()}
        if (STATE_T in listed) != (STATE_J in listed):
            listed.setdefault(STATE_T, {})
            listed.setdefault(STATE_J, {})
    for name in (CONFIG, MODEL):
        listed.setdefault(name, {})
    for name, entry in listed.items():
        p = folder / name
        try:
            size = p.stat().st_size
        except OSError:
            return name, "missing"
        want = entry.get("size", size)
        if size != want:
            return name, f"{'truncated' if size < want else 'changed'}: {size} bytes, its manifest says {want}"
        why = None
        if name.endswith(".safetensors"):
            why = _safetensors_damage(p, size)
        elif name.endswith(".json"):
            try:
                json.loads(p.read_bytes())
            except (ValueError, UnicodeDecodeError):
                why = "not valid JSON"
        if why:
            return name, why
        if entry.get("sha256"):
            have = _HASHES.get(_key(p))
            if have is None and (hashes is True or name in (hashes or ())):
                have = _sha256(p)
            if have is not None and have != entry["sha256"]:
                return name, "its sha256 differs from the manifest's: the file changed after it was written"
    return None


# ---------------------------------------------------------------- reading

def _is_checkpoint(path: Path) -> bool:
    return (path / MODEL).is_file() or (path / MANIFEST).is_file()


def _candidates(run: Path) -> list[Path]:
    """The run's checkpoint folders to try: the one ``latest`` names, then the others, newest first.

    ``latest`` must name a folder inside the run folder; anything else is refused, never followed."""
    here, found = run.resolve(), []
    if (run / LATEST).is_file():
        name = (run / LATEST).read_text(errors="replace").strip()
        target = run / name
        if Path(name).name != name or name in ("", ".", "..") or target.resolve().parent != here:
            raise CheckpointError(f"{run / LATEST} names {name!r}, which is not a folder inside the run folder; "
                                  "refusing to follow it (it should hold the name of one of the run's step-N folders)")
        found.append(target)
    return found + sorted((p for p in run.glob("step-*") if p.is_dir() and p.resolve().parent == here
                           and p not in found), reverse=True)


def resolve(path: str | Path, *, hashes: bool | tuple[str, ...] = WEIGHTS) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (follows ``latest``), checked with
    ``damage(..., hashes)``.  A damaged checkpoint folder is a CheckpointError; a run folder falls back to
    its newest intact checkpoint with a CheckpointWarning naming both."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run folder written by `danqing train` or a "
                              "checkpoint folder")
    if _is_checkpoint(path):
        bad = damage(path, hashes)
        if bad:
            raise CheckpointError(f"{path / bad[0]} is damaged ({bad[1]}); use another checkpoint (a run folder "
                                  "falls back to its newest intact one) or write this one again")
        return path
    skipped = []
    for folder in _candidates(path):
        bad = damage(folder, hashes) if folder.is_dir() else ("", "missing")
        if bad is None:
            if skipped:
                _warn_fallback(path, skipped, folder)
            return folder
        skipped.append(f"{folder.name}/{bad[0]} ({bad[1]})" if bad[0] else f"{folder.name} ({bad[1]})")
    if skipped:
        raise CheckpointError(f"{path} holds no intact checkpoint: {'; '.join(skipped[:3])}"
                              f"{f' and {len(skipped) - 3} more' if len(skipped) > 3 else ''}; "
                              "train again with a new --out, or restore a copy of the run")
    raise CheckpointError(f"{path} holds no checkpoint (no {CONFIG} + {MODEL}, no `latest`); "
                          "train one with `danqing train` first")


def _warn_fallback(run: Path, skipped: list[str], used: Path) -> None:
    key = (str(run.resolve()), *skipped, used.name)
    if key not in _WARNED:                            # once per process, however often the run is resolved
        _WARNED.add(key)
        warnings.warn(f"{run}: {', '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} damaged; "
                      f"using {used.name} instead", CheckpointWarning, stacklevel=3)


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` (checked for damage without hashing: listing runs stays cheap)."""
    ckpt = resolve(path, hashes=())
    try:
        return json.loads((ckpt / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{ckpt / CONFIG} is not valid JSON ({e}); the checkpoint is damaged") from None


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:            # e.g. changed since it was checked
        raise CheckpointError(f"{file} is damaged ({str(e).splitlines()[0]}); use another checkpoint") from None


def load(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (EMA weights when present and ``ema``)."""
    from .estimate import check_loading
    from .families import FAMILIES, spec

    ckpt = resolve(path)
    cfg = read_config(ckpt)
    if cfg.get("family", "") not in FAMILIES:
        raise CheckpointError(f"{ckpt} is for family {cfg.get('family')!r}, which this danqing does not know; "
                              f"known: {', '.join(FAMILIES)}")
    try:
        fam = spec(cfg["family"])
        model_cfg = fam.config_from(cfg["model"])
        check_loading(fam, model_cfg)              # before a hand-edited config.json allocates anything
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{ckpt / CONFIG} does not match this danqing's {cfg['family']} config: {e}") from None
    model = fam.Model(model_cfg)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in _tensors(ckpt / MODEL).items()}
    model.load_state_dict(weights)
    if ema and (ckpt / EMA).is_file():
        model.load_state_dict(_tensors(ckpt / EMA), strict=False)
    return model.to(device).eval(), cfg


def load_training_state(path: str | Path) -> Any:
    """The training state of a checkpoint (of a run folder's newest intact one), every file hashed."""
    ckpt = resolve(path, hashes=True)
    if not (ckpt / STATE_T).is_file():
        raise CheckpointError(f"{ckpt} has no training state (it is a weights-only export); it cannot be resumed")
    return unflatten_state(json.loads((ckpt / STATE_J).read_text()), _tensors(ckpt / STATE_T))


def export(path: str | Path, dest: str | Path, *, dtype: torch.dtype | None = torch.float16) -> Path:
    """A weights-only copy of a checkpoint for shipping: EMA weights folded into ``model.safetensors``
    (in ``dtype``, fp16 by default), ``config.json`` kept, no training state; with its own manifest."""
    source = resolve(path)
    model, cfg = load(source)
    extra = {k: v for k, v in cfg.items() if k not in ("family", "model", "danqing_version")}
    extra["exported_from"] = {"step": cfg.get("step"), "checkpoint": source.name}
    return write_checkpoint(dest, family=cfg["family"], model=model, extra_config=extra, dtype=dtype)
