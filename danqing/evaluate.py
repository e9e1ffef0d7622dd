"""``danqing eval``: generated pictures (a folder, or a model painting picture i with seed i) against reference
data loaded in RGB at their size.  Data set features are cached in ``cache_root()/features/``.  Every
:class:`Row` names its n, extractor and resize mode; docs/evaluation.md says what each metric measures.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DataConfig
from .data import ImageDataset, cache_root, load_dataset
from .fileio import atomic_write
from .metrics import (
    EFFICIENTNET_RESIZE,
    INCEPTION_RESIZE,
    EfficientNetLite0,
    Inception,
    MetricsError,
    VGGFeatures,
    bootstrap,
    classifier_score,
    density_coverage,
    diversity_ratio,
    extract,
    fid,
    fid_low_rank,
    kid,
    memorisation,
    near_duplicate_rate,
    precision_recall,
)
from .pixels import from_uint8, to_uint8
from .progress import counting_bar

__all__ = ["METRICS", "Report", "Row", "evaluate", "features", "folder_pictures", "model_pictures"]

METRICS = ("fid", "kid", "pr", "clip", "diversity", "memorisation", "isc")
BATCH = 50                  # pictures painted or passed through a network at a time
DEFAULT_N = 1000            # pictures a model paints without -n
PAIRS = 16                  # (sample, training picture) pairs in the memorisation grid
ISC = "classifier score (EfficientNet-Lite0), not the Inception Score"
COLUMNS = ("metric", "value", "95% CI / std", "n", "extractor", "resize", "note")


@dataclass
class Row:
    metric: str
    value: float
    n: int                                          # pictures the number comes from
    extractor: str
    resize: str
    interval: tuple[float, float] | None = None     # 95% bootstrap interval
    std: float | None = None
    note: str = ""

    def cells(self) -> tuple[str, ...]:
        spread = ("" if self.std is None else f"± {self.std:.3g}") if self.interval is None else \
            f"[{self.interval[0]:.4g}, {self.interval[1]:.4g}]"
        return self.metric, f"{self.value:.4g}", spread, str(self.n), self.extractor, self.resize, self.note


@dataclass
class Pictures:
    images: np.ndarray                      # uint8 (N, 3, H, W)
    prompts: list[str] | None
    source: str
    key: str | None                         # feature-cache key; None for pictures painted now
    labels: np.ndarray | None = None        # (N,) the classes a conditional model was asked for


@dataclass
class Report:
    generated: str
    reference: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, Any] = field(default_factory=dict)    # data for the report's pictures


def parse_metrics(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise MetricsError(f"unknown metric {', '.join(unknown) or repr(text)}; choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names))


def _need(metric: str, have: int, what: str) -> None:
    """Refuse a metric its pictures are too few for, naming the metric and the count."""
    least = {"pr": 6, "isc": 10, "clip": 1}.get(metric, 2)
    why = " (more than k: k=3 for precision/recall, k=5 for density/coverage)" if metric == "pr" else ""
    if have < least:
        raise MetricsError(f"{metric} needs at least {least} {what} pictures{why}, got {have}")


def _batches(images: np.ndarray):
    for i in range(0, len(images), BATCH):
        yield torch.from_numpy(np.array(images[i:i + BATCH]))          # a copy: caches are read-only maps


def features(data: ImageDataset | np.ndarray, extractor: torch.nn.Module, key: str | None = None, *,
             progress: bool = False) -> np.ndarray:
    """Features (N, D) of a data set or of uint8 (N, 3, H, W) pictures, cached on disk under ``key`` (a data
    set's fingerprint by default; pictures without a key are not cached).  A damaged cache file is recomputed."""
    images = data.images if isinstance(data, ImageDataset) else data
    key = data.fingerprint if key is None and isinstance(data, ImageDataset) else key
    path = None if key is None else cache_root() / "features" / f"{key}-{extractor.name}.npy"
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(images), extractor.dim):
                return cached
        except (OSError, ValueError):
            pass                                                      # damaged: compute again
    out = extract(extractor, _batches(images), progress=progress, total=len(images))
    if path is not None:
        atomic_write(path, lambda f: np.save(f, out))
    return out


