"""The one protocol every danqing family speaks.

A family module declares itself once, as ``SPEC = FamilySpec(...)``: its config
and model classes, presets, training defaults, sampling options, and the
capabilities its model has.  The rest of the package (trainer, feed, pipeline,
CLI, studio, evaluation) reads the spec; it never probes a model with
``hasattr``.  A capability is a small typed protocol below (``Generates``,
``Denoises``, ``Encoder`` ...); the conformance tests check that a model class
really implements every capability its spec declares.

Training: a model lists its ``phases`` and computes ``loss(batch, phase, step, carry)``.
It never owns optimisers, data loaders or devices: the trainer (``danqing.train``)
does.  A GAN is a family with two phases (``d`` and ``g``) that optimise two
sub-modules; a lazily regularised GAN adds a third that runs every k steps with
the optimiser adjusted for the interval (StyleGAN2, Karras et al. 2020, sec. 3.1
and appendix B).  ``carry`` is a dict shared by the phases of one step (an image
pool, a forward pass two losses use) and emptied before the next step.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


# ---------------------------------------------------------------- training phases

@dataclass(frozen=True)
class Optim:
    """A phase's optimiser settings, relative to the run's ``train.*`` (AdamW; the run's warmup + cosine schedule).

    lr_mult:     the run's learning rate times this (TTUR, Heusel et al. 2017: a discriminator at 4x the
                 generator's rate; 0 freezes the phase's module for the run).
    betas:       the Adam betas (None: the run's ``train.betas``).
    beta_power:  raise the betas to this power.  With ``lr_mult`` = ``beta_power`` = k / (k + 1) this is
                 StyleGAN2's adjustment for a loss whose regulariser runs every k steps (Karras et al. 2020,
                 appendix B: lambda' = c lambda, beta' = beta ** c).
    weight_decay: AdamW's decoupled weight decay (None: the run's ``train.weight_decay``).
    """

    lr_mult: float = 1.0
    betas: tuple[float, float] | None = None
    beta_power: float = 1.0
    weight_decay: float | None = None


def lazy(every: int) -> Optim:
    """The optimiser of a module whose regulariser runs every ``every`` steps (StyleGAN2 appendix B)."""
    c = every / (every + 1)
    return Optim(lr_mult=c, beta_power=c)


@dataclass(frozen=True)
class Phase:
    """One optimisation step of a training iteration.

    name:   passed to ``loss``.
    module: attribute name of the sub-module whose parameters this phase
            optimises ("" = the whole model).  Phases naming the same module
            share one optimiser (e.g. ``d`` and the lazy ``d_reg``), so they must
            give it the same ``optim``.
    every:  run this phase on steps where ``step % every == 0``.
    optim:  the module's optimiser settings.
    """

    name: str
    module: str = ""
    every: int = 1
    optim: Optim = Optim()


# ---------------------------------------------------------------- conditions and batches

@dataclass
class Cond:
    """Conditioning for sampling or training.  Every field is optional and
    batched along dim 0; families read the fields they understand."""

    labels: Tensor | None = None     # (B,) int64 class ids; a family's null id means "unconditional"
    text: Tensor | None = None       # (B, T, D) per-token text-encoder states (cross-attention keys/values)
    text_mask: Tensor | None = None  # (B, T) bool, True for real tokens
    pooled: Tensor | None = None     # (B, D) pooled sentence embedding
    image: Tensor | None = None      # (B, C, H, W) in [-1, 1]: an input picture (img2img, translation, a sketch)
    mask: Tensor | None = None       # (B, 1, H, W), 1 = paint, 0 = keep ``image`` (inpainting)

    def cat(self, other: Cond) -> Cond:
        """Concatenate two conditions along the batch (used by classifier-free guidance)."""
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if (a is None) != (b is None):
                raise ValueError(f"cannot concatenate conditions: field {f.name!r} is set in only one of them")
            out[f.name] = None if a is None else torch.cat([a, b])
        return Cond(**out)

    def rows(self, index: slice | Tensor) -> Cond:
        """The rows ``index`` of every set field."""
        return Cond(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                       for f in fields(self)})

    def to(self, device: torch.device | str) -> Cond:
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if getattr(self, f.name) is not None})


@dataclass
class Batch:
    """A training batch.  ``images`` are float in [-1, 1], shape (B, C, H, W)."""

    images: Tensor
    labels: Tensor | None = None        # (B,) int64, or None for unlabelled data
    captions: list[str] | None = None
    cond: Cond | None = None            # precomputed conditioning, e.g. caption embeddings
    posterior: Tensor | None = None     # precomputed output of a frozen encoder (``Encoder.encode_stats``)
    roles: dict[str, Batch] = field(default_factory=dict)   # the batches of the run's other data sets, by role

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.images.to(device), None if self.labels is None else self.labels.to(device), self.captions,
                     None if self.cond is None else self.cond.to(device),
                     None if self.posterior is None else self.posterior.to(device),
                     {k: b.to(device) for k, b in self.roles.items()})


@dataclass(frozen=True)
class DataRole:
    """A data set a family trains on beside the run's main one (``--data``).

    paired: drawn with the main data's indices (the two folders hold the same pictures' two sides, matched by
            file name, and get the same flips); otherwise drawn in an order of its own.  Either way the order is
            a pure function of (seed, step), so resuming stays exact.
    """

    name: str
    help: str = ""
    paired: bool = False
    default: str = ""                 # a built-in source used when the run names none ("" = required)


# ---------------------------------------------------------------- capabilities

@runtime_checkable
class Trainable(Protocol):
    """What the trainer needs: the phases of a step and each phase's loss."""

    config: Any

    def phases(self) -> list[Phase]: ...

    def loss(self, batch: Batch, phase: str, step: int = 0, carry: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Return a dict of scalars; ``"loss"`` is optimised, the rest are logged."""
        ...


@runtime_checkable
class Generates(Protocol):
    """Paints from noise it can hand out (its latent space): z for a GAN or a VAE, x_T for diffusion."""

    def noise(self, n: int, generator: Generators = None, size: int | None = None) -> Tensor:
        """The standard normal noise ``sample`` starts from for n pictures."""
        ...

    def sample(self, n: int, cond: Cond | None = None, *, generator: Generators = None, noise: Tensor | None = None,
               options: Any = None, negative: Cond | None = None, callback: Callable[..., None] | None = None) -> Tensor:
        """``n`` pictures in [-1, 1], (n, C, H, W); from ``noise`` when given, else from ``generator``.
        ``options`` is the family's Options (None: its defaults)."""
        ...


@runtime_checkable
class Denoises(Generates, Protocol):
    """Sampled by a diffusion sampler (steps, sampler, guidance) from a denoiser D(x; sigma); takes an input
    picture (image to image) and a mask (inpainting) in its ``Cond``, and a negative condition."""

    def denoise(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor: ...

    def null_cond(self, n: int) -> Cond: ...

    def preview(self, x: Tensor) -> Tensor:
        """Pictures (n, C, H, W) of a sampler's current estimate (decoded from latents for latent models)."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """A latent space: pictures (B, C, H, W) <-> latents (B, latent_channels, H/factor, W/factor).

    ``encode_stats`` is deterministic and may be computed once for a data set and cached; ``from_stats`` turns
    it into latents (a draw when ``sample``).  A KL autoencoder's stats are its posterior's mean and log-variance.
    """

    factor: int
    latent_channels: int

    def encode_stats(self, x: Tensor) -> Tensor: ...

    def from_stats(self, stats: Tensor, generator: Generators = None, *, sample: bool = False) -> Tensor: ...

    def encode(self, x: Tensor, generator: Generators = None, *, sample: bool = False) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class FrozenEncoding(Protocol):
    """May run a frozen encoder on the pictures before its loss: the trainer may compute ``frozen_stats`` once for
    the whole data set and hand each batch its rows as ``Batch.posterior``.  None: this model has none."""

    def frozen_stats(self, images: Tensor) -> Tensor | None: ...


@runtime_checkable
class Calibrates(Protocol):
    """Measures a setting from data at every checkpoint (e.g. an autoencoder's latent scale); returns the config."""

    def calibrate(self, images: Tensor) -> Any: ...


@runtime_checkable
class DataInit(Protocol):
    """Data-dependent initialisation (e.g. ActNorm, Kingma & Dhariwal 2018 sec. 3.1): called once with the first
    batch of a new run, before the first step, under ``torch.no_grad``."""

    def initialize(self, batch: Batch) -> None: ...


@runtime_checkable
class Translates(Protocol):
    """Turns an input picture (``cond.image``) into another (Pix2Pix, CycleGAN, CUT)."""

    def translate(self, cond: Cond, *, generator: Generators = None, options: Any = None) -> Tensor: ...


@runtime_checkable
class Likelihood(Protocol):
    """An exact or bounded log-likelihood: ``log_prob`` in nats per picture, (B,)."""

    def log_prob(self, images: Tensor, cond: Cond | None = None) -> Tensor: ...


Distance = Callable[[Tensor, Tensor], Tensor]      # (B, C, H, W) x 2 in [-1, 1] -> (B,), differentiable


@runtime_checkable
class Projects(Protocol):
    """Finds the latent of a real picture, and paints from one: the inverse of painting from ``noise``.

    ``project`` returns the latent as named tensors with the pictures along dim 0 (a StyleGAN's styles and
    noise maps, a diffusion model's starting noise); ``render`` paints such a latent with the family's options,
    moved ``strength`` (B,) of the way towards the pictures of the noise ``toward`` (an interpolation with a
    sample).  ``spaces`` names the latent spaces ``project`` can search, the default first; ``distance`` is
    what it minimises where it optimises (None: the family's own pixel distance); ``callback(i, steps,
    pictures, loss)`` sees every step."""

    spaces: ClassVar[tuple[str, ...]]

    def project(self, images: Tensor, cond: Cond | None = None, *, steps: int = 200, space: str = "",
                distance: Distance | None = None, generator: Generators = None,
                callback: Callable[..., None] | None = None) -> dict[str, Tensor]: ...

    def render(self, latent: Mapping[str, Tensor], cond: Cond | None = None, *, options: Any = None,
               toward: Tensor | None = None, strength: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Scores(Protocol):
    """Scores pictures against text instead of painting (the prompt-consistency scorer)."""

    def score(self, images: Tensor, text: Cond) -> Tensor: ...


@runtime_checkable
class Stylizes(Protocol):
    """Paints a content picture in the style of others instead of painting from noise (AdaIN)."""

    def stylize(self, content: Tensor, styles: Sequence[Tensor], weights: Sequence[float] | None = None,
                alpha: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor: ...


CAPABILITIES: tuple[type, ...] = (Generates, Denoises, Encoder, FrozenEncoding, Calibrates, DataInit, Translates,
                                  Likelihood, Projects, Scores, Stylizes)


# ---------------------------------------------------------------- what a family declares

@dataclass(frozen=True)
class TextSpec:
    """A text-conditional model's text encoder: its state width, tokens per prompt, and name ("minilm")."""

    dim: int
    tokens: int
    encoder: str = "minilm"


@dataclass(frozen=True)
class Facts:
    """What a model built from one config offers, derived from the config alone (no weights loaded)."""

    image_size: int
    image_channels: int = 3
    num_classes: int = 0               # 0: no class conditioning
    text: TextSpec | None = None       # None: reads no text
    size_stride: int = 0               # paints at any multiple of this; 0: only at image_size
    latent_factor: int = 1             # an encoder's downsampling from pictures to latents


@dataclass(frozen=True)
class NoOptions:
    """The sampling options of a family that has none to choose."""


def _plain_facts(config: Any) -> Facts:
    return Facts(config.image_size, config.image_channels)


@dataclass(frozen=True)
class FamilySpec:
    """A family, declared once in its module as ``SPEC``; the registry (``danqing.families``) names the module."""

    name: str
    Config: type
    Model: type
    presets: Mapping[str, Any]                             # always including "tiny" (the conformance tests)
    summary: str = ""                                      # one line for `danqing models`
    train_defaults: Mapping[str, Any] = field(default_factory=dict)     # TrainConfig fields from the paper
    Options: type = NoOptions                              # sampling options (a frozen dataclass of ``option``s)
    capabilities: frozenset[type] = frozenset()            # the protocols above that Model implements
    facts: Callable[[Any], Facts] = _plain_facts           # config -> what it offers
    defaults: Callable[[Any], Any] | None = None           # config -> its default Options (None: Options())
    ema_module: str = ""                                   # the sub-module the EMA averages ("" = the whole model)
    roles: tuple[DataRole, ...] = ()                       # data sets it trains on beside --data
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None   # an older config.json "model" -> today's

    MAIN: ClassVar[str] = "data"

    def can(self, capability: type) -> bool:
        return capability in self.capabilities

    @property
    def paints(self) -> bool:
        """Whether it paints pictures (from noise, or from an input picture)."""
        return self.can(Generates) or self.can(Translates)

    def default_options(self, config: Any) -> Any:
        return self.defaults(config) if self.defaults is not None else self.Options()

    def config_from(self, data: dict[str, Any]) -> Any:
        """The Config of a config.json's "model" entry; entries written by older versions are upgraded first."""
        from .config import from_dict
        return from_dict(self.Config, self.upgrade(data) if self.upgrade is not None else data)


# ---------------------------------------------------------------- noise, one generator per picture

def randn(shape: Sequence[int], generator: Generators, device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise of ``shape`` where row i comes from ``generator[i]``.

    With one generator per image, image i is the same at any batch size
    (house rule).  A single generator (or None) draws the whole batch at once.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(*shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}: pass one per image")
    return torch.stack([torch.randn(*shape[1:], generator=g, device=device) for g in generator])


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per image."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]
