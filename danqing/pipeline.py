"""Prompt, seed and parameters -> pictures, with every parameter stored in each PNG.

    pipe = danqing.load("emoji")                 # the bundled painter, or load("runs/my-run")
    images = pipe("a fox face, 3d style", n=4, seed=7)
    pipe.save(images[0], "fox.png")              # PNG with `parameters` (A1111 style) and `danqing` (JSON)
    again = pipe.regenerate(read_parameters("fox.png"))   # the same pixels on the same machine

Argument names follow diffusers' pipelines where they exist.  Image i of a
call uses seed + i through a generator of its own; a regenerated image is
recomputed inside the same batch of seeds it was first drawn in, so it comes
out bit-identical, not merely close.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import dataclasses
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import checkpoint as ckpt
from .config import ConfigError
from .families import spec as family_spec
from .generate import Painter, PipelineError, Request, check_size, family_options, slerp
from .images import save_with_params, to_pil
from .params import Params, a1111_options, read_parameters
from .pixels import from_uint8
from .protocol import Cond, Denoises, FamilySpec, Scores

WEIGHTS = Path(__file__).parent / "weights"          # bundled models: weights/<name>/{config.json, model.safetensors}
LIMITS = {"n": (1, 16), "best_of": (1, 16), "frames": (2, 16)}
SCORER = "emoji-scorer"                              # the bundled prompt-consistency scorer used by best_of


def _check_count(name: str, value: object, limits: tuple[int, int]) -> None:
    """A count the caller gave: a whole number within ``limits`` (checked before anything is built from it)."""
    lo, hi = limits
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise PipelineError(f"{name} must be between {lo} and {hi}, got {value}")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def resolve_model(name_or_path: str | Path, kind: str = "painter") -> Path:
    """A bundled model name (e.g. "emoji") or a run/checkpoint folder -> checkpoint folder."""
    name = str(name_or_path)
    if "/" not in name and "\\" not in name and (WEIGHTS / name / ckpt.MODEL).is_file():
        return WEIGHTS / name
    if Path(name_or_path).exists():
        return ckpt.resolve(name_or_path)
    if name in ("emoji", SCORER) and not (WEIGHTS / name).is_dir():
        how = "docs/t2i.md" if kind == "painter" else "docs/evaluation.md"
        raise PipelineError(f"the bundled {kind} `{name}` is not part of this installation; train one ({how}) and "
                            f"pass its run folder")
    names = bundled(kind)
    what = f"{name} does not exist" if "/" in name or "\\" in name else f"no {kind} {name!r}"
    raise PipelineError(f"{what}: give a run or checkpoint folder, or a bundled {kind} "
                        f"({', '.join(names) or 'none installed'})")


def bundled(kind: str = "painter") -> list[str]:
    """Names of the bundled models of a kind: "painter" (paints from text), "model" (paints at all: from text,
    noise or a picture, what the studio offers) or "scorer"."""
    if not WEIGHTS.is_dir():
        return []
    out = []
    for p in sorted(WEIGHTS.iterdir()):
        if (p / ckpt.MODEL).is_file():
            cfg = json.loads((p / ckpt.CONFIG).read_text())
            fam = family_spec(cfg["family"])
            if kind == "scorer" and fam.can(Scores):
                out.append(p.name)
            if kind == "model" and fam.paints:
                out.append(p.name)
            if kind == "painter" and fam.paints and fam.facts(fam.config_from(cfg["model"])).text is not None:
                out.append(p.name)
    return out


class Pipeline:
    """A loaded painter: call it with a prompt to get PIL images."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], *, name: str, weights: str,
                 device: torch.device | str = "cpu", scorer: str | Path = SCORER):
        self.model, self.config, self.name, self.weights = model, config, name, weights
        self.spec: FamilySpec = family_spec(config["family"])
        self.device = torch.device(device)
        self.scorer_source = scorer
        self.painter = Painter(model, self.spec, class_names=config.get("class_names"),
                               encode_text=self.encode_prompt, name=name)

    @cached_property
    def scorer(self) -> Scores:
        """The prompt-consistency scorer best_of ranks candidates with (loaded on first use)."""
        try:
            folder = resolve_model(self.scorer_source, kind="scorer")
        except PipelineError as e:
            raise PipelineError(f"best_of needs the prompt-consistency scorer: {e}") from None
        model, cfg = ckpt.load(folder, device=self.device)
        if not family_spec(cfg["family"]).can(Scores):
            raise PipelineError(f"{self.scorer_source} is a {type(model).__name__}, not a prompt-consistency scorer")
        return cast(Scores, model.eval())

    @cached_property
    def text_encoder(self):
        from .text import text_encoder_for
        text = self.painter.facts.text
        if text is None:
            raise PipelineError(f"{self.name} does not read text")
        return text_encoder_for(text).to(self.device)

    @property
    def takes_text(self) -> bool:
        return self.painter.takes_text

    @property
    def class_names(self) -> list[str]:
        return self.painter.class_names

    def encode_prompt(self, prompts: list[str]) -> Cond:
        """Text states rounded to fp16, exactly as the training cache stored them."""
        cond = self.text_encoder.encode(prompts)
        assert cond.text is not None and cond.pooled is not None
        return Cond(text=cond.text.half().float(), text_mask=cond.text_mask, pooled=cond.pooled.half().float())

    def __call__(self, prompt: str = "", negative_prompt: str = "", n: int = 4, *, seed: int | None = None,
                 size: int | None = None, init_image: Image.Image | None = None, mask: Image.Image | None = None,
                 bf16: str = "auto", best_of: int = 1, variation_seed: int | None = None,
                 variation_strength: float = 0.0, callback: Callable[[int, int, Tensor, Tensor], None] | None = None,
                 latent: Mapping[str, Tensor] | None = None, image: Image.Image | None = None,
                 **options: Any) -> list[Image.Image]:
        """n pictures of ``prompt``.  Picture i uses seed + i; with ``best_of`` = N, picture i is the best by
        prompt consistency of N candidates with seeds seed + i*N ... seed + i*N + N-1.  With ``variation_seed``,
        picture i's noise is mixed (spherically) with that of variation_seed + i by ``variation_strength``.

        ``prompt`` is text for a text model, a class name for a class-conditional one (empty: the classes in
        turn), and empty for an unconditional one.  ``options`` are the family's own (diffusion: ``steps``,
        ``guidance``, ``sampler``, ``strength``; see ``danqing models``); None keeps the model's default.
        ``latent``: paint this projected picture (``project``) instead of the seed's noise, with the options.
        ``image``: the picture a picture-to-picture model translates (``pipe(image=sketch)``); the same argument
        as ``init_image``, which names it for image-to-image painting."""
        if image is not None:
            if init_image is not None:
                raise PipelineError("give the picture once, as image= or as init_image=")
            init_image = image
        _check_count("n", n, LIMITS["n"])
        _check_count("best_of", best_of, LIMITS["best_of"])
        if latent is not None and (n, best_of) != (1, 1):
            raise PipelineError("a projected picture is painted once (n = 1, best_of = 1); for several nearby "
                                "pictures use variations")
        p = self._params(prompt, negative_prompt, seed, size, init_image, mask, bf16, best_of, options)
        count = n * best_of
        seeds = list(range(p.seed, p.seed + count))
        if variation_seed is not None:
            self._batch(p, seeds, [variation_seed + k for k in range(count)], [variation_strength] * count)
            p.variation_seed, p.variation_strength = variation_seed, float(variation_strength)
        else:
            self._batch(p, seeds)
        images = self._paint(p, init_image, mask, callback, latent)
        if best_of == 1:
            return images
        scores = self.score(images, prompt).view(n, best_of)
        best = [i * best_of + int(j) for i, j in enumerate(scores.argmax(1))]
        for k in best:
            images[k].info["params"].score = float(scores.flatten()[k])
        return [images[k] for k in best]

    def variations(self, prompt: str = "", negative_prompt: str = "", n: int = 4, *, seed: int,
                   variation_strength: float = 0.25, init_image: Image.Image | None = None,
                   mask: Image.Image | None = None, callback=None, size: int | None = None, bf16: str = "auto",
                   latent: Mapping[str, Tensor] | None = None, **options: Any) -> list[Image.Image]:
        """n pictures near the one of ``seed``: its noise mixed with that of seeds seed+1 ... seed+n (with
        ``latent``: the projected picture moved towards the pictures of those seeds)."""
        _check_count("n", n, LIMITS["n"])
        p = self._params(prompt, negative_prompt, seed, size, init_image, mask, bf16, 1, options)
        self._batch(p, [p.seed] * n, [p.seed + 1 + k for k in range(n)], [variation_strength] * n)
        return self._paint(p, init_image, mask, callback, latent)

    def interpolate(self, prompt: str = "", negative_prompt: str = "", frames: int = 8, *, seed: int,
                    seed_b: int, init_image: Image.Image | None = None, mask: Image.Image | None = None,
                    callback=None, size: int | None = None, bf16: str = "auto",
                    latent: Mapping[str, Tensor] | None = None, **options: Any) -> list[Image.Image]:
        """``frames`` pictures along the great circle from seed's noise to seed_b's (both ends included); with
        ``latent``, from the projected picture to seed_b's (along the family's path: a line in StyleGAN's W)."""
        _check_count("frames", frames, LIMITS["frames"])
        p = self._params(prompt, negative_prompt, seed, size, init_image, mask, bf16, 1, options)
        ts = [k / max(1, frames - 1) for k in range(frames)]
        self._batch(p, [p.seed] * frames, [int(seed_b)] * frames, ts)
        return self._paint(p, init_image, mask, callback, latent)

    def project(self, image: Image.Image, prompt: str = "", *, steps: int = 200, space: str = "", seed: int = 0,
                distance: str = "vgg", callback: Callable[..., None] | None = None
                ) -> tuple[dict[str, Tensor], Image.Image]:
        """The latent of a real picture in this model's space (``danqing.projection``) and the model's picture of
        it, which carries ``Params.latent``.  The picture is centre-cropped and resized to the model's size;
        ``prompt`` is its class or caption; ``distance``: "vgg" (VGG19 + pixels) or "pixel"."""
        from .projection import perceptual
        if distance not in ("vgg", "pixel"):
            raise PipelineError(f"distance must be vgg or pixel, got {distance!r}")
        p = self._params(prompt, "", seed, None, None, None, "off", 1, {})
        self._batch(p, [p.seed])
        side, channels = self.painter.facts.image_size, self.painter.facts.image_channels
        req = Request([p.seed], self.painter.prompts_for(prompt, 1), image=self._image_tensor(image, side, channels))
        latent = self.painter.project(req, steps=steps, space=space,
                                      distance=perceptual() if distance == "vgg" else None, callback=callback)
        return latent, self._paint(p, None, None, None, latent)[0]

    def preview(self, denoised: Tensor) -> list[Image.Image]:
        """Pictures of a sampler callback's current estimate (decoded from latents for latent models)."""
        if not self.spec.can(Denoises):
            raise PipelineError(f"{self.name} paints in one pass: it has no steps to preview")
        return to_pil(cast(Denoises, self.model).preview(denoised))

    def score(self, images: list[Image.Image], prompt: str | list[str]) -> Tensor:
        """Prompt-consistency scores (N,) (cosine, higher = closer to the prompt) of pictures as saved (8-bit)."""
        prompts = [prompt] * len(images) if isinstance(prompt, str) else prompt
        x = from_uint8(torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2))
        x = x.to(self.device)
        return self.scorer.score(x, self.encode_prompt(prompts)).cpu()

    def regenerate(self, p: Params, init_image: Image.Image | None = None, mask: Image.Image | None = None,
                   callback=None, latent: Mapping[str, Tensor] | None = None) -> Image.Image:
        """Paint ``p`` again: the whole batch it was drawn in, returning its own image (``latent``: the projected
        latent it was painted from, when it was)."""
        if p.weights and p.weights != self.weights:
            raise PipelineError(f"the picture was painted by weights {p.weights} but {self.name} has {self.weights}; "
                                "load the same model to get the same pixels")
        if p.init_image and init_image is None:
            raise PipelineError("the picture was painted from an init image: pass the same image (--init)")
        if p.latent and (latent is None or latent_id(latent) != p.latent):
            raise PipelineError(f"the picture was painted from the projected latent {p.latent}: pass that latent"
                                if latent is None else f"this latent is {latent_id(latent)}, the picture was "
                                f"painted from {p.latent}: pass the latent it was painted from")
        seeds = p.batch_seeds or [p.seed]
        names = [f.name for f in dataclasses.fields(self.spec.Options)]
        batch = Params(**{**asdict(p), "seed": seeds[0], "batch_seeds": seeds,
                          "options": dataclasses.asdict(self.painter.options(p.painted_options(names)))})
        self._check(batch, len(seeds))
        return self._paint(batch, init_image, mask, callback, latent if p.latent else None)[
            p.index if p.index >= 0 else seeds.index(p.seed)]

    def _params(self, prompt: str, negative_prompt: str, seed: int | None, size: int | None,
                init_image: Image.Image | None, mask: Image.Image | None, bf16: str, best_of: int,
                options: dict[str, Any]) -> Params:
        """The Params of a call, with the model's defaults filled in and the family's options checked."""
        from .hardware import use_bf16
        chosen = dataclasses.asdict(self.painter.options(options))
        legacy = {"sampler": chosen.get("sampler", ""), "steps": chosen.get("steps", 1),
                  "guidance": chosen.get("guidance", 1.0),
                  "strength": chosen.get("strength", 1.0) if init_image is not None else 1.0}
        return Params(prompt=prompt, negative_prompt=negative_prompt,
                      seed=secrets.randbelow(2**31) if seed is None else int(seed), options=chosen, **legacy,
                      size=self.painter.facts.image_size if size is None else size, model=self.name,
                      weights=self.weights,
                      init_image=init_image is not None, mask=mask is not None, best_of=best_of,
                      precision="bf16" if use_bf16(bf16, self.device) else "fp32")

    def _batch(self, p: Params, seeds: list[int], variation_seeds: list[int] | None = None,
               strengths: list[float] | None = None) -> None:
        """Set the batch ``p`` paints (one seed, and optionally a variation seed and strength, per picture)."""
        p.batch_seeds, p.batch_variation_seeds, p.batch_strengths = seeds, variation_seeds or [], strengths or []
        self._check(p, len(seeds))

    def _check(self, p: Params, count: int) -> None:
        """Refuse bad parameters for painting ``count`` images (n pictures x best_of candidates)."""
        _check_count("best_of", p.best_of, LIMITS["best_of"])
        _check_count("n", count // p.best_of, LIMITS["n"])
        self.painter.check_prompts([p.prompt], p.negative_prompt)
        self.painter.check_size(p.size)
        if len(p.batch_variation_seeds) not in (0, count) or len(p.batch_strengths) != len(p.batch_variation_seeds):
            raise PipelineError("give one variation seed and one strength per picture")
        if any(not 0 <= t <= 1 for t in p.batch_strengths):
            raise PipelineError("variation strength must be in [0, 1]")

    def _paint(self, p: Params, init_image, mask, callback,
               latent: Mapping[str, Tensor] | None = None) -> list[Image.Image]:
        n = len(p.batch_seeds)
        p.latent = "" if latent is None else latent_id(latent)
        if mask is not None and init_image is not None and mask.size != init_image.size:
            raise PipelineError(f"the mask is {mask.size[0]}x{mask.size[1]} but the init image is "
                                f"{init_image.size[0]}x{init_image.size[1]}; draw the mask at the image's size")
        req = Request(p.batch_seeds, self.painter.prompts_for(p.prompt, n), negative=p.negative_prompt,
                      image=None if init_image is None else self._image_tensor(init_image, p.size, self.painter.facts.image_channels),
                      mask=None if mask is None else self._mask_tensor(mask, p.size), size=p.size,
                      options=p.options, variation_seeds=p.batch_variation_seeds,
                      variation_strengths=p.batch_strengths, latent=latent)
        images = to_pil(self.painter(req, callback=callback, bf16=p.precision == "bf16"))
        for k, img in enumerate(images):
            varied = {"variation_seed": p.batch_variation_seeds[k], "variation_strength": p.batch_strengths[k]} \
                if p.batch_variation_seeds else {}
            img.info["params"] = Params(**{**asdict(p), "seed": p.batch_seeds[k], "index": k, **varied})
        return images

    def _image_tensor(self, img: Image.Image, size: int, channels: int = 3) -> Tensor:
        from .data.transforms import fit_image, to_8bit
        arr = torch.from_numpy(np.array(fit_image(to_8bit(img, channels), size, "crop")))
        arr = arr[..., None] if arr.ndim == 2 else arr
        return from_uint8(arr.permute(2, 0, 1)[None]).to(self.device)         # (1, channels, size, size)

    def _mask_tensor(self, mask: Image.Image, size: int) -> Tensor:
        """White = paint, black = keep; cropped and resized exactly like the init image."""
        from .data.transforms import fit_image, to_8bit
        m = fit_image(to_8bit(mask, 1), size, "crop", resample=Image.Resampling.NEAREST)
        t = (torch.from_numpy(np.array(m)).float() > 127).float()
        return t[None, None].to(self.device)

    @staticmethod
    def save(img: Image.Image, path: str | Path) -> Path:
        """Write a painted image as PNG with its parameters in two text chunks."""
        return save_with_params(img, path)


def precheck(name_or_path: str | Path, *, n: int = 1, best_of: int = 1, size: int | None = None,
             options: dict[str, Any] | None = None) -> None:
    """Refuse a painting request that cannot succeed before the model's weights are loaded: its counts, size
    and options against the family and config the model's folder names (the same checks ``__call__`` makes)."""
    _check_count("n", n, LIMITS["n"])
    _check_count("best_of", best_of, LIMITS["best_of"])
    folder = resolve_model(name_or_path)
    cfg = ckpt.read_config(folder)
    fam = family_spec(cfg["family"])
    try:
        config = fam.config_from(cfg["model"])
    except ConfigError as e:
        raise PipelineError(f"{folder}: {e}") from None
    name = Path(name_or_path).name
    if size is not None:
        check_size(fam.facts(config), size, name)
    family_options(fam, config, options or {}, name)


def load(name_or_path: str | Path = "emoji", *, device: str | torch.device = "cpu",
         scorer: str | Path = SCORER) -> Pipeline:
    """A bundled model by name, or a run/checkpoint folder, ready to paint.

    ``scorer``: the prompt-consistency scorer ``best_of`` ranks with (loaded only when used).
    """
    folder = resolve_model(name_or_path)
    model, cfg = ckpt.load(folder, device=device)
    # a run's folder name, not its path: PNG metadata travels, and paths can say more than the user wants
    name = folder.name if folder.parent == WEIGHTS else Path(name_or_path).resolve().name
    if not family_spec(cfg["family"]).paints:
        raise PipelineError(f"{name_or_path} holds a {cfg.get('family')} model, which does not paint")
    return Pipeline(model, cfg, name=name, weights=_sha(folder / ckpt.MODEL), device=device, scorer=scorer)


def latent_id(latent: Mapping[str, Tensor]) -> str:
    """A sha256 prefix of a latent's names and float32 values: which projected picture a PNG was painted from."""
    h = hashlib.sha256()
    for name in sorted(latent):
        h.update(name.encode() + b"\0" + latent[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def next_paths(folder: str | Path, n: int) -> list[Path]:
    """n new numbered file names in ``folder`` (0001.png, 0002.png, ...), never overwriting."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.stem) for p in folder.glob("[0-9]*.png") if p.stem.isdigit()]
    start = max(taken, default=0) + 1
    return [folder / f"{i:04d}.png" for i in range(start, start + n)]


__all__ = ["Params", "Pipeline", "PipelineError", "a1111_options", "bundled", "latent_id", "load", "next_paths",
           "precheck", "read_parameters", "resolve_model", "slerp"]