# ---------------------------------------------------------------- the generated pictures

def folder_pictures(folder: str | Path, *, n: int | None = None, prompts: list[str] | None = None,
                    progress: bool = True) -> tuple[Pictures, list[str]]:
    """A folder's pictures at the size of the first readable one (its short side), with prompts from their
    PNG metadata, else ``prompts`` (one per picture, sorted file order), else NAME.txt/metadata.jsonl captions."""
    from .data.sources import scan_folder  # the data layer's files, in its order
    folder, notes, size, found = Path(folder), [], 0, []
    for rel in scan_folder(folder).images:
        try:
            with Image.open(folder / rel) as img:
                img.load()
                size, meta = size or min(img.size), img.info.get("danqing")
            found.append(json.loads(meta).get("prompt") if meta else None)
        except Exception:  # noqa: BLE001, S112 - the data layer skips (and counts) what does not decode
            continue
    ds = load_dataset(DataConfig(source=str(folder), size=size or 64, channels=3), progress=progress)
    found = found if len(found) == len(ds) and all(isinstance(p, str) for p in found) else None
    if found is not None and prompts is not None:
        notes.append("--prompts ignored: the pictures carry their prompts in their PNG metadata")
    elif prompts is not None:
        if len(prompts) != len(ds):
            raise MetricsError(f"--prompts has {len(prompts)} prompts but {folder} holds {len(ds)} readable pictures;"
                               " give one prompt per picture, in the order of the sorted file names")
        found = prompts
    elif ds.captions:
        found = ds.captions
    images, key = ds.images, ds.fingerprint
    if n is not None and n < len(ds):
        images, key, found = images[:n], f"{ds.fingerprint}-first{n}", found and found[:n]
    return Pictures(images, found, f"{ds.source}, {len(images)} pictures at {ds.images.shape[-1]}px", key), notes


def model_pictures(pipe, n: int, prompts: list[str] | None, reference: ImageDataset, *,
                   progress: bool = True) -> tuple[Pictures, list[str]]:
    """n pictures from a loaded painter, picture i with seed i and prompt i (a text model: ``prompts`` cycled,
    by default the reference's captions), class i mod K (a class model) or no condition."""
    from .generate import Request
    from .hardware import cpu_has_bf16
    notes, out = [], []
    if pipe.takes_text and prompts is None:
        prompts = [c for c in reference.captions or [] if c]
        if not prompts:
            raise MetricsError(f"{pipe.name} paints from text: give --prompts FILE (one prompt per line), "
                               "or a reference with captions")
        notes.append(f"prompts: the reference's {len(prompts)} captions, cycled (choose them with --prompts FILE)")
    elif prompts is not None and not pipe.takes_text:
        raise MetricsError(f"--prompts: the model {pipe.name} does not read prompts; leave --prompts out")
    prompts = prompts and [prompts[i % len(prompts)] for i in range(n)]
    classes = len(pipe.class_names)
    with counting_bar(n, progress, "painting") as tick:
        for start in range(0, n, BATCH):
            seeds = list(range(start, min(n, start + BATCH)))
            req = Request(seeds, [prompts[i] for i in seeds] if prompts else None,
                          [i % classes for i in seeds] if classes and not prompts else None)
            out.append(to_uint8(pipe.painter(req, bf16=cpu_has_bf16())).numpy())
            tick(len(seeds))
    images = np.concatenate(out).repeat(3 if out[0].shape[1] == 1 else 1, axis=1)        # grayscale -> RGB
    source = f"model {pipe.name}: {n} pictures, seeds 0..{n - 1}, default settings"
    labels = np.arange(n) % classes if classes and not prompts else None
    return Pictures(images, prompts, source, None, labels), notes


# ---------------------------------------------------------------- metrics

