"""The one generation path: a request (prompt or class, optional input picture and mask, seeds, the family's
options) in, pictures out.

``danqing paint``, ``danqing sample``, the studio and ``danqing eval`` reach it through ``danqing.pipeline``;
the trainer's sample grids and quality checks call it directly with the caption states of their cache.  It
asks the model's ``FamilySpec`` what the model can do (``Facts``, capabilities, ``Options``) and never
probes the model.

Picture i of a request is drawn from ``seeds[i]`` through a generator of its own (optionally mixed with
``variation_seeds[i]``), so a picture does not depend on the batch it is painted in.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from .options import OptionError, resolve
from .protocol import Cond, Denoises, Distance, Facts, FamilySpec, Generates, Projects, Trainable, Translates, generators

TextEncode = Callable[[list[str]], Cond]          # prompts -> text states (B, T, D), mask (B, T), pooled (B, D)
MAX_SIZE_FACTOR = 4                               # a picture's side is at most this times the training size
MAX_OUTPUT_BYTES = 2 << 30                        # the pictures one call returns, as float32, at most


class PipelineError(ValueError):
    """Bad input to the painter; the message says what to do."""


@dataclass
class Request:
    """What to paint: one picture per seed."""

    seeds: Sequence[int]
    prompts: Sequence[str] | None = None       # per picture: its prompt (text model) or class name (class model)
    labels: Sequence[int] | None = None        # per picture: a class id, instead of names
    negative: str = ""                         # negative prompt (text models)
    image: Tensor | None = None                # (1 or n, C, H, W) in [-1, 1]: the input picture
    mask: Tensor | None = None                 # (1 or n, 1, H, W), 1 = paint, 0 = keep ``image``
    size: int | None = None                    # the pictures' side (None: the training size)
    options: Mapping[str, Any] = field(default_factory=dict)    # the family's options by name (absent: default)
    variation_seeds: Sequence[int] = ()        # per picture, a second seed whose noise is mixed in ...
    variation_strengths: Sequence[float] = ()  # ... by this much (0 = the seed's own noise)
    latent: Mapping[str, Tensor] | None = None  # a projected latent (Projects) to paint instead of the seeds' noise;
                                                # with variation seeds, moved towards their pictures

    def rows(self, sl: slice) -> Request:
        """The pictures ``sl`` of this request."""
        def rows(t: Tensor) -> Tensor:
            return t if len(t) == 1 else t[sl]

        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None else rows(t)
        return Request(self.seeds[sl], None if self.prompts is None else self.prompts[sl],
                       None if self.labels is None else self.labels[sl], self.negative, part(self.image),
                       part(self.mask), self.size, self.options, self.variation_seeds[sl],
                       self.variation_strengths[sl],
                       None if self.latent is None else {k: rows(v) for k, v in self.latent.items()})


class Painter:
    """A model ready to paint requests: the spec's facts and options, class names, and a text encoder."""

    def __init__(self, model: torch.nn.Module, spec: FamilySpec, *, class_names: Sequence[str] | None = None,
                 encode_text: TextEncode | None = None, name: str = "this model"):
        self.model, self.spec, self.name = model, spec, name
        self.config = cast(Trainable, model).config
        self.facts = spec.facts(self.config)
        k = self.facts.num_classes
        self.class_names = list(class_names or [str(i) for i in range(k)])[:k] if k else []
        self._encode_text = encode_text
        if not spec.paints:
            raise PipelineError(f"{name} is a {spec.name} model, which does not paint")

    @property
    def takes_text(self) -> bool:
        return self.facts.text is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- checks
    def options(self, given: Mapping[str, Any]) -> Any:
        """The family's Options: the model's defaults with ``given`` put in (PipelineError if one does not fit)."""
        return family_options(self.spec, self.config, given, self.name)

    def check_size(self, size: int) -> None:
        check_size(self.facts, size, self.name)

    def check_count(self, n: int, size: int | None = None) -> None:
        """n pictures in one call: at least one, and few enough that they fit in memory at once (checked
        before anything is allocated for them)."""
        side = self.facts.image_size if size is None else size
        each = self.facts.image_channels * side * side * 4
        if n < 1:
            raise PipelineError(f"paint at least 1 picture, got {n}")
        if n * each > MAX_OUTPUT_BYTES:
            raise PipelineError(f"{n} pictures of {side}x{side} would need {n * each / 2**30:.1f} GiB of memory at "
                                f"once; paint at most {MAX_OUTPUT_BYTES // each} at a time")

    def check_prompts(self, prompts: Sequence[str], negative: str = "") -> None:
        if self.takes_text:
            if any(not p.strip() for p in prompts):
                raise PipelineError("the prompt is empty: describe the picture, e.g. \"a fox face, 3d style\"")
            return
        if negative:
            raise PipelineError(f"the model {self.name} does not read text, so it takes no negative prompt")
        for p in prompts:
            if p and not self.class_names:
                raise PipelineError(f"the model {self.name} is unconditional: leave the prompt empty")
            if p and p not in self.class_names:
                raise PipelineError(f"{self.name} paints the classes {', '.join(self.class_names)}; "
                                    f"{p!r} is not one of them")

    def prompts_for(self, prompt: str, n: int) -> list[str]:
        """n pictures' prompts from one: a class model paints its classes in turn for an empty prompt."""
        if not prompt and self.class_names:
            return [self.class_names[i % len(self.class_names)] for i in range(n)]
        return [prompt] * n

    # ---------------------------------------------------------------- painting
    def conditions(self, req: Request, n: int) -> tuple[Cond | None, Cond | None]:
        """The Cond of the n pictures and of the negative prompt (text models only)."""
        if req.labels is not None:
            if not self.class_names:
                raise PipelineError(f"the model {self.name} has no classes")
            return Cond(labels=torch.as_tensor(list(req.labels), dtype=torch.long)), None
        if req.prompts is None and self.takes_text:
            return None, None                       # no prompt at all: the model's null text (unconditional)
        prompts = list(req.prompts) if req.prompts is not None else [""] * n
        self.check_prompts(prompts, req.negative)
        if self.takes_text:
            if self._encode_text is None:
                raise PipelineError(f"{self.name} paints from text but no text encoder was given")
            texts = self._encode_text(prompts + ([req.negative] * n if req.negative else []))
            return texts.rows(slice(0, n)), texts.rows(slice(n, None)) if req.negative else None
        if self.class_names:
            return Cond(labels=torch.tensor([self.class_names.index(p) if p else i % len(self.class_names)
                                             for i, p in enumerate(prompts)])), None
        return None, None

    def noise(self, req: Request, size: int | None) -> tuple[Tensor, list[torch.Generator]]:
        """The starting noise of the request: each picture's seed, spherically mixed with its variation seed."""
        if not self.spec.can(Generates):
            raise PipelineError(f"{self.name} paints from an input picture, not from noise")
        model = cast(Generates, self.model)
        gens = generators(req.seeds, self.device)
        z = model.noise(len(gens), gens, size)
        if not req.variation_seeds:
            return z, gens
        check_variations(req, len(gens))
        other = model.noise(len(gens), generators(req.variation_seeds, self.device), size)
        return slerp(z, other, torch.tensor(list(req.variation_strengths), device=z.device)), gens

    def __call__(self, req: Request, *, callback: Callable[..., None] | None = None, bf16: bool = False,
                 batch_size: int | None = None) -> Tensor:
        """The pictures of ``req``, (n, C, H, W) in [-1, 1], painted ``batch_size`` at a time (None: all at once)."""
        n = len(req.seeds)
        step = batch_size or max(1, n)
        options = self.options(req.options)
        size = req.size if req.size is not None else self.facts.image_size
        self.check_size(size)
        self.check_count(n, size)
        if (req.image is not None or req.mask is not None) and not (self.spec.can(Denoises)
                                                                    or self.spec.can(Translates)):
            raise PipelineError(f"image-to-image and inpainting need a diffusion model; {self.name} is not one")
        if req.mask is not None and req.image is None:
            raise PipelineError("inpainting paints into a picture: give the picture together with the mask")
        if req.latent is not None:
            self.check_latent(req.latent, n)
        with torch.no_grad():
            return torch.cat([self._paint(req.rows(slice(i, i + step)), options, size, callback, bf16)
                              for i in range(0, n, step)])

    def _paint(self, req: Request, options: Any, size: int, callback: Callable[..., None] | None,
               bf16: bool) -> Tensor:
        """One batch.  Only the model runs under bf16 autocast: the prompts' states and the noise are the
        fp32 ones whatever the precision."""
        n = len(req.seeds)
        cond, negative = self.conditions(req, n)
        if req.image is not None:
            cond = cond or Cond()
            cond.image = req.image.expand(n, -1, -1, -1).to(self.device)
            cond.mask = None if req.mask is None else req.mask.expand(n, -1, -1, -1).to(self.device)
        cond = None if cond is None else cond.to(self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        if self.spec.can(Translates) and not self.spec.can(Generates):
            if cond is None or cond.image is None:
                raise PipelineError(f"{self.name} translates a picture: give the input picture")
            with autocast:
                return cast(Translates, self.model).translate(cond, generator=generators(req.seeds, self.device),
                                                              options=options)
        if req.latent is not None:
            return self._render(req, cond, options)
        noise, gens = self.noise(req, size)
        with autocast:
            if self.spec.can(Denoises):
                return cast(Denoises, self.model).sample(
                    n, cond, generator=gens, noise=noise, options=options,
                    negative=None if negative is None else negative.to(self.device), callback=callback)
            return cast(Generates, self.model).sample(n, cond, generator=gens, noise=noise, options=options)

    def project(self, req: Request, *, steps: int = 200, space: str = "", distance: Distance | None = None,
                callback: Callable[..., None] | None = None) -> dict[str, Tensor]:
        """The latent of the pictures ``req.image`` (n, C, S, S) in [-1, 1] at the model's size, under the
        request's prompts or classes; the search's randomness comes from the first seed."""
        if not self.spec.can(Projects):
            raise PipelineError(f"{self.name} is a {self.spec.name} model, which cannot project pictures")
        model = cast(Projects, self.model)
        if req.image is None:
            raise PipelineError("give the pictures to project")
        side = self.facts.image_size
        if tuple(req.image.shape[1:]) != (self.facts.image_channels, side, side):
            raise PipelineError(f"{self.name} projects {self.facts.image_channels}-channel {side}x{side} pictures, "
                                f"got {tuple(req.image.shape[1:])}")
        if space and space not in model.spaces:
            raise PipelineError(f"{self.name} projects into {' or '.join(model.spaces)}, not {space!r}")
        if not 1 <= steps <= 10_000:
            raise PipelineError(f"projection takes 1 to 10000 steps, got {steps}")
        n = len(req.image)
        self.check_count(n)
        cond, _ = self.conditions(req, n)
        with torch.enable_grad():
            return model.project(req.image.to(self.device), None if cond is None else cond.to(self.device),
                                 steps=steps, space=space, distance=distance,
                                 generator=torch.Generator(self.device).manual_seed(int(req.seeds[0])),
                                 callback=callback)

    def check_latent(self, latent: Mapping[str, Tensor], n: int) -> None:
        if not self.spec.can(Projects):
            raise PipelineError(f"{self.name} is a {self.spec.name} model, which does not paint projected latents")
        rows = sorted({len(v) for v in latent.values()})
        if len(rows) != 1 or rows[0] not in (1, n):
            raise PipelineError(f"the latent holds {rows or 'no'} pictures; paint 1 or as many pictures as it holds")

    def _render(self, req: Request, cond: Cond | None, options: Any) -> Tensor:
        """A projected latent: its pictures, each moved towards its variation seed's by its strength."""
        assert req.latent is not None
        n = len(req.seeds)
        latent = {k: v.expand(n, *v.shape[1:]) for k, v in req.latent.items()}
        toward = strength = None
        if req.variation_seeds:
            check_variations(req, n)
            model = cast(Generates, self.model)
            toward = model.noise(n, generators(req.variation_seeds, self.device))
            strength = torch.tensor(list(req.variation_strengths), device=self.device)
        try:
            return cast(Projects, self.model).render(latent, cond, options=options, toward=toward, strength=strength)
        except ValueError as e:
            raise PipelineError(str(e)) from None


def check_variations(req: Request, n: int) -> None:
    if len(req.variation_seeds) != n or len(req.variation_strengths) != n:
        raise PipelineError("give one variation seed and one strength per picture")
    if any(not 0 <= t <= 1 for t in req.variation_strengths):
        raise PipelineError("variation strength must be in [0, 1]")


def family_options(spec: FamilySpec, config: Any, given: Mapping[str, Any], name: str = "this model") -> Any:
    """The family's Options for a model built from ``config``: its defaults with ``given`` checked and put in."""
    try:
        return resolve(spec.Options, spec.default_options(config), given, model=f"the {spec.name} model {name}")
    except OptionError as e:
        raise PipelineError(str(e)) from None


def check_size(facts: Facts, size: int, name: str = "this model") -> None:
    """A picture side the model can paint: its training size, or a multiple of its stride up to
    MAX_SIZE_FACTOR times the training size."""
    f = facts
    if isinstance(size, bool) or not isinstance(size, int):
        raise PipelineError(f"size must be a whole number of pixels, got {size!r}")
    if not f.size_stride:
        if size != f.image_size:
            raise PipelineError(f"{name} paints {f.image_size}x{f.image_size} pictures only; leave the size "
                                f"out or give {f.image_size}")
        return
    top = MAX_SIZE_FACTOR * f.image_size
    if size % f.size_stride or not f.size_stride <= size <= top:
        raise PipelineError(f"size must be a multiple of {f.size_stride} between {f.size_stride} and {top} for "
                            f"{name} (trained at {f.image_size}), got {size}")


def sizes(facts: Facts) -> list[int]:
    """The picture sides worth offering for a model: its training size, or the multiples of its stride from
    half to twice that size (``check_size`` accepts up to MAX_SIZE_FACTOR times)."""
    size = facts.image_size
    if not facts.size_stride:
        return [size]
    return [s for s in range(facts.size_stride, 2 * size + 1, facts.size_stride) if s >= size / 2]


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of noise a and b (n, ...) by t (n,), per row: keeps the norm a Gaussian sample
    has (a straight line between two would shrink it towards t = 0.5).  t = 0 gives a, t = 1 gives b."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (F.normalize(fa, dim=1) * F.normalize(fb, dim=1)).sum(1).clamp(-1, 1)
    omega = torch.arccos(cos)[:, None]
    so = torch.sin(omega)
    t = t.double()[:, None]
    near = so.abs() < 1e-6                                           # (anti)parallel: fall back to a straight line
    wa = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / torch.where(near, 1, so))
    wb = torch.where(near, t, torch.sin(t * omega) / torch.where(near, 1, so))
    return (wa * fa + wb * fb).to(a.dtype).view_as(a)


__all__ = ["Painter", "PipelineError", "Request", "check_size", "family_options", "sizes", "slerp"]
