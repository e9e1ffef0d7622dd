"""The one training loop, for every family.

The loop knows nothing about GANs or diffusion: it asks the family's spec what
the model can do, and each step it runs the model's ``phases()`` in order, each
with the AdamW optimiser of the sub-module it names (set up as the phase's
``Optim`` says), under bf16 autocast when the hardware supports it.  Everything
random is reproducible from ``train.seed``: the data orders and flips of every
data role are pure functions of (seed, step), and torch's RNG states (noise,
dropout; CUDA's too when it is used) are saved in every checkpoint, so a
resumed run is bit-identical to an uninterrupted one on the CPU.  Torch's
global RNG is forked for the run and restored after it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import ConfigError, DataConfig, TrainConfig, to_dict
from .families import spec as family_spec
from .estimate import check_training
from .feed import Feed, captioner, group_weights, posterior_cache
from .fileio import check_writable
from .generate import Painter, Request
from .hardware import pick_device, use_bf16
from .optim import build_optimisers, ema_keys, ema_update, lr_at, run_phase, swap_in
from .progress import Log, progress_bar
from .protocol import Calibrates, DataInit, FamilySpec, FrozenEncoding, Generates, Phase, Trainable

BEST = "best"                     # the folder that holds the best checkpoint by train.best

__all__ = ["BEST", "Run", "ema_keys", "ema_update", "init_submodule", "lr_at", "sample_grid", "swap_in", "train"]


def sample_grid(painter: Painter, n: int, *, captions: list[str] | None = None, bf16: bool = False) -> Tensor:
    """A fixed grid for watching training: seeds 0..n-1, classes cycling 0..K-1, or the given captions
    (those of fixed training images)."""
    labels = [i % painter.facts.num_classes for i in range(n)] if painter.facts.num_classes and not captions else None
    return painter(Request(list(range(n)), captions[:n] if captions else None, labels), bf16=bf16)


def translation_grid(painter: Painter, inputs: Tensor, targets: Tensor | None, *, bf16: bool = False) -> Tensor:
    """For a model that translates pictures: each input (k, C, S, S), its translation and (paired data) its
    true target side by side, (2k or 3k, C, S, S); seeds 0..k-1 for the model's noise."""
    out = painter(Request(list(range(len(inputs))), image=inputs), bf16=bf16).cpu()
    parts = [inputs.cpu(), out] + ([] if targets is None else [targets.cpu()])
    return torch.stack(parts, dim=1).flatten(0, 1)


@dataclasses.dataclass
class Run:
    """Everything ``train`` needs; written to ``out/config.json``."""

    family: str
    model: Any                          # the family's Config
    data: DataConfig
    train: TrainConfig
    preset: str = ""
    init_from: dict[str, str] = dataclasses.field(default_factory=dict)   # sub-module -> checkpoint to start from
    roles: dict[str, str] = dataclasses.field(default_factory=dict)       # data role -> its source (see DataRole)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "preset": self.preset, "model": to_dict(self.model),
                "data": to_dict(self.data), "train": to_dict(self.train), "init_from": self.init_from,
                "roles": self.roles}