def _quietly(fn, *args, **kw):
    """fn(*args, **kw) and the warnings it raised (SmallSampleWarning: too few samples) joined into a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    return out, "; ".join(str(w.message) for w in caught)


def inception_rows(metric: str, gen: np.ndarray, ref: np.ndarray, rounds: int,
                   where: tuple[str, str] = (Inception.name, INCEPTION_RESIZE)) -> list[Row]:
    """The rows of fid, kid, pr or diversity from features (Inception unless ``where`` names another space)."""
    n = min(len(gen), len(ref))
    if metric == "fid":
        value, note = _quietly(fid, gen, ref)
        score = fid_low_rank if max(len(gen), len(ref)) < gen.shape[1] else (lambda a, b: _quietly(fid, a, b)[0])
        interval = bootstrap(score, gen, ref, rounds=rounds) if rounds > 0 else None
        return [Row("FID", value, n, *where, interval=interval, note=note)]
    if metric == "kid":                         # subsets of half the pictures when there are few, so they differ
        m = min(1000, max(2, n // 2))
        (mean, std), note = _quietly(kid, gen, ref, subset_size=m)
        return [Row("KID", mean, n, *where, std=std, note=f"std over 100 subsets of {m}" + (note and f"; {note}"))]
    if metric == "pr":
        (p, r), (d, c) = precision_recall(ref, gen, k=3), density_coverage(ref, gen, k=5)
        return [Row("precision (k=3)", p, n, *where), Row("recall (k=3)", r, n, *where),
                Row("density (k=5)", d, n, *where, note="about 1 when the distributions match"),
                Row("coverage (k=5)", c, n, *where)]
    rate, threshold = near_duplicate_rate(gen, ref)
    return [Row("diversity ratio", diversity_ratio(gen, ref), n, *where,
                note="mean pairwise distance, generated / reference: about 1 matches, far below 1 is mode collapse"),
            Row("near-duplicate rate", rate, len(gen), *where,
                note=f"closer to another sample than {threshold:.4g}, the 1% quantile of reference nearest neighbours")]


def memorisation_rows(gen: np.ndarray, train: np.ndarray, gen_images: np.ndarray, train_images: np.ndarray,
                      plots: dict[str, Any], where: tuple[str, str] = (Inception.name, INCEPTION_RESIZE)) -> list[Row]:
    """Copy rate and threshold; ``plots`` gets the distances and a grid of the closest (sample, training) pairs."""
    from .images import grid_uint8
    _need("memorisation", len(train), "training")
    m = memorisation(gen, train)
    idx = m.closest(PAIRS)
    tiles = np.concatenate([gen_images[idx], train_images[m.index[idx]]], axis=-1)    # (k, 3, H, 2W): the pairs
    scale = max(1, 64 // tiles.shape[-2])                             # small pictures drawn larger
    tiles = tiles.repeat(scale, axis=-1).repeat(scale, axis=-2).transpose(0, 2, 3, 1)
    plots.update(distances=m.distance, threshold=m.threshold, pairs=grid_uint8(tiles, nrow=min(4, len(idx)), pad=6))
    return [Row("copy rate", m.rate, len(gen), *where,
                note=f"{int(m.copies.sum())} of {len(gen)} closer to a training picture than the threshold"),
            Row("copy threshold", m.threshold, len(train), *where,
                note=f"1% quantile of the {len(train)} training pictures' distances to their nearest other one")]


def coverage_rows(pics: Pictures, ref: ImageDataset) -> list[Row]:
    """Which of the reference's classes the pictures show, judged by a CNN trained on the reference."""
    from .metrics import class_coverage
    from .metrics.judge import load_or_train_judge
    judge, acc = load_or_train_judge(ref)
    pred = judge.predict(torch.from_numpy(np.array(pics.images))).numpy()
    k = int(np.asarray(ref.labels).max()) + 1
    share, per = class_coverage(pred, k, min_share=0.2 / k)
    where = (f"class judge ({acc:.1%} held-out accuracy)", "none")
    rows = [Row("class coverage", share, len(pred), *where, note="classes drawn at least a fifth as often as "
                f"uniform; least {per.min():.1%}, most {per.max():.1%}")]
    if pics.labels is not None:
        rows.append(Row("class accuracy", float((pred == pics.labels).mean()), len(pred), *where,
                        note="share of pictures judged to be the class they were asked for"))
    return rows


