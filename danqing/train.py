"""The one training loop, for every family.

The loop knows nothing about GANs or diffusion: each step it runs the model's
``phases()`` in order, each with the AdamW optimiser of the sub-module it
names, under bf16 autocast when the hardware supports it.  Everything random
is reproducible from ``train.seed``: the data order and flips are pure
functions of (seed, step), and torch's RNG state (noise, dropout) is saved in
every checkpoint, so a resumed run is bit-identical to an uninterrupted one
on the CPU.  Torch's global RNG is forked for the run and restored after it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import ConfigError, DataConfig, TrainConfig, to_dict
from .feed import batch_indices, captioner, flips_at, group_weights, phrasings_at, posterior_cache
from .hardware import pick_device, use_bf16
from .progress import Log, progress_bar
from .protocol import Batch, Cond, Phase, generators

BEST = "best"                     # the folder that holds the best checkpoint by train.best

# ---------------------------------------------------------------- schedule

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to min_lr_ratio * lr at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


# ---------------------------------------------------------------- EMA

def ema_keys(model: nn.Module) -> list[str]:
    """State-dict keys averaged by the EMA: float weights and buffers of the family's ``ema_module``
    (e.g. the GAN generator) or of the whole model, except frozen parameters (they never change)."""
    prefix = getattr(model, "ema_module", "")
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    return [k for k, v in model.state_dict().items()
            if v.is_floating_point() and k not in frozen and (not prefix or k.startswith(prefix + "."))]


@torch.no_grad()
def ema_update(ema: dict[str, Tensor], model: nn.Module, step: int, decay: float) -> None:
    d = min(decay, (1 + step) / (10 + step))         # short warm-up so early samples are not stale
    state = model.state_dict()
    for k, v in ema.items():
        v.lerp_(state[k].detach().float(), 1 - d)


class swap_in:
    """Context manager: temporarily load EMA weights into the model (for sample grids)."""

    def __init__(self, model: nn.Module, ema: dict[str, Tensor]):
        self.model, self.ema = model, ema

    def __enter__(self):
        state = self.model.state_dict()
        self.saved = {k: state[k].clone() for k in self.ema}
        self.was_training = self.model.training
        self.model.load_state_dict({k: v.to(state[k].dtype) for k, v in self.ema.items()}, strict=False)
        self.model.eval()

    def __exit__(self, *exc):
        self.model.load_state_dict(self.saved, strict=False)
        self.model.train(self.was_training)


# ---------------------------------------------------------------- logging

def sample_grid(model: nn.Module, n: int, *, num_classes: int = 0, text: Cond | None = None) -> Tensor:
    """A fixed grid for watching training: seeds 0..n-1, classes cycling 0..num_classes-1,
    or the given text conditioning (the captions of fixed training images)."""
    device = next(model.parameters()).device
    cond = Cond(labels=torch.arange(n, device=device) % num_classes) if num_classes else None
    if text is not None:
        cond = Cond(labels=None if cond is None else cond.labels, text=text.text[:n], text_mask=text.text_mask[:n],
                    pooled=text.pooled[:n]).to(device)
    return model.sample(n, cond, generator=generators(range(n), device))


# ---------------------------------------------------------------- the loop

@dataclasses.dataclass
class Run:
    """Everything ``train`` needs; written to ``out/config.json``."""

    family: str
    model: Any                          # the family's Config
    data: DataConfig
    train: TrainConfig
    preset: str = ""
    init_from: dict[str, str] = dataclasses.field(default_factory=dict)   # sub-module -> checkpoint to start from

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "preset": self.preset, "model": to_dict(self.model),
                "data": to_dict(self.data), "train": to_dict(self.train), "init_from": self.init_from}


def train(run: Run, out: str | Path, *, resume: bool = False, device: str = "auto", progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train ``run`` into the folder ``out``; returns the last checkpoint's folder.

    ``resume=True`` continues from ``out``'s latest checkpoint; the model, data
    and seed must match, while steps and time limit may change.
    """
    from .data import load_dataset

    out = Path(out)
    dev = pick_device(device)
    has_ckpt = out.exists() and (any(out.glob("step-*")) or (out / ckpt.LATEST).exists())
    if has_ckpt and not resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not has_ckpt:
        raise ConfigError(f"nothing to resume in {out}: it holds no checkpoint")
    if resume:
        _check_same_run(json.loads((out / "config.json").read_text()), run)

    ds = load_dataset(run.data, progress=progress)
    num_classes = getattr(run.model, "num_classes", 0)
    if num_classes and ds.labels is None:
        raise ConfigError(f"the {run.family} model is class-conditional but {run.data.source} has no classes; "
                          "put images in one sub-folder per class or pass --model.num_classes=0")
    if num_classes and ds.labels is not None and len(ds.class_names) > num_classes:
        raise ConfigError(f"{run.data.source} has {len(ds.class_names)} classes but the model has "
                          f"--model.num_classes={num_classes}")
    if run.train.balance and ds.captions is None:
        raise ConfigError(f"--train.balance groups pictures by caption, but {run.data.source} has no captions; "
                          "add a metadata.jsonl or .txt captions, or leave --train.balance out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(run.to_json(), indent=2) + "\n")
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    # Denormal floats (from tiny early gradients of zero-initialised layers) are up to 100x slower on CPUs.
    torch.set_flush_denormal(True)
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(run.train.seed)            # initial weights and all training noise come from the seed
            return _loop(run, ds, out, resume, dev, progress, on_step)
    finally:
        torch.set_flush_denormal(False)


def _loop(run: Run, ds, out: Path, resume: bool, dev: torch.device, progress: bool,
          on_step: Callable[[int, dict[str, float]], None] | None) -> Path:
    from .families import FAMILIES
    from .images import save_grid

    tc = run.train
    weights = group_weights(ds.captions, tc.balance) if tc.balance else None
    model = FAMILIES[run.family].Model(run.model).to(dev)
    phases: list[Phase] = model.phases()
    for sub, path in sorted(run.init_from.items()):      # "" (the whole model) first, then e.g. its autoencoder
        init_submodule(model, sub, path)
    # A family freezes a part of itself (e.g. its autoencoder) with requires_grad=False when it is built;
    # the trainable parameters are taken now, once, and the frozen ones are never touched.
    live = [p for p in model.parameters() if p.requires_grad]
    owned = {m: [p for p in (model.get_submodule(m) if m else model).parameters() if p.requires_grad]
             for m in {ph.module for ph in phases}}
    optims = {m: torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
              for m, params in owned.items()}
    ema = {k: model.state_dict()[k].detach().float().clone() for k in ema_keys(model)}
    step, last = 0, out
    if resume:
        state = ckpt.load_training_state(out)
        model.load_state_dict(state["model"])
        for m, opt in optims.items():
            opt.load_state_dict(state["optim"][m or "_"])
        ema = {k: v.float() for k, v in state["ema"].items()}
        step, last = int(state["step"]), ckpt.resolve(out)
        torch.set_rng_state(state["rng"])
    bf16 = use_bf16(tc.bf16, dev)
    num_classes = getattr(run.model, "num_classes", 0)
    phrased = ds.variants is not None and tc.variants > 0
    embed = captioner(run.model, ds, progress, variants=phrased)
    posterior = posterior_cache(model, ds, dev, progress) if tc.cache_posterior and not run.data.flip else None
    grid_text = None
    if embed is not None:                  # the grid shows the captions of evenly spaced training images
        picks = torch.linspace(0, len(ds) - 1, tc.sample_n).long().tolist()
        grid_text = embed([ds.captions[i] for i in picks])
    monitor = None
    if tc.eval_every and hasattr(model, "sample"):
        from .monitor import Monitor
        monitor = Monitor(ds, tc, num_classes=num_classes, embed=embed, device=dev)
    best = _best_so_far(out, tc.best)
    log = Log(out, step)
    if progress:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        classes = f", {len(ds.class_names)} classes" if ds.labels is not None else ""
        print(f"{run.family}:{run.preset or 'custom'} ({params:.2f}M parameters) on {run.data.source} "
              f"({len(ds)} images{classes}); {dev.type}, {torch.get_num_threads()} threads, bf16 {'on' if bf16 else 'off'}; "
              f"{'resuming at step ' + str(step) + ', ' if step else ''}{tc.steps} steps of {tc.batch_size}"
              f"{f', at most {tc.time_limit:g} min' if tc.time_limit else ''} -> {out}")
        if weights is not None:
            print(f"balanced: {len(ds)} pictures drawn as {round(weights.sum().item())} equally likely groups "
                  f"(--train.balance)")
        if phrased:
            have = sum(map(bool, ds.variants))
            print(f"caption variants: {have} of {len(ds)} pictures have other phrasings, each trained on one "
                  f"{tc.variants:.0%} of the time (--train.variants)")

    def save(at: int) -> Path:
        name = f"step-{at:07d}"
        if hasattr(model, "calibrate"):                # e.g. the autoencoder's measured latent scale
            with swap_in(model, ema), torch.autocast(dev.type, enabled=False):
                idx = torch.arange(min(len(ds), 1024)).numpy()
                model.calibrate(ds.batch(idx).images.to(dev))
        state = {"model": model.state_dict(), "optim": {m or "_": o.state_dict() for m, o in optims.items()},
                 "ema": ema, "step": at, "rng": torch.get_rng_state(),
                 "data": dict(zip(("epoch", "position"), batch_indices(at, tc.batch_size, len(ds), tc.seed, weights)[1:]))}
        path = ckpt.write_checkpoint(out / name, family=run.family, model=model, ema=ema, training_state=state,
                                     extra_config={"preset": run.preset, "class_names": ds.class_names,
                                                   "data": to_dict(run.data), "step": at})
        ckpt.set_latest(out, name)
        for old in sorted(out.glob("step-*"))[:-tc.keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def grid(at: int) -> None:
        with swap_in(model, ema):
            imgs = sample_grid(model, tc.sample_n, num_classes=num_classes, text=grid_text)
        save_grid(imgs, out / "samples" / f"step-{at:07d}.png")

    start = time.perf_counter()
    shown: dict[str, float] = {}
    bar = progress_bar(progress, tc.steps, step, f"{run.family}:{run.preset or 'custom'}", tc.time_limit)
    model.train()
    try:
        while step < tc.steps:
            idx, _, _ = batch_indices(step, tc.batch_size, len(ds), tc.seed, weights)
            flip = flips_at(step, tc.batch_size, tc.seed) if run.data.flip else None
            batch = ds.batch(idx.numpy(), flip=flip)
            if posterior is not None:
                batch.posterior = posterior[idx]
            if embed is not None:
                batch.cond = embed(phrasings_at(step, idx.tolist(), ds.captions, ds.variants, tc.variants, tc.seed)
                                   if phrased else batch.captions)
            batch = batch.to(dev)
            lr = lr_at(step, tc)
            logs = {"lr": lr}
            for ph in phases:
                if step % ph.every == 0:
                    logs.update(_run_phase(model, ph, optims[ph.module], owned[ph.module], live, batch, lr,
                                           tc.grad_clip, bf16, dev))
            ema_update(ema, model, step, tc.ema_decay)
            step += 1
            if not all(math.isfinite(v) for v in logs.values()):
                raise FloatingPointError(f"the loss became {logs} at step {step}; lower --train.lr or "
                                         f"enable --train.grad_clip. The last good checkpoint is kept in {out}")
            shown.update(logs)            # phases that did not run this step keep their last values
            checked = monitor is not None and step % tc.eval_every == 0
            checks: dict[str, float] = {}                 # logged on the step they were taken, not repeated
            if checked:
                with swap_in(model, ema), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    checks = monitor(model)
            if step % tc.log_every == 0 or step == tc.steps or checked:
                log.write(step, {**shown, **checks, "time": time.perf_counter() - start})
            if bar is not None:
                bar.update(step, shown)
            if on_step is not None:
                on_step(step, logs)
            timeout = bool(tc.time_limit) and time.perf_counter() - start > tc.time_limit * 60
            if hasattr(model, "sample") and ((tc.sample_every and step % tc.sample_every == 0)
                                             or step == tc.steps or timeout):
                grid(step)
            improved = checked and tc.best and checks[f"eval/{tc.best}"] < best
            if (tc.ckpt_every and step % tc.ckpt_every == 0) or step == tc.steps or timeout or improved:
                last = save(step)
            if improved:
                best = checks[f"eval/{tc.best}"]
                _keep_as_best(last, out, {tc.best: best, "step": step})
            if timeout:
                break
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return last


def _best_so_far(out: Path, metric: str) -> float:
    """The value recorded with ``out/best`` for ``metric`` (inf when there is none yet)."""
    meta = out / BEST / "best.json"
    if metric and meta.is_file():
        return float(json.loads(meta.read_text()).get(metric, math.inf))
    return math.inf


def _keep_as_best(checkpoint: Path, out: Path, meta: dict[str, float]) -> None:
    """Copy ``checkpoint`` to ``out/best`` (weights only; the swap is a rename, so a crash leaves one intact)."""
    tmp = out / f".{BEST}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in (ckpt.CONFIG, ckpt.MODEL, ckpt.EMA):
        if (checkpoint / f).is_file():
            shutil.copy2(checkpoint / f, tmp / f)
    (tmp / "best.json").write_text(json.dumps(meta) + "\n")
    old = out / f".{BEST}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / BEST).exists():
        (out / BEST).rename(old)
    tmp.rename(out / BEST)
    shutil.rmtree(old, ignore_errors=True)


def init_submodule(model: nn.Module, sub: str, path: str) -> None:
    """Load sub-module ``sub`` ("" = the whole model) from the checkpoint at ``path`` (EMA weights when present)."""
    source, _ = ckpt.load(path)
    target = model.get_submodule(sub) if sub else model
    try:
        target.load_state_dict(source.state_dict())
    except RuntimeError as e:
        raise ConfigError(f"{path} does not fit {sub}: {str(e).splitlines()[0]}") from None


def _run_phase(model: nn.Module, ph: Phase, opt: torch.optim.Optimizer, params: list[nn.Parameter],
               live: list[nn.Parameter], batch: Batch, lr: float, clip: float, bf16: bool,
               dev: torch.device) -> dict[str, float]:
    mine = {id(p) for p in params}
    for p in live:                                     # only this phase's module collects gradients
        p.requires_grad_(id(p) in mine)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        out = model.loss(batch, ph.name)
    out["loss"].float().backward()
    logs = {f"{ph.name}/{k}": float(v.detach()) for k, v in out.items()}
    if clip:
        logs[f"{ph.name}/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
    opt.step()
    for p in live:
        p.requires_grad_(True)
    return logs


def _check_same_run(old: dict[str, Any], run: Run) -> None:
    """Resuming must not silently change the model, data or seed.

    A setting the run's config.json lacks was added to danqing after the run
    started; the run had its default then, so the default is what it compares to.
    """
    new = run.to_json()
    if old.get("family") != new["family"]:
        raise ConfigError(f"--resume: the run in --out trains {old.get('family')}, not {new['family']}")
    mutable = {"steps", "time_limit", "log_every", "sample_every", "ckpt_every", "keep", "sample_n", "threads",
               "eval_every", "eval_n", "eval_metrics", "collapse_alarm", "best", "cache_posterior"}
    defaults = {part: {f.name: json.loads(json.dumps(f.default)) for f in dataclasses.fields(getattr(run, part))
                       if f.default is not dataclasses.MISSING} for part in ("model", "data", "train")}
    was = {part: {**defaults[part], **old.get(part, {})} for part in defaults}
    changed = [f"{part}.{k} ({was[part].get(k)!r} -> {v!r})" for part in defaults for k, v in new[part].items()
               if was[part].get(k) != v and not (part == "train" and k in mutable)]
    if changed:
        raise ConfigError(f"--resume: {', '.join(changed)} differ from the run being resumed; resume with the "
                          f"same settings (only train {', '.join(sorted(mutable))} may change) or use a new --out")