def train(run: Run, out: str | Path, *, resume: bool = False, device: str = "auto", progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train ``run`` into the folder ``out``; returns the last checkpoint's folder.

    ``resume=True`` continues from ``out``'s latest checkpoint; the model, data
    and seed must match, while steps and time limit may change.
    """
    from .data import load_dataset, write_skipped

    out = Path(out)
    dev = pick_device(device)
    has_ckpt = out.exists() and (any(out.glob("step-*")) or (out / ckpt.LATEST).exists())
    if has_ckpt and not resume:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not has_ckpt:
        raise ConfigError(f"nothing to resume in {out}: it holds no checkpoint")
    fam = family_spec(run.family)
    run = _paired_sides(fam, run)                  # --data as side b of a paired source (before comparing runs)
    if resume:
        _check_same_run(json.loads((out / "config.json").read_text()), run)

    check_training(fam, run.model, run.train.batch_size)     # before anything is allocated for it
    check_writable(out, "the run folder")          # before the data is read and the model is built
    ds = load_dataset(run.data, progress=progress)
    roles = _role_data(fam, run, len(ds), progress)
    num_classes = fam.facts(run.model).num_classes
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
    ckpt.clean_stale(out)                                 # what killed writes left behind (see STALE_AFTER)
    (out / "config.json").write_text(json.dumps(run.to_json(), indent=2) + "\n")
    write_skipped(ds, out)                         # every file the data left out, by name and reason
    for name, (_, data) in roles.items():
        write_skipped(data, out, f"skipped-{name}.txt")
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    # Denormal floats (from tiny early gradients of zero-initialised layers) are up to 100x slower on CPUs.
    torch.set_flush_denormal(True)
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(run.train.seed)            # initial weights and all training noise come from the seed
            return _loop(run, fam, ds, roles, out, resume, dev, progress, on_step)
    finally:
        torch.set_flush_denormal(False)


def _fixed_inputs(fam: FamilySpec, ds, roles: dict[str, tuple[Any, Any]], n: int) -> tuple[Tensor, Tensor | None] | None:
    """The inputs a translating model's training grid shows, evenly spaced through its role ``a`` data (at most
    16), and the true targets beside them when the data is paired; None for a model that paints from noise (or
    does not paint)."""
    if fam.can(Generates) or not fam.paints:
        return None
    role, data = roles.get("a", (None, ds))           # a family without inputs of their own translates --data's
    idx = torch.linspace(0, len(data) - 1, min(n, 16, len(data))).long().numpy()
    return data.batch(idx).images, ds.batch(idx).images if role is not None and role.paired else None


def _paired_sides(fam: FamilySpec, run: Run) -> Run:
    """``run`` with --data read as side b of its paired source when the family's role ``a`` will be that
    source's side a (no --role a given, see _role_data); for an unpaired role a (CycleGAN, CUT) b comes from the
    second half of the pairs and a from the first, so the model never sees a true pair."""
    role = next((r for r in fam.roles if r.name == "a"), None)
    if role is None or "a" in run.roles or run.data.pair:
        return run
    from .data.pairs import is_paired
    if not is_paired(run.data.source):
        return run
    return dataclasses.replace(run, data=dataclasses.replace(run.data, pair="b", half=0 if role.paired else 2))


def _role_data(fam: FamilySpec, run: Run, n: int, progress: bool) -> dict[str, tuple[Any, Any]]:
    """The data set of each role the family trains on beside --data, loaded like the main one.  Role ``a`` not
    given while --data is side b of a paired source (``_paired_sides``) is that source's side a."""
    from .data import load_dataset

    unknown = set(run.roles) - {r.name for r in fam.roles}
    if unknown:
        raise ConfigError(f"the {fam.name} family takes no data set {', '.join(sorted(unknown))}"
                          f"{'; its roles: ' + ', '.join(r.name for r in fam.roles) if fam.roles else ''}")
    out = {}
    for role in fam.roles:
        source = run.roles.get(role.name) or role.default
        if role.name == "a" and role.name not in run.roles and run.data.pair == "b":
            # The other side of the main data's pairs; the other half of them when the role is unpaired.
            other = {0: 0, 1: 2, 2: 1}[run.data.half] if not role.paired else run.data.half
            data = load_dataset(dataclasses.replace(run.data, pair="a", half=other), progress=progress)
            out[role.name] = (role, data)
            continue
        if not source and role.name == "a" and role.paired:
            raise ConfigError(f"{run.data.source} is not paired: {fam.name} trains on pairs (A/ and B/ folders "
                              "with matching names, side-by-side A|B pictures, or a paired built-in set such as "
                              "digit-sketch); for unpaired data use cyclegan or cut")
        if not source:
            raise ConfigError(f"the {fam.name} family also trains on {role.help or role.name}: give it with "
                              f"--role {role.name}=DIR|DATASET" + (" (or give a paired source, e.g. --data "
                                                                    "digit-sketch)" if role.name == "a" else ""))
        data = load_dataset(dataclasses.replace(run.data, source=source, pair="", half=0), progress=progress)
        if role.paired and len(data) != n:
            raise ConfigError(f"{source} ({role.name}) holds {len(data)} pictures but {run.data.source} holds {n}; "
                              "paired data sets hold the same file names, one picture each")
        out[role.name] = (role, data)
    return out