def isc_rows(images: np.ndarray) -> list[Row]:
    net = EfficientNetLite0()
    mean, std = classifier_score(np.concatenate([net.probs(b).double().numpy() for b in _batches(images)]))
    return [Row(ISC, mean, len(images), net.name, EFFICIENTNET_RESIZE, std=std,
                note="exp E KL(p(y|x) || p(y)), std over 10 splits; not comparable with published IS")]


def clip_rows(pics: Pictures, source: str | None, plots: dict[str, Any]) -> list[Row]:
    """Mean cosine of each picture with its prompt, and R@1/R@5 of its prompt among the set's unique prompts."""
    from .checkpoint import CheckpointError, load
    from .families import spec
    from .metrics.scorer import facts, retrieval_at
    from .pipeline import SCORER, PipelineError, bundled, resolve_model
    from .protocol import Cond, Scores
    from .text import text_encoder_for
    how = "give --scorer RUN_FOLDER, a run of `danqing train scorer --preset emoji --data emoji`"
    if source is None and SCORER not in bundled("scorer"):
        raise MetricsError(f"clip needs a prompt-consistency scorer and none is bundled; {how}")
    try:
        scorer, scorer_cfg = load(folder := resolve_model(source or SCORER, kind="scorer"))
    except (PipelineError, CheckpointError) as e:
        raise MetricsError(f"clip needs a prompt-consistency scorer: {e}; {how}") from None
    if not spec(scorer_cfg["family"]).can(Scores):
        raise MetricsError(f"--scorer {source} holds a {type(scorer).__name__}, not a prompt-consistency scorer; {how}")
    c = scorer.config
    encoder = text_encoder_for(facts(c).text)
    unique = sorted(set(pics.prompts))
    pooled = encoder.encode(unique).pooled.half().float()             # fp16, as the training cache stores them
    index = {p: i for i, p in enumerate(unique)}
    truth, sims = torch.tensor([index[p] for p in pics.prompts]), []
    for b in _batches(pics.images):
        x = from_uint8(b)
        x = x.mean(1, keepdim=True) if c.image_channels == 1 else x
        if x.shape[-1] != c.image_size:                               # as Scorer.score resizes
            x = F.interpolate(x, size=c.image_size, mode="bilinear", antialias=True, align_corners=False)
        sims.append(scorer.similarity(x, Cond(pooled=pooled)))
    sim = torch.cat(sims)
    plots["scores"] = cos = sim.gather(1, truth[:, None])[:, 0].double().numpy()
    r, k = retrieval_at(sim, truth), len(unique)
    where = (f"scorer {folder.name}", f"bilinear-antialias to {c.image_size}")
    among = f"among the {k} unique prompts" + ("; 1 by construction with 5 or fewer" if k <= 5 else "")
    return [Row("prompt consistency (cosine)", float(cos.mean()), len(cos), *where, std=float(cos.std())),
            Row("R@1 prompt retrieval", r[1], len(cos), *where, note=f"among the {k} unique prompts"),
            Row("R@5 prompt retrieval", r[5], len(cos), *where, note=among)]


# ---------------------------------------------------------------- the whole evaluation

