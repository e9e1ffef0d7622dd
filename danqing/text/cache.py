"""Caption embeddings kept on disk, so a dataset's captions are encoded once.

Layout under ``cache_root()/text/<encoder fingerprint>/``:

* ``shards/<random>.safetensors``: one file per batch of newly encoded
  captions, holding ``states`` fp16 (sum of lengths, D) (every caption's
  real tokens, no padding, back to back), ``offsets`` int64 (N + 1,) into
  ``states``, and ``pooled`` fp32 (N, D).  The captions and their token
  counts are in the file's own metadata, so every shard describes itself.
* ``index.json``: caption -> [shard, row, length], for speed only.

Writers never edit a file in place: shards and the index are written under a
temporary name and renamed.  Two processes adding at once can lose each
other's index update, but not their shards: a shard the index does not list
is found and read back in on the next lookup, and a damaged index is rebuilt
from the shards.  The worst case is a caption encoded twice.

The token states are stored in fp16, so they differ from a fresh
``TextEncoder.encode`` by fp16 rounding (relative error <= 2**-11, about
5e-4).  ``embed`` always returns the stored values, also for captions it
encoded in the same call, so its result does not depend on whether the cache
was warm.  ``pooled`` is stored in fp32 and equals the fresh value.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..data.base import cache_root
from ..fileio import atomic_write, fsync_file, temp_beside
from ..progress import counting_bar
from ..protocol import Cond
from .encoder import TextEncoder, _checked_prompts

INDEX_FORMAT = 1
SHARD_SIZE = 16384          # captions per shard: ~150 MB of fp16 states at 12 tokens each
ENCODE_CHUNK = 1024         # captions per encoder call, the step of the progress bar
PROGRESS_MIN_CAPTIONS = 2000


class _Shard:
    """An open shard; safetensors reads only the slices asked for."""

    def __init__(self, path: Path) -> None:
        self.file = safe_open(str(path), framework="pt")
        self.offsets: list[int] = self.file.get_tensor("offsets").tolist()   # (N + 1,) int64
        self.states = self.file.get_slice("states")             # (sum of lengths, D) fp16
        self.pooled = self.file.get_slice("pooled")             # (N, D) fp32


class _Store:
    """The cache folder of one encoder fingerprint."""

    def __init__(self, folder: Path, max_tokens: int, dim: int) -> None:
        self.folder, self.max_tokens, self.dim = folder, max_tokens, dim
        self.shard_dir = folder / "shards"
        self.entries: dict[str, tuple[str, int, int]] = {}    # caption -> (shard, row, length)
        self.shards: set[str] = set()
        self.open: dict[str, _Shard] = {}

    # ------------------------------------------------------------ index

    def refresh(self) -> None:
        """Read the index, then adopt any shard it does not list (written by another process)."""
        index = self._read_index()
        files = self.shard_dir.iterdir() if self.shard_dir.is_dir() else ()
        on_disk = {p.name for p in files if p.suffix == ".safetensors" and not p.name.startswith(".")}
        if index is not None:
            listed = set(index["shards"]) & on_disk    # a shard deleted by hand takes its entries with it
            for caption, (shard, row, length) in index["entries"].items():
                if shard in listed:
                    self.entries.setdefault(caption, (shard, int(row), int(length)))
            self.shards |= listed
        unlisted = sorted(on_disk - self.shards)
        for name in unlisted:
            self._adopt(name)
        if index is None or unlisted:
            try:
                self.write_index()
            except OSError:
                pass        # a read-only cache still serves what it holds; the index is only a shortcut

    def _read_index(self) -> dict[str, Any] | None:
        try:
            index = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
            if index.get("format") != INDEX_FORMAT or not isinstance(index.get("entries"), dict):
                return None
            return index
        except (OSError, ValueError, AttributeError):
            return None     # missing or damaged: rebuilt from the shards

    def _adopt(self, name: str) -> None:
        try:
            with safe_open(str(self.shard_dir / name), framework="pt") as f:
                meta = f.metadata() or {}
            captions, lengths = json.loads(meta["captions"]), json.loads(meta["lengths"])
        except (OSError, ValueError, KeyError, TypeError):
            return          # not one of ours, or unreadable: ignored, its captions get encoded again
        for row, (caption, length) in enumerate(zip(captions, lengths)):
            self.entries.setdefault(caption, (name, row, int(length)))
        self.shards.add(name)

    def write_index(self) -> None:
        index = {"format": INDEX_FORMAT, "max_tokens": self.max_tokens, "dim": self.dim,
                 "shards": sorted(self.shards), "entries": self.entries}
        atomic_write(self.folder / "index.json", json.dumps(index, ensure_ascii=False).encode("utf-8"))

    # ------------------------------------------------------------ shards

    def add_shard(self, captions: list[str], cond: Cond) -> None:
        """Store freshly encoded ``captions`` (``cond`` from ``TextEncoder.encode``) as one new shard."""
        lengths = cond.text_mask.sum(1).cpu()                                     # (N,)
        states = cond.text[cond.text_mask].to("cpu", torch.float16).contiguous()  # (sum of lengths, D)
        if not torch.isfinite(states).all():
            raise ValueError("the text encoder produced states too large for fp16 storage; "
                             "this encoder cannot be used with the embedding cache")
        offsets = torch.zeros(len(captions) + 1, dtype=torch.int64)
        offsets[1:] = lengths.cumsum(0)
        tensors = {"states": states, "offsets": offsets, "pooled": cond.pooled.to("cpu", torch.float32).contiguous()}
        meta = {"captions": json.dumps(captions, ensure_ascii=False), "lengths": json.dumps(lengths.tolist())}
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.safetensors"
        tmp = temp_beside(self.shard_dir / name)
        try:
            save_file(tensors, str(tmp), metadata=meta)
            fsync_file(tmp)
            os.replace(tmp, self.shard_dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        for row, (caption, length) in enumerate(zip(captions, lengths.tolist())):
            self.entries[caption] = (name, row, int(length))
        self.shards.add(name)

    def shard(self, name: str) -> _Shard:
        if name not in self.open:
            try:
                self.open[name] = _Shard(self.shard_dir / name)
            except Exception as e:  # safetensors raises its own error types for damaged files
                raise ValueError(f"the caption-embedding cache file {str(self.shard_dir / name)!r} is damaged ({e}); "
                                 f"delete the folder {str(self.folder)!r} and run again to rebuild it") from e
        return self.open[name]


class EmbeddingCache:
    """Caption embeddings on disk under ``root/<encoder fingerprint>/`` (``root`` defaults to
    ``cache_root()/text``); see the module docstring for the layout and guarantees."""

    def __init__(self, root: str | Path | None = None, *, progress: bool = True) -> None:
        self.root = Path(root).expanduser() if root is not None else cache_root() / "text"
        self.progress = progress
        self._stores: dict[str, _Store] = {}

    def folder(self, encoder: TextEncoder) -> Path:
        """Where the embeddings made by ``encoder`` live."""
        return self.root / encoder.fingerprint

    def _store(self, encoder: TextEncoder) -> _Store:
        store = self._stores.get(encoder.fingerprint)
        if store is None:
            store = self._stores[encoder.fingerprint] = _Store(self.folder(encoder), encoder.max_tokens, encoder.dim)
            store.refresh()
        return store

    def embed(self, captions: Sequence[str], encoder: TextEncoder) -> Cond:
        """``Cond`` for ``captions`` on the CPU: ``text`` float32 (B, max_tokens, D) zero-padded,
        ``text_mask`` bool (B, max_tokens), ``pooled`` float32 (B, D).

        Only captions not cached yet are encoded (each once, however often it
        repeats); they are saved before this returns.  ``text`` holds the
        fp16-rounded stored states whether or not the cache was warm.
        """
        captions = _checked_prompts(captions)
        store = self._store(encoder)
        missing = [c for c in dict.fromkeys(captions) if c not in store.entries]
        if missing:
            store.refresh()         # another process may have encoded them meanwhile
            missing = [c for c in missing if c not in store.entries]
        if missing:
            self._encode(store, missing, encoder)
        return self._gather(store, captions)

    def _encode(self, store: _Store, captions: list[str], encoder: TextEncoder) -> None:
        with counting_bar(len(captions), self.progress and len(captions) > PROGRESS_MIN_CAPTIONS,
                          "encoding captions") as advance:
            for start in range(0, len(captions), SHARD_SIZE):
                part = captions[start:start + SHARD_SIZE]
                conds = []
                for i in range(0, len(part), ENCODE_CHUNK):
                    conds.append(encoder.encode(part[i:i + ENCODE_CHUNK]).to("cpu"))
                    advance(len(conds[-1].pooled))
                cond = Cond(text=torch.cat([c.text for c in conds]), text_mask=torch.cat([c.text_mask for c in conds]),
                            pooled=torch.cat([c.pooled for c in conds]))
                # Each shard is saved as soon as it is done: an interrupted bulk run keeps its finished part.
                store.add_shard(part, cond)
        # Merge with what other processes listed meanwhile, so their entries survive this write.
        fresh = {c: store.entries[c] for c in captions}
        store.refresh()
        store.entries.update(fresh)
        store.write_index()

    def _gather(self, store: _Store, captions: list[str]) -> Cond:
        n, t, d = len(captions), store.max_tokens, store.dim
        text = torch.zeros(n, t, d)
        mask = torch.zeros(n, t, dtype=torch.bool)
        pooled = torch.zeros(n, d)
        for i, caption in enumerate(captions):
            name, row, length = store.entries[caption]
            shard = store.shard(name)
            start = shard.offsets[row]
            if shard.offsets[row + 1] - start != length or length > t:
                raise ValueError(f"the caption-embedding cache in {str(store.folder)!r} is inconsistent; "
                                 "delete that folder and run again to rebuild it")
            text[i, :length] = shard.states[start:start + length].float()
            mask[i, :length] = True
            pooled[i] = shard.pooled[row:row + 1][0]
        return Cond(text=text, text_mask=mask, pooled=pooled)

