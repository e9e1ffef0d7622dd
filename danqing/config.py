"""Frozen dataclass configs <-> JSON, and dotted command-line overrides.

Every config in danqing is a frozen dataclass of plain values (int, float,
bool, str, tuples of those, nested configs).  ``to_dict``/``from_dict`` map
them to JSON; ``override(cfg, {"model.channels": "64"})`` applies
``--model.channels=64`` style flags, parsing each value by its field's type and
refusing unknown names with the list of known ones.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


MAX_SIDE = 8192                  # pictures are at most this many pixels a side (64 MP a channel)


class ConfigError(ValueError):
    """A config value or override the user gave is wrong; the message says how to fix it."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "digits"          # a built-in name (see danqing.data.BUILTINS) or a folder path
    size: int = 32                  # output images are size x size
    channels: int = 3               # 1 = grayscale, 3 = RGB
    fit: Literal["crop", "pad"] = "crop"   # resize the short side and centre-crop, or the long side and pad
    flip: bool = False              # random horizontal flips while training
    max_pixels: int = 64_000_000    # larger images are refused as decompression bombs
    select: str = ""                # regex: keep only the pictures whose caption it matches ("" = all)
    pair: Literal["", "a", "b"] = ""  # one side of a paired source (danqing.data.pairs); "" = an ordinary source
    half: int = 0                   # with pair: 0 = all pairs, 1 / 2 = the first / second half (by name hash)

    def __post_init__(self) -> None:
        _check(bool(self.source), "data.source must be a built-in name or a folder path")
        _check(1 <= self.size <= MAX_SIDE, f"data.size must be between 1 and {MAX_SIDE}, got {self.size}")
        _check(self.channels in (1, 3), f"data.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        _check(self.fit in ("crop", "pad"), f"data.fit must be crop or pad, got {self.fit!r}")
        _check(self.max_pixels >= 1, "data.max_pixels must be at least 1")
        _check(self.pair in ("", "a", "b"), f"data.pair must be a or b (one side of a paired source), "
                                            f"or empty for an ordinary source, got {self.pair!r}")
        _check(self.half in (0, 1, 2), f"data.half must be 0 (all pairs), 1 or 2 (a half of them), got {self.half}")
        _check(not self.half or bool(self.pair), "data.half splits the pairs of a paired source; "
                                                 "set data.pair=a or data.pair=b too")
        try:
            re.compile(self.select)
        except re.error as e:
            raise ConfigError(f"data.select must be a regular expression, got {self.select!r} ({e})") from None


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup: int = 100               # linear warmup steps, then the decay to min_lr_ratio * lr at the last step:
    min_lr_ratio: float = 0.1
    decay: Literal["cosine", "linear"] = "cosine"   # cosine from the warmup on, or constant for the first half
                                                    # of the remaining steps and linear after (CycleGAN sec. 4)
    grad_clip: float = 1.0          # max global grad norm per phase (0 = off)
    ema_decay: float = 0.999        # EMA of weights, ramped up as min(decay, (1 + t) / (10 + t))
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    log_every: int = 10
    sample_every: int = 500         # sample grid PNG (0 = only at the end)
    ckpt_every: int = 500           # checkpoint (0 = only at the end)
    keep: int = 2                   # checkpoints kept on disk
    time_limit: float = 0.0         # minutes; stop early (with a checkpoint) when reached, 0 = none
    sample_n: int = 64
    threads: int = 0                # torch intra-op threads, 0 = torch's default
    eval_every: int = 0             # steps between quality checks on EMA samples (0 = off; see danqing.monitor)
    eval_n: int = 256               # samples per check
    eval_metrics: str = "diversity,kid"
    collapse_alarm: float = 0.6     # warn when sample diversity falls below this fraction of the data's
    best: str = ""                  # keep the checkpoint with the lowest value of this check as `best` ("kid")
    balance: str = ""               # regex; captions equal once its matches are removed form a group, and
                                    # each group is drawn as often as one picture (see feed.group_weights)
    cache_posterior: bool = True    # encode the data once with a frozen autoencoder, not every batch (see
                                    # feed.posterior_cache; off by itself for flipped data or when too big)
    variants: float = 0.5           # chance that a picture with caption variants is trained on one of them
                                    # instead of its caption (see feed.phrasings_at; 0 = captions only)

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"train.steps must be at least 1, got {self.steps}")
        _check(self.batch_size >= 1, f"train.batch_size must be at least 1, got {self.batch_size}")
        _check(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        _check(all(0 <= b < 1 for b in self.betas), f"train.betas must be in [0, 1), got {self.betas}")
        _check(0 <= self.ema_decay < 1, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.bf16 in ("auto", "on", "off"), f"train.bf16 must be auto, on or off, got {self.bf16!r}")
        _check(self.decay in ("cosine", "linear"), f"train.decay must be cosine or linear, got {self.decay!r}")
        _check(0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(min(self.warmup, self.grad_clip, self.weight_decay, self.time_limit, self.sample_every,
                   self.ckpt_every, self.threads, self.eval_every, self.collapse_alarm) >= 0,
               "train settings must not be negative")
        _check(0 <= self.variants <= 1, f"train.variants must be in [0, 1], got {self.variants}")
        _check(self.eval_n >= 2, f"train.eval_n must be at least 2, got {self.eval_n}")
        _check(self.best in ("", "kid"), f"train.best must be kid (or empty), got {self.best!r}")
        _check(self.keep >= 1, "train.keep must be at least 1 (the latest checkpoint)")
        try:
            re.compile(self.balance)
        except re.error as e:
            raise ConfigError(f"train.balance must be a regular expression, got {self.balance!r} ({e})") from None
        _check(self.log_every >= 1 and self.sample_n >= 1, "train.log_every and train.sample_n must be at least 1")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# ---------------------------------------------------------------- JSON round trip

def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build ``cls`` from a dict, checking names and types.  Missing fields take defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {where or cls.__name__} field(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()})


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be an object, got {value!r}")
        return from_dict(tp, value, where=name + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_coerce(args[0] if args else Any, v, name) for v in value]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name} must be an object, got {value!r}")
        return {k: _coerce(args[1] if args else Any, v, f"{name}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, name) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{name} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, name) for a, v in zip(args, value))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, name)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{name} must be {getattr(tp, '__name__', tp)}, got {value!r}")


def save_json(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


# ---------------------------------------------------------------- dotted overrides

def parse_value(tp: Any, text: str, name: str) -> Any:
    """Parse one command-line string by the field's type (``64``, ``0.5``, ``true``, ``1,2,2``)."""
    origin = typing.get_origin(tp)
    if origin is tuple or (isinstance(tp, type) and issubclass(tp, tuple)):
        items = [t for t in text.replace("(", "").replace(")", "").split(",") if t.strip()]
        args = typing.get_args(tp)
        item_tp = args[0] if args else str
        return _coerce(tp, [parse_value(item_tp if (len(args) == 2 and args[1] is Ellipsis) else args[min(i, len(args) - 1)], t.strip(), name)
                            for i, t in enumerate(items)], name)
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ConfigError(f"{name} must be a{'n integer' if tp is int else ' number'}, got {text!r}") from None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if text.lower() in ("none", "null"):
            return None
        return parse_value(next(a for a in typing.get_args(tp) if a is not type(None)), text, name)
    return _coerce(tp, text, name)


def override(cfg: T, overrides: dict[str, str], *, prefix: str = "") -> T:
    """Return ``cfg`` with dotted overrides applied, e.g. ``{"model.channels": "64"}``.

    Keys are relative to ``cfg``; nested configs are reached through dots.
    """
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, str]] = {}
    names = [f.name for f in dataclasses.fields(cfg)]
    for key, text in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(f"unknown setting --{prefix}{key}; {prefix.rstrip('.') or 'this config'} has: "
                              f"{', '.join(names)}")
        if rest:
            if not dataclasses.is_dataclass(getattr(cfg, head)):
                raise ConfigError(f"--{prefix}{key}: {prefix}{head} has no sub-settings")
            nested.setdefault(head, {})[rest] = text
        else:
            if dataclasses.is_dataclass(getattr(cfg, head)):
                raise ConfigError(f"--{prefix}{key} needs a sub-setting, e.g. --{prefix}{head}.NAME=VALUE")
            changes[head] = parse_value(hints[head], text, prefix + head)
    for head, sub in nested.items():
        changes[head] = override(getattr(cfg, head), sub, prefix=f"{prefix}{head}.")
    return dataclasses.replace(cfg, **changes)