def evaluate(generated: str, reference: str, metrics: str | list[str], *, prompts_file: str | None = None,
             train: str | None = None, n: int | None = None, scorer: str | None = None, rounds: int = 10,
             space: str = "inception", progress: bool = True) -> Report:
    """Every requested metric of ``generated`` (folder or model) against ``reference``, as a :class:`Report`."""
    from .checkpoint import CheckpointError, resolve
    from .pipeline import PipelineError, load
    metrics = parse_metrics(metrics) if isinstance(metrics, str) else metrics
    if (n is not None and n < 1) or rounds < 0:
        raise MetricsError("-n must be at least 1, and --bootstrap 0 (no interval) or more rounds")
    prompts = None
    if prompts_file:
        try:
            prompts = [t.strip() for t in Path(prompts_file).read_text(encoding="utf-8-sig").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise MetricsError(f"cannot read --prompts {prompts_file}: {e}") from None
        if not prompts:
            raise MetricsError(f"--prompts {prompts_file} holds no prompts; write one prompt per line")

    def dataset(source: str, size: int) -> ImageDataset:
        return load_dataset(DataConfig(source=source, size=size, channels=3), progress=progress)

    try:                        # a run or checkpoint folder, or not a folder at all (a bundled model's name)
        as_model = not Path(generated).is_dir() or bool(resolve(generated))
    except CheckpointError:
        as_model = False
    if as_model:
        try:
            pipe = load(generated)
        except PipelineError as e:
            raise MetricsError(f"--generated {generated} is neither a folder of pictures nor a painter: {e}") from None
        if "clip" in metrics and not pipe.takes_text:
            raise MetricsError(f"clip needs prompts, and the model {pipe.name} does not paint from text")
        train, size = train or (pipe.config.get("data") or {}).get("source"), pipe.painter.facts.image_size
        ref = dataset(reference, size)
        pics, notes = model_pictures(pipe, n or DEFAULT_N, prompts, ref, progress=progress)
    else:
        pics, notes = folder_pictures(generated, n=n, prompts=prompts, progress=progress)
        if "clip" in metrics and not pics.prompts:
            raise MetricsError(f"clip needs each picture's prompt: {generated} has no danqing PNG metadata or "
                               "captions; give --prompts FILE (one prompt per picture, in sorted file order)")
        size = pics.images.shape[-1]
        ref = dataset(reference, size)
    if "memorisation" in metrics and not train:
        raise MetricsError("memorisation needs --train DATASET, the data the pictures' model was trained on")
    report = Report(pics.source, ref.source, notes=notes)
    report.notes.append(f"reference loaded at {size}x{size} in RGB (centre-cropped), the generated pictures' size")
    for what, images in (("generated", pics.images), ("reference", ref.images)):
        probe = np.asarray(images[:256])                              # grayscale: all channels equal
        if (probe[:, 0] == probe[:, 1]).all() and (probe[:, 1] == probe[:, 2]).all():
            report.notes.append(f"{what} pictures are grayscale: repeated to 3 channels for the networks")
    report.info = {"metrics": metrics, "n_generated": len(pics.images), "n_reference": len(ref),
                   "bootstrap_rounds": rounds, "train": train}
    for metric in metrics:                                            # too few: say so before any network runs
        _need(metric, len(pics.images), "generated")
        if metric in ("fid", "kid", "pr", "diversity"):
            _need(metric, len(ref), "reference")
    if space not in ("inception", "vgg19"):
        raise MetricsError(f"--features must be inception or vgg19, got {space!r}")
    knn = {"pr", "diversity", "memorisation"} & set(metrics)
    need = {"fid", "kid"} & set(metrics) or (knn and space == "inception")
    inception = Inception() if need else None
    net = VGGFeatures() if knn and space == "vgg19" else inception         # the space of the k-NN metrics
    where = (net.name, getattr(net, "resize", INCEPTION_RESIZE)) if net is not None else None
    gen_f = features(pics.images, inception, pics.key, progress=progress) if inception else None
    ref_f = features(ref, inception, progress=progress) if inception and {"fid", "kid"} & set(metrics) else None
    gen_k = gen_f if net is inception else features(pics.images, net, pics.key, progress=progress) if net else None
    ref_k = ref_f if net is inception and ref_f is not None else \
        features(ref, net, progress=progress) if net and {"pr", "diversity"} & set(metrics) else None
    for metric in metrics:
        if metric in ("fid", "kid"):
            report.rows += inception_rows(metric, gen_f, ref_f, rounds)
        elif metric in ("pr", "diversity"):
            report.rows += inception_rows(metric, gen_k, ref_k, rounds, where)
            if metric == "diversity" and ref.labels is not None and int(np.asarray(ref.labels).max()) > 0:
                report.rows += coverage_rows(pics, ref)
        elif metric == "memorisation":
            train_ds = dataset(train, size)
            report.info["train"] = train_ds.source
            report.rows += memorisation_rows(gen_k, features(train_ds, net, progress=progress), pics.images,
                                             train_ds.images, report.plots, where)
        elif metric == "clip":
            report.rows += clip_rows(pics, scorer, report.plots)
        else:
            report.rows += isc_rows(pics.images)
    return report
