"""The only registry of families: name -> the module that declares the family as ``SPEC`` (a FamilySpec).

Modules are imported when a family is first asked for, so importing the registry imports no family, and
naming the scorer or the style-transfer decoder here does not load them.  A new family is one module with
a ``SPEC`` and one line below.
"""
from __future__ import annotations

import importlib

from ..protocol import FamilySpec

FAMILIES: dict[str, str] = {
    "diffusion": "danqing.families.diffusion",
    "t2i": "danqing.families.t2i",
    "dcgan": "danqing.families.dcgan",
    "stylegan": "danqing.families.stylegan",
    "autoencoder": "danqing.families.autoencoder",
    "pix2pix": "danqing.families.pix2pix",
    "cyclegan": "danqing.families.cyclegan",
    "cut": "danqing.families.cut",
    "scorer": "danqing.metrics.scorer",
    "adain": "danqing.style.adain",
}


class UnknownFamily(KeyError):
    def __str__(self) -> str:
        return f"unknown family {self.args[0]!r}; known: {', '.join(FAMILIES)}"


def spec(name: str) -> FamilySpec:
    """The FamilySpec registered as ``name``."""
    if name not in FAMILIES:
        raise UnknownFamily(name)
    found = importlib.import_module(FAMILIES[name]).SPEC
    if not isinstance(found, FamilySpec) or found.name != name:
        raise TypeError(f"{FAMILIES[name]}.SPEC must be a FamilySpec named {name!r}")
    return found


def specs() -> dict[str, FamilySpec]:
    """Every registered family, in registry order."""
    return {name: spec(name) for name in FAMILIES}


__all__ = ["FAMILIES", "UnknownFamily", "spec", "specs"]
