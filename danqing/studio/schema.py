"""Job requests: the fields, their limits, and the checks that need the model (sizes, samplers, kinds).

``JobRequest`` refuses what is wrong for any model (pydantic: a 422 naming the field); ``check`` then refuses
what is wrong for the chosen model, raising ``Invalid(field, message)``, which the server turns into the same
kind of 422.  A style job names no model: ``check_style`` checks it against its pictures and the methods
available.  What passes is what the worker paints, so a job rarely fails after it was accepted.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_PROMPT = 500
MAX_SEED = 2**32 - 1
MAX_CELLS = 64
MAX_STEPS = 200                  # sampler steps; gatys style transfer may take up to MAX_STYLE_STEPS iterations
MAX_STYLE_STEPS = 500
STYLE_MIN_SIDE, STYLE_SIZES = 64, (64, 1024)          # style transfer: smallest picture side, output size range
STYLE_SIZE, STYLE_STEPS = 512, 100                     # ... and its defaults
JOB_TYPES = ("txt2img", "img2img", "inpaint", "variations", "interpolation", "grid", "style", "project",
             "translate")
PROJECT_STEPS = 200                        # projection: default optimisation (or inversion) steps, at most 500
FROM_LATENT = ("txt2img", "variations", "interpolation")     # the jobs that can paint a projection's latent
UPLOAD_ID = r"^[0-9a-f]{32}$"              # also the shape of an image id: both are made by the store
STYLE_FIELDS = ("content_image", "styles", "style_weights", "method", "alpha", "preserve_color")
STYLE_TAKES = ("type", "model", "init_image", "size", "steps", *STYLE_FIELDS)
STYLE_MODEL = "style"                      # the model a style job and its pictures are listed under


def json_number(v: Any) -> Any:
    """Numbers must come as JSON numbers: "4" or true where one belongs is a client's mistake, not a guess to make
    (pydantic's lax mode would take them)."""
    if isinstance(v, str | bool):
        raise PydanticCustomError("number_type", "Input should be a JSON number, not {what}",
                                  {"what": "a string" if isinstance(v, str) else "true or false"})
    return v


class Invalid(ValueError):
    """A request that does not fit the model it names."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _axis_value(param: str, v: Any) -> Any:
    """One value of a grid axis: prompts are strings, seeds whole numbers; the model's options are checked
    against the model in ``check`` (their limits come with it)."""
    if param == "prompt":
        if not isinstance(v, str):
            raise ValueError(f"prompt values must be strings, got {v!r}")
        if len(v) > MAX_PROMPT:
            raise ValueError(f"a prompt value is longer than {MAX_PROMPT} characters")
        return v
    if isinstance(v, str) and len(v) > 40:
        raise ValueError(f"a {param} value is longer than 40 characters")
    if param == "seed":
        if isinstance(v, bool):
            raise ValueError(f"seed values must be whole numbers, got {v!r}")   # noqa: TRY004 - pydantic
        try:
            num = float(v)
        except ValueError:
            raise ValueError(f"seed values must be numbers, got {v!r}") from None
        if not num.is_integer() or not 0 <= num <= MAX_SEED:
            raise ValueError(f"seed values must be whole numbers between 0 and {MAX_SEED}, got {v!r}")
        return int(num)
    return v


class Axis(BaseModel):
    """One axis of a grid: the parameter it varies (prompt, seed or one of the model's options) and its values
    (one column or row each)."""

    model_config = ConfigDict(extra="forbid")
    param: str = Field(min_length=1, max_length=40, pattern=r"^[a-z_][a-z0-9_]*$")
    values: list[bool | int | float | str] = Field(min_length=1, max_length=MAX_CELLS)

    @model_validator(mode="after")
    def _convert(self) -> Axis:
        self.values = [_axis_value(self.param, v) for v in self.values]
        return self


class JobRequest(BaseModel):
    """A job: its type and the painting parameters (null: the model's default)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["txt2img", "img2img", "inpaint", "variations", "interpolation", "grid", "style",
                  "project", "translate"] = "txt2img"
    model: str | None = Field(None, min_length=1, max_length=300,
                              description="a name from GET /api/models (style jobs take none)")
    prompt: str = Field("", max_length=MAX_PROMPT)
    negative_prompt: str = Field("", max_length=MAX_PROMPT)
    n: int = Field(4, ge=1, le=16, description="pictures (txt2img, img2img, inpaint, variations)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="null: a random seed")
    steps: int | None = Field(None, ge=1, le=MAX_STYLE_STEPS, description="sampler steps (1-200); "
                              "style (gatys): L-BFGS iterations (1-500, default 100)")
    guidance: float | None = Field(None, ge=0, le=30, allow_inf_nan=False)
    sampler: str | None = Field(None, max_length=40)
    options: dict[Annotated[str, Field(max_length=40)], str | int | float | bool] | None = Field(
        None, max_length=32, description="the model's own sampling options by name (GET /api/models lists them "
                                         "with their limits); steps, guidance, sampler may also be given above")
    size: int | None = Field(None, ge=1, le=4096)
    best_of: int = Field(1, ge=1, le=16)
    init_image: str | None = Field(None, pattern=UPLOAD_ID, description="an upload id (style: the content)")
    mask: str | None = Field(None, pattern=UPLOAD_ID, description="an upload id: white = repaint")
    strength: float = Field(0.6, gt=0, le=1, allow_inf_nan=False, description="img2img/inpaint: how much to change")
    variation_strength: float = Field(0.25, ge=0, le=1, allow_inf_nan=False)
    seed_b: int | None = Field(None, ge=0, le=MAX_SEED, description="interpolation: the other end")
    frames: int = Field(8, ge=2, le=16, description="interpolation: pictures from seed to seed_b")
    latent: str | None = Field(None, pattern=UPLOAD_ID, description="txt2img, variations, interpolation: the id "
                               "of a projection's picture (a project job's): paint from its latent")
    space: str | None = Field(None, max_length=20, description="project: the latent space (GET /api/models lists "
                              "each model's spaces; default the first)")
    x: Axis | None = Field(None, description="grid: the columns")
    y: Axis | None = Field(None, description="grid: the rows (optional)")
    content_image: str | None = Field(None, pattern=UPLOAD_ID, description="style: a history image id as the content")
    styles: list[Annotated[str, Field(pattern=UPLOAD_ID)]] | None = Field(
        None, min_length=1, max_length=4, description="style: 1-4 upload ids of style pictures")
    style_weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, max_length=4, description="style: one non-negative weight per style (default equal)")
    method: Literal["adain", "gatys"] | None = Field(None, description="style: adain (default) or gatys")
    alpha: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                description="style (adain): 0 = the content, 1 = the style")
    preserve_color: Literal["luminance", "histogram"] | None = Field(None, description="style: keep the content's "
                                                                     "colours")

    @field_validator("n", "seed", "steps", "guidance", "size", "best_of", "strength", "variation_strength",
                     "seed_b", "frames", "style_weights", "alpha", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        """JSON numbers only (4.0 passes as 4, 4.5 does not); allow_inf_nan refuses NaN, Infinity and 1e309."""
        return [json_number(x) for x in v] if isinstance(v, list) else json_number(v)

    @model_validator(mode="after")
    def _fits_type(self) -> JobRequest:
        t = self.type
        if t == "style":
            return self                        # check_style: its fields depend on each other and on the store
        if t in ("img2img", "inpaint", "translate") and self.init_image is None:
            raise ValueError(f"{t} needs init_image (an upload id from POST /api/uploads)")
        if t == "translate" and self.mask is not None:
            raise ValueError("translate takes no mask: it turns the whole picture into another")
        if t == "inpaint" and self.mask is None:
            raise ValueError("inpaint needs mask (an upload id: white = repaint, black = keep)")
        if t == "img2img" and self.mask is not None:
            raise ValueError("a mask makes this an inpaint job: use type inpaint")
        if t == "project":
            if self.init_image is None:
                raise ValueError("project needs init_image: the upload id of the picture to find")
            if self.mask is not None:
                raise ValueError("project takes no mask: it finds the whole picture")
        elif self.space is not None:
            raise ValueError(f"space is the latent space of a project job, not of {t}")
        if self.latent is not None:
            if t not in FROM_LATENT:
                raise ValueError(f"latent paints a projection in {', '.join(FROM_LATENT)} jobs, not in {t}")
            if t == "txt2img" and (self.n != 1 or self.best_of != 1):
                raise ValueError("a projection is painted once (n 1, best_of 1); variations paints several "
                                 "nearby pictures")
        if t == "txt2img" and self.init_image is not None:
            raise ValueError("an init image makes this an img2img job: use type img2img")
        if self.mask is not None and self.init_image is None:
            raise ValueError("mask paints into an image: give init_image too")
        if t == "variations" and self.seed is None:
            raise ValueError("variations needs seed: the picture to vary")
        if t == "interpolation" and (self.seed is None or self.seed_b is None):
            raise ValueError("interpolation needs seed and seed_b: the two ends")
        if self.best_of > 1 and t not in ("txt2img", "img2img", "inpaint"):
            raise ValueError(f"best_of applies to txt2img, img2img and inpaint, not {t}")
        if t == "grid":
            if self.x is None:
                raise ValueError('grid needs x: {"param": NAME, "values": [...]}')
            if self.y is not None and self.y.param == self.x.param:
                raise ValueError(f"x and y both vary {self.x.param}: choose two different parameters")
            cells = len(self.x.values) * (len(self.y.values) if self.y else 1)
            if cells > MAX_CELLS:
                raise ValueError(f"the grid has {cells} cells; at most {MAX_CELLS}")
            if self.init_image is None and "strength" in (self.x.param, self.y.param if self.y else ""):
                raise ValueError("a strength axis needs init_image (strength is how much of it to change)")
        elif self.x is not None or self.y is not None:
            raise ValueError(f"x and y are the axes of a grid job, not of {t}")
        return self


def check(req: JobRequest, model: dict[str, Any] | None, upload_exists,
          projected_by: Callable[[str], str | None] = lambda _: None) -> dict[str, Any]:
    """Refuse what does not fit ``model`` (a catalog entry); return the request to store, the seed drawn.
    ``projected_by(image_id)``: the model a history picture was projected with (None: not a projection)."""
    for f in STYLE_FIELDS:
        if getattr(req, f) is not None:
            raise Invalid(f, f"{f} belongs to style jobs (type style), not to {req.type}")
    if model is None:
        raise Invalid("model", "give model: a name from GET /api/models" if req.model is None else
                      f"no model named {req.model!r}; GET /api/models lists them")
    if req.type == "project":
        return _check_project(req, model, upload_exists)
    if req.latent is not None:
        by = projected_by(req.latent)
        if by is None:
            raise Invalid("latent", f"{req.latent} is not a projection's picture; project one with a project job")
        if by != model["name"]:
            raise Invalid("latent", f"{req.latent} was projected with {by}; paint it with that model, not "
                                    f"{model['name']}")
    if req.steps is not None and req.steps > MAX_STEPS:
        raise Invalid("steps", f"steps must be less than or equal to {MAX_STEPS} (up to {MAX_STYLE_STEPS} is for "
                      "gatys style transfer)")
    name, kind, sup = model["name"], model["kind"], model["supports"]
    axes = {k: a for k, a in (("x", req.x), ("y", req.y)) if a is not None}
    converted = {k: _axis_values(k, a, model) for k, a in axes.items()}
    varied = {a.param: converted[k] for k, a in axes.items()}
    if req.size is not None and req.size not in model["sizes"]:
        raise Invalid("size", f"{name} paints the sizes {', '.join(map(str, model['sizes']))}, not {req.size}")
    if req.sampler is not None and req.sampler not in model["samplers"]:
        raise Invalid("sampler", f"unknown sampler {req.sampler!r} for {name}; choose one of "
                      f"{', '.join(model['samplers'])}" if model["samplers"] else
                      f"{name} is a {model['family']} model: it takes no sampler")
    options = _options(req, model)
    prompts = varied.get("prompt", [req.prompt])
    if kind == "text":
        if any(not p.strip() for p in prompts):
            raise Invalid("prompt", "the prompt is empty: describe the picture, e.g. \"a fox face, 3d style\"")
    else:
        if req.negative_prompt:
            raise Invalid("negative_prompt", f"{name} does not read text, so it takes no negative prompt")
        for p in prompts:
            if kind == "unconditional" and p:
                raise Invalid("prompt", f"{name} is unconditional: leave the prompt empty")
            if kind == "class" and p and p not in model["class_names"]:
                raise Invalid("prompt", f"{name} paints the classes {', '.join(model['class_names'])} "
                              f"(or all in turn with an empty prompt); {p!r} is not one of them")
    if sup["translate"] != (req.type == "translate"):
        raise Invalid("type", f"{name} translates pictures: use type translate with init_image" if sup["translate"]
                      else f"translate needs a picture-to-picture model (Pix2Pix, CycleGAN, CUT); {name} is a "
                      f"{model['family']} model")
    if req.init_image is not None and not sup["img2img"] and req.type != "translate":
        raise Invalid("init_image", f"image-to-image and inpainting need a diffusion model; {name} is a "
                      f"{model['family']} model")
    for field in ("init_image", "mask"):
        upload = getattr(req, field)
        if upload is not None and not upload_exists(upload):
            raise Invalid(field, f"no upload with id {upload}; upload the picture with POST /api/uploads first")
    if req.best_of > 1 and not sup["best_of"]:
        raise Invalid("best_of", f"best_of needs a text model and the bundled prompt-consistency scorer; {name} "
                      + ("does not read text" if kind != "text" else "has no scorer installed beside it"))
    out = req.model_dump()
    if out["seed"] is None:
        out["seed"] = secrets.randbelow(2**31)
    if not model["samplers"]:                      # a GAN or VAE: one pass, no sampler settings
        out["steps"] = out["guidance"] = out["sampler"] = None
    out["options"] = options
    for k, values in converted.items():
        out[k]["values"] = values
    return out


def _check_project(req: JobRequest, model: dict[str, Any], upload_exists) -> dict[str, Any]:
    """A project job: a model that projects, one of its spaces, the picture's upload, and its class or caption."""
    name = model["name"]
    if not model["supports"].get("project"):
        raise Invalid("model", f"{name} is a {model['family']} model, which cannot project pictures")
    taken = {"type", "model", "prompt", "seed", "steps", "init_image", "space"}
    for f, info in JobRequest.model_fields.items():
        if f not in taken and getattr(req, f) != info.default:
            raise Invalid(f, f"a project job takes {', '.join(sorted(taken - {'type', 'model'}))}, not {f}")
    if req.space is not None and req.space not in model["spaces"]:
        raise Invalid("space", f"{name} projects into {' or '.join(model['spaces'])}, not {req.space!r}")
    assert req.init_image is not None
    if not upload_exists(req.init_image):
        raise Invalid("init_image", f"no upload with id {req.init_image}; upload the picture with POST /api/uploads "
                                    "first")
    if model["kind"] == "class" and req.prompt not in model["class_names"]:
        raise Invalid("prompt", f"say which class the picture is: one of {', '.join(model['class_names'])}")
    if model["kind"] == "text" and not req.prompt.strip():
        raise Invalid("prompt", "describe the picture: the model projects under its caption")
    if model["kind"] == "unconditional" and req.prompt:
        raise Invalid("prompt", f"{name} is unconditional: leave the prompt empty")
    out = req.model_dump()
    out.update(seed=secrets.randbelow(2**31) if req.seed is None else req.seed,
               steps=PROJECT_STEPS if req.steps is None else req.steps, space=req.space or model["spaces"][0],
               options={})
    return out


def _axis_values(field: str, axis: Axis, model: dict[str, Any]) -> list[Any]:
    """A grid axis's values checked like the option they vary (prompt and seed were checked already)."""
    from ..options import OptionError, check_value

    if axis.param in ("prompt", "seed"):
        return list(axis.values)
    infos = _option_infos(model)
    if axis.param not in infos:
        axes = ", ".join(["prompt", "seed", *infos])
        raise Invalid(field, f"{model['name']} is a {model['family']} model: it takes no {axis.param} to vary; "
                             f"a grid axis is one of {axes}")
    info = infos[axis.param]
    out = []
    for v in axis.values:
        if isinstance(v, str) and info.type in ("int", "float"):
            try:
                v = float(v)
            except ValueError:
                raise Invalid(field, f"{axis.param} values must be numbers, got {v!r}") from None
        try:
            out.append(check_value(info, v))
        except OptionError as e:
            raise Invalid(field, f"a {axis.param} value does not fit: {e}") from None
    return out


def _option_infos(model: dict[str, Any]) -> dict[str, Any]:
    from ..options import OptionInfo
    return {o["name"]: OptionInfo(**{**o, "choices": None if o["choices"] is None else tuple(o["choices"])})
            for o in model.get("options", [])}


def _options(req: JobRequest, model: dict[str, Any]) -> dict[str, Any]:
    """The model's options the job paints with: ``options`` checked against the model's list, and the top-level
    steps, guidance and sampler (and strength, with an input picture) for a model that has them."""
    from ..options import OptionError, check_value

    infos = _option_infos(model)
    from ..pipeline import a1111_options
    top = a1111_options(req.sampler, req.steps, req.guidance, req.strength, req.init_image is not None)
    chosen = {k: v for k, v in top.items() if k in infos}
    for name, value in (req.options or {}).items():
        if name not in infos:
            raise Invalid("options", f"{name} is not an option of {model['name']} (its options: "
                                     f"{', '.join(infos) or 'none'})")
        chosen[name] = value
    try:
        return {k: check_value(infos[k], v) for k, v in chosen.items()}
    except OptionError as e:
        raise Invalid("options", str(e)) from None


def check_style(req: JobRequest, upload: Callable[[str], dict | None], image: Callable[[str], dict | None],
                decoder: Callable[[], Any]) -> dict[str, Any]:
    """Refuse a style job that cannot run; return the request to store, its defaults filled in.

    ``upload(id)`` and ``image(id)`` give a stored picture's ``width`` and ``height`` (None: no such id);
    ``decoder()`` raises ValueError (or OSError), saying how to get one, when AdaIN has no decoder.
    """
    if req.model not in (None, STYLE_MODEL):
        raise Invalid("model", f"a style job uses no painter model: leave model out (its pictures are listed "
                               f"under the model {STYLE_MODEL!r})")
    for f, info in JobRequest.model_fields.items():
        if f not in STYLE_TAKES and getattr(req, f) != info.default:
            raise Invalid(f, f"{f} is a painting setting; a style job takes {', '.join(STYLE_TAKES[2:])}")
    if (req.init_image is None) == (req.content_image is None):
        raise Invalid("content_image" if req.content_image else "init_image",
                      "a style job needs one content picture: init_image (an upload id) or content_image (a "
                      "history image id)" + (", not both" if req.content_image else ""))
    if not req.styles:
        raise Invalid("styles", "a style job needs styles: 1 to 4 upload ids of style pictures")
    if req.style_weights is not None and len(req.style_weights) != len(req.styles):
        raise Invalid("style_weights", f"{len(req.style_weights)} weight(s) for {len(req.styles)} style(s): give "
                                       "one per style")
    if req.style_weights is not None and sum(req.style_weights) <= 0:
        raise Invalid("style_weights", "the style weights are all zero: give at least one a positive weight")
    method = req.method or "adain"
    if method == "gatys" and req.alpha is not None:
        raise Invalid("alpha", "alpha is adain's content/style trade-off; gatys takes steps instead")
    if method == "adain" and req.steps is not None:
        raise Invalid("steps", "steps are gatys' iterations; adain paints in one pass (it takes alpha)")
    size = STYLE_SIZE if req.size is None else req.size
    if not STYLE_SIZES[0] <= size <= STYLE_SIZES[1]:
        raise Invalid("size", f"style transfer paints a long side of {STYLE_SIZES[0]} to {STYLE_SIZES[1]} px, "
                              f"not {size}")
    pictures = [("init_image", req.init_image, upload), ("content_image", req.content_image, image),
                *(("styles", s, upload) for s in req.styles)]
    for field, ident, find in pictures:
        found = None if ident is None else find(ident)
        if ident is not None and found is None:
            raise Invalid(field, f"no history image with id {ident}" if find is image else
                          f"no upload with id {ident}; upload the picture with POST /api/uploads first")
        if found is not None and min(found["width"], found["height"]) < STYLE_MIN_SIDE:
            raise Invalid(field, f"the picture {ident} is {found['width']}x{found['height']}; style transfer needs "
                                 f"at least {STYLE_MIN_SIDE} px on each side")
    if method == "adain":
        try:
            decoder()
        except (ValueError, OSError) as e:
            raise Invalid("method", f"{e} (`danqing studio --decoder RUN`); or use method gatys") from None
    adain = method == "adain"
    out = req.model_dump()
    out.update(model=STYLE_MODEL, method=method, size=size,
               alpha=(1.0 if req.alpha is None else req.alpha) if adain else None,
               steps=None if adain else req.steps or STYLE_STEPS)
    return out