def _loop(run: Run, fam: FamilySpec, ds, roles: dict[str, tuple[Any, Any]], out: Path, resume: bool,
          dev: torch.device, progress: bool, on_step: Callable[[int, dict[str, float]], None] | None) -> Path:
    from .images import save_grid

    tc = run.train
    begun = time.perf_counter()                    # --minutes counts from here, encoding the data included
    facts = fam.facts(run.model)
    weights = group_weights(ds.captions, tc.balance) if tc.balance else None
    model: nn.Module = fam.Model(run.model).to(dev)
    trainable = cast(Trainable, model)
    phases: list[Phase] = trainable.phases()
    for sub, path in sorted(run.init_from.items()):      # "" (the whole model) first, then e.g. its autoencoder
        init_submodule(model, sub, path)
    # A family freezes a part of itself (e.g. its autoencoder) with requires_grad=False when it is built;
    # the trainable parameters are taken now, once, and the frozen ones are never touched.
    live = [p for p in model.parameters() if p.requires_grad]
    optims, owned = build_optimisers(model, phases, tc)
    ema = {k: model.state_dict()[k].detach().float().clone() for k in ema_keys(model, fam.ema_module)}
    step, last = 0, out
    if resume:
        state = ckpt.load_training_state(out)
        model.load_state_dict(state["model"])
        for m, opt in optims.items():
            opt.load_state_dict(state["optim"][m or "_"])
        if set(state["ema"]) != set(ema):
            raise ConfigError(f"--resume: the averaged weights in {out} name other layers than this danqing's "
                              f"{run.family} model (written by an older version); continue from its weights with "
                              f"--init {ckpt.resolve(out)} and a new --out")
        ema = {k: v.float() for k, v in state["ema"].items()}
        step, last = int(state["step"]), ckpt.resolve(out)
        torch.set_rng_state(state["rng"])
        if dev.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(list(state["cuda_rng"]))
    bf16 = use_bf16(tc.bf16, dev)
    num_classes = facts.num_classes
    phrased = ds.variants is not None and tc.variants > 0
    embed = captioner(facts.text, ds, progress, variants=phrased)
    posterior = posterior_cache(cast(FrozenEncoding, model), ds, dev, progress) \
        if fam.can(FrozenEncoding) and tc.cache_posterior and not run.data.flip else None
    feed = Feed(ds, tc, run.data.flip, weights, posterior, embed, roles)
    painter = Painter(model, fam, class_names=ds.class_names, encode_text=embed, name=run.family) \
        if fam.paints else None
    grid_captions = None
    if embed is not None:                  # the grid shows the captions of evenly spaced training images
        grid_captions = [ds.captions[i] for i in torch.linspace(0, len(ds) - 1, tc.sample_n).long().tolist()]
    if not resume and "" not in run.init_from and fam.can(DataInit):
        with torch.no_grad():              # data-dependent initialisation (e.g. ActNorm) from the first batch
            cast(DataInit, model).initialize(feed.batch(0).to(dev))
            ema = {k: model.state_dict()[k].detach().float().clone() for k in ema}
    monitor = None
    fixed = _fixed_inputs(fam, ds, roles, tc.sample_n)   # a translating model's grid: its inputs (and targets)
    if tc.eval_every and painter is not None and fam.can(Generates):
        from .monitor import Monitor
        monitor = Monitor(ds, tc, num_classes=num_classes, embed=embed, device=dev)
    best = _best_so_far(out, tc.best)
    log = Log(out, step)
    if progress:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        classes = f", {len(ds.class_names)} classes" if ds.labels is not None else ""
        others = "".join(f", {name} from {data.source} ({len(data)})" for name, (_, data) in roles.items())
        print(f"{run.family}:{run.preset or 'custom'} ({params:.2f}M parameters) on {run.data.source} "
              f"({len(ds)} images{classes}{others}); {dev.type}, {torch.get_num_threads()} threads, "
              f"bf16 {'on' if bf16 else 'off'}; "
              f"{'resuming at step ' + str(step) + ', ' if step else ''}{tc.steps} steps of {tc.batch_size}"
              f"{f', at most {tc.time_limit:g} min' if tc.time_limit else ''} -> {out}")
        if weights is not None:
            print(f"balanced: {len(ds)} pictures drawn as {round(weights.sum().item())} equally likely groups "
                  f"(--train.balance)")
        if phrased and ds.variants is not None:
            have = sum(map(bool, ds.variants))
            print(f"caption variants: {have} of {len(ds)} pictures have other phrasings, each trained on one "
                  f"{tc.variants:.0%} of the time (--train.variants)")

    def save(at: int) -> Path:
        name = f"step-{at:07d}"
        if fam.can(Calibrates):                        # e.g. the autoencoder's measured latent scale
            with swap_in(model, ema), torch.autocast(dev.type, enabled=False):
                idx = torch.arange(min(len(ds), 1024)).numpy()
                cast(Calibrates, model).calibrate(ds.batch(idx).images.to(dev))
        state = {"model": model.state_dict(), "optim": {m or "_": o.state_dict() for m, o in optims.items()},
                 "ema": ema, "step": at, "rng": torch.get_rng_state(), "data": feed.position(at)}
        if dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        path = ckpt.write_checkpoint(out / name, family=run.family, model=model, ema=ema, training_state=state,
                                     extra_config={"preset": run.preset, "class_names": ds.class_names,
                                                   "data": to_dict(run.data), "step": at})
        ckpt.set_latest(out, name)
        for old in sorted(out.glob("step-*"))[:-tc.keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def grid(at: int) -> None:
        assert painter is not None
        with swap_in(model, ema):
            if fixed is None:
                imgs, nrow = sample_grid(painter, tc.sample_n, captions=grid_captions), None
            else:
                imgs = translation_grid(painter, fixed[0].to(dev), fixed[1])
                nrow = 4 * len(imgs) // len(fixed[0])                    # four inputs with their pictures a row
        save_grid(imgs, out / "samples" / f"step-{at:07d}.png", **({} if nrow is None else {"nrow": nrow}))

    start = time.perf_counter()
    shown: dict[str, float] = {}
    bar = progress_bar(progress, tc.steps, step, f"{run.family}:{run.preset or 'custom'}", tc.time_limit)
    model.train()
    try:
        while step < tc.steps:
            batch = feed.batch(step).to(dev)
            lr = lr_at(step, tc)
            logs = {"lr": lr}
            carry: dict[str, Any] = {}                   # shared by the phases of this step only
            for ph in phases:
                if step % ph.every == 0:
                    logs.update(run_phase(trainable, ph, optims[ph.module], owned[ph.module], live, batch, lr,
                                          tc.grad_clip, bf16, dev, step, carry))
            ema_update(ema, model, step, tc.ema_decay)
            step += 1
            if not all(math.isfinite(v) for v in logs.values()):
                raise FloatingPointError(f"the loss became {logs} at step {step}; lower --train.lr or "
                                         f"enable --train.grad_clip. The last good checkpoint is kept in {out}")
            shown.update(logs)            # phases that did not run this step keep their last values
            checked = monitor is not None and step % tc.eval_every == 0
            checks: dict[str, float] = {}                 # logged on the step they were taken, not repeated
            if checked and monitor is not None and painter is not None:
                with swap_in(model, ema):
                    checks = monitor(painter, bf16=bf16)
            if step % tc.log_every == 0 or step == tc.steps or checked:
                log.write(step, {**shown, **checks, "time": time.perf_counter() - start})
            if bar is not None:
                bar.update(step, shown)
            if on_step is not None:
                on_step(step, logs)
            timeout = bool(tc.time_limit) and time.perf_counter() - begun > tc.time_limit * 60
            final = step == tc.steps or timeout
            improved = checked and tc.best and checks[f"eval/{tc.best}"] < best
            if final:                     # the last checkpoint before the last grid: a crash drawing it loses nothing
                last = save(step)
            if painter is not None and ((tc.sample_every and step % tc.sample_every == 0) or final):
                grid(step)
            if not final and ((tc.ckpt_every and step % tc.ckpt_every == 0) or improved):
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
    ckpt.seal(tmp)                                   # its own manifest: the copy proves itself like the original
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
    if old.get("roles", {}) != new["roles"]:
        changed.append(f"roles ({old.get('roles', {})!r} -> {new['roles']!r})")
    if changed:
        raise ConfigError(f"--resume: {', '.join(changed)} differ from the run being resumed; resume with the "
                          f"same settings (only train {', '.join(sorted(mutable))} may change) or use a new --out")
