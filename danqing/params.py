"""The parameters of a painting: what is stored in each PNG, as JSON in its ``danqing`` chunk and as the
``parameters`` text A1111-compatible tools read, and how a PNG's are read back."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .config import ConfigError, from_dict
from .generate import PipelineError
from .version import __version__

A1111 = ("sampler", "steps", "guidance", "strength")  # options that A1111's parameters text names


@dataclass
class Params:
    """Everything needed to paint one picture again; stored as JSON in the PNG's ``danqing`` chunk."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the family's sampling options, all of them
    # sampler, steps, guidance and strength repeat the options of those names: what A1111's text shows, and
    # what pictures painted before options were recorded carry (see ``painted_options``)
    sampler: str = "dpmpp2m"
    steps: int = 20
    guidance: float = 1.0
    size: int = 64
    strength: float = 1.0
    model: str = ""
    weights: str = ""                                    # sha256 prefix of model.safetensors
    precision: str = "fp32"                              # "bf16" or "fp32": part of what makes pixels identical
    batch_seeds: list[int] = field(default_factory=list)  # the seeds drawn together with this one
    init_image: bool = False
    mask: bool = False
    best_of: int = 1                                     # candidates painted for this picture; the best was kept
    score: float | None = None                           # its prompt-consistency score (cosine), when scored
    variation_seed: int | None = None                    # a second seed whose noise is mixed in (variations, ...)
    variation_strength: float = 0.0                      # ... 0 = the seed's own noise, 1 = the variation seed's
    batch_variation_seeds: list[int] = field(default_factory=list)    # per picture of the batch ([] = none)
    batch_strengths: list[float] = field(default_factory=list)
    index: int = -1                                      # position in the batch (-1: where seed is in batch_seeds)
    latent: str = ""                                     # the projected latent painted from (``latent_id``), or ""
    version: str = __version__

    def a1111(self) -> str:
        """The `parameters` text other tools (A1111, civitai, ...) read."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        best = f", Best of: {self.best_of}" if self.best_of > 1 else ""
        if self.variation_seed is not None:
            best += f", Variation seed: {self.variation_seed}, Variation seed strength: {self.variation_strength:.3g}"
        score = f", Prompt score: {self.score:.3f}" if self.score is not None else ""
        score += f", Latent: {self.latent}" if self.latent else ""
        sampled = f"Steps: {self.steps}, Sampler: {self.sampler}, CFG scale: {self.guidance:g}, " \
            if "steps" in self.options or not self.options else ""
        own = "".join(f", {k.replace('_', ' ').capitalize()}: {v}" for k, v in self.options.items() if k not in A1111)
        lines.append(f"{sampled}Seed: {self.seed}, Size: {self.size}x{self.size}, Model hash: {self.weights[:10]}, "
                     f"Model: {self.model}{own}{best}{score}, Version: danqing {self.version}")
        return "\n".join(lines)

    def painted_options(self, names: list[str]) -> dict[str, Any]:
        """The options this picture was painted with, among ``names`` (a PNG from before options were recorded
        has only the A1111 ones; its strength counts only when it started from an input picture)."""
        given = self.options or a1111_options(self.sampler, self.steps, self.guidance, self.strength,
                                              self.init_image)
        return {k: v for k, v in given.items() if k in names}


def a1111_options(sampler: str | None, steps: int | None, guidance: float | None, strength: float | None,
                  from_picture: bool) -> dict[str, Any]:
    """The options A1111's fields name, those that are set (strength only counts for an input picture): what
    PNGs painted before options were recorded, top-level studio fields and old queued jobs give."""
    named = {"sampler": sampler, "steps": steps, "guidance": guidance, "strength": strength if from_picture else None}
    return {k: v for k, v in named.items() if v is not None}


def read_parameters(path: str | Path) -> Params:
    """The parameters stored in a PNG written by danqing."""
    try:
        with Image.open(path) as img:
            text = img.info.get("danqing")
    except (OSError, ValueError) as e:
        raise PipelineError(f"cannot read {path}: {e}") from None
    if not text:
        raise PipelineError(f"{path} carries no danqing parameters (it was not painted by danqing, or its "
                            "metadata was stripped)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise PipelineError(f"{path}'s danqing parameters are not valid JSON ({type(e).__name__}); the PNG's "
                            "metadata was edited or damaged") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}'s danqing parameters are not an object; the PNG's metadata was edited")
    if data.get("kind", "paint") != "paint":
        raise PipelineError(f"{path} was made by `danqing {data['kind']}`, not painted: repeat it with that command "
                            "(its parameters are in the PNG's `danqing` chunk)")
    known = set(Params.__dataclass_fields__)
    try:
        return from_dict(Params, {k: v for k, v in data.items() if k in known}, where="the PNG's ")
    except ConfigError as e:
        raise PipelineError(f"{path}: {e} (its parameters were edited)") from None
