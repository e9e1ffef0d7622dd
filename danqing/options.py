"""A family's sampling options: one frozen dataclass per family, each field made with ``option``.

The dataclass is the single description of a family's knobs (diffusion's steps, sampler and guidance; a
GAN's truncation; a token model's temperature and top-k).  ``danqing paint`` and ``danqing sample`` make a
flag of every field, the studio a control (``describe``), and ``resolve`` checks what a user gave against
it: a name the family does not have, a wrong type or a value out of range is one clear error.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class OptionError(ValueError):
    """An option the model does not have, or a value it does not accept; the message says what to do."""


def option(default: Any = None, help: str = "", *, lo: float | None = None, hi: float | None = None,
           above: float | None = None, choices: Sequence[str] | None = None) -> Any:
    """A field of an Options dataclass.  ``default`` None means "the model's default" (see FamilySpec.defaults);
    ``lo``/``hi`` bound a number inclusively, ``above`` exclusively from below; ``choices`` lists the strings."""
    meta = {"help": help, "lo": lo, "hi": hi, "above": above, "choices": None if choices is None else tuple(choices)}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionInfo:
    """One option as the CLI and the studio show it."""

    name: str
    type: str                      # "int", "float", "str" or "bool"
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    above: float | None = None     # an exclusive lower bound
    choices: tuple[str, ...] | None = None


def _base_type(tp: Any) -> type:
    """int / float / str / bool from an annotation such as ``int | None``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    base = args[0]
    if base not in (int, float, str, bool):
        raise TypeError(f"an option must be int, float, str or bool (optionally | None), not {tp}")
    return base


def describe(options_cls: type, defaults: Any = None) -> list[OptionInfo]:
    """The options of ``options_cls`` with their limits; ``defaults`` (an instance) fills in the model's defaults."""
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        m = f.metadata
        out.append(OptionInfo(f.name, _base_type(hints[f.name]).__name__,
                              getattr(defaults, f.name) if defaults is not None else f.default,
                              m.get("help", ""), m.get("lo"), m.get("hi"), m.get("above"), m.get("choices")))
    return out


def check_value(info: OptionInfo, value: Any) -> Any:
    """``value`` converted to the option's type and checked against its limits (OptionError if it does not fit)."""
    kind = {"int": int, "float": float, "str": str, "bool": bool}[info.type]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not kind:
        raise OptionError(f"{info.name} must be {'a whole number' if kind is int else 'a number' if kind is float else kind.__name__}, "
                          f"got {value!r}")
    if kind in (int, float):
        if kind is float and not math.isfinite(value):
            raise OptionError(f"{info.name} must be a finite number, got {value!r}")
        lo = "" if info.min is None else f"{info.min:g}"
        hi = "" if info.max is None else f"{info.max:g}"
        if (info.min is not None and value < info.min) or (info.max is not None and value > info.max):
            raise OptionError(f"{info.name} must be between {lo or '-inf'} and {hi or 'inf'}, got {value:g}")
        if info.above is not None and value <= info.above:
            raise OptionError(f"{info.name} must be above {info.above:g}{f' and at most {hi}' if hi else ''}, "
                              f"got {value:g}")
    if info.choices is not None and value not in info.choices:
        raise OptionError(f"unknown {info.name} {value!r}; choose one of {', '.join(info.choices)}")
    return value


def resolve(options_cls: type, defaults: Any, given: Mapping[str, Any], *, model: str = "this model") -> Any:
    """The Options to paint with: ``defaults`` (an instance) with the ``given`` values (None = keep the default)
    checked and put in.  A name ``options_cls`` lacks is an error naming the ones it has."""
    infos = {i.name: i for i in describe(options_cls)}
    unknown = [k for k, v in given.items() if k not in infos and v is not None]
    if unknown:
        has = ", ".join(infos) or "none"
        raise OptionError(f"{', '.join(sorted(unknown))} does not apply to {model} (its options: {has})")
    chosen = {k: check_value(infos[k], v) for k, v in given.items() if v is not None}
    return dataclasses.replace(defaults, **chosen)


def as_dict(options: Any) -> dict[str, Any]:
    return dataclasses.asdict(options)
