"""The on-disk activation store: a manifest plus one safetensors shard per batch.

Layout of a store folder::

    manifest.json             models, hooks, dtype, shapes, dataset hash, planned shards, versions;
                              once complete, "shards": each shard's size and SHA-256
    shards.jsonl              while writing: a line per shard written, {index, bytes, sha256}
                              (appended and fsynced; folded into the manifest when complete)
    shard-000000.safetensors  "base/<hook>" and "tuned/<hook>" [row, ...], "seq" and "pos" [row],
                              "target/<name>" [row, ...]; rows are real tokens in dataset order

Why safetensors: a plain, safe (no pickle), documented format that every framework reads, with
zero-copy memory mapping; one file per batch makes each write atomic (see
``lab.activations.shards``), and a run killed at any point leaves complete shards 0..k-1 that open
as they are. The manifest (``lab.activations.manifest``) is written before the first shard and
marked ``complete`` after the last; the journal (``lab.activations.records``) records each shard
as it is written.

Integrity: opening checks every shard's size against its header and its record (a stat and a
header read per shard); ``verify=True`` (``lab store info``, and every resume) also checks the
SHA-256s, which reads the whole store. A damaged shard makes the store incomplete, is named by
any read, and is recomputed by a resume.

Reading (``ActivationStore``) is by model, hook and token slice, memory-mapped, and as a stacked
``[layer, token, d_model]`` tensor for probes, built with one copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from lab.activations.hooks import match_hooks, split_patterns
from lab.activations.manifest import MANIFEST, read_manifest
from lab.activations.records import scan_shards, shard_path
from lab.activations.shards import ShardReader
from lab.errors import LabError, close_matches
from lab.types import Stacked

__all__ = ["ActivationStore"]


class ActivationStore:
    """Read-only access to a store folder written by ``lab.activations.cache.cache_pair``."""

    def __init__(self, root: Path, manifest: dict[str, Any], verify: bool = False) -> None:
        self.root = root
        self.manifest = manifest
        good, damaged = scan_shards(root, manifest, checksum=verify)
        self.damaged: dict[int, str] = damaged  # shard index -> what is wrong with it
        k = 0  # readable: the intact shards 0..k-1 before the first missing or damaged one
        while k < len(good) and good[k] == k:
            k += 1
        self._shards = [ShardReader(shard_path(root, i)) for i in range(k)]
        rows = [int(s.metadata["rows"]) for s in self._shards]
        self._starts = [0]
        for r in rows:
            self._starts.append(self._starts[-1] + r)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = False) -> ActivationStore:
        """Open the store in ``path`` (complete, or partial after an interrupted run).

        Every shard's size is checked; ``verify`` also checks every shard's SHA-256 (reads the
        whole store). Damaged shards are listed in ``damaged`` and make reading refuse.
        """
        root = Path(path)
        manifest = read_manifest(root) if root.is_dir() else None
        if manifest is None:
            raise LabError(f"No activation store at {root} (no {MANIFEST}); cache one first.")
        return cls(root, manifest, verify=verify)

    # ---- what it holds ---------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return list(self.manifest["models"])

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.manifest["dtype"])

    @property
    def n_tokens(self) -> int:
        """Token rows present (all of the dataset's once ``complete``)."""
        return self._starts[-1]

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    @property
    def complete(self) -> bool:
        return (
            bool(self.manifest.get("complete"))
            and self.n_shards == self.manifest["n_shards"]
            and not self.damaged
        )

    @property
    def target_names(self) -> list[str]:
        return list(self.manifest.get("targets", {}))

    def nbytes(self) -> int:
        return sum(s.path.stat().st_size for s in self._shards)

    def __repr__(self) -> str:
        state = (
            "complete" if self.complete else f"partial {self.n_shards}/{self.manifest['n_shards']}"
        )
        if self.damaged:
            state += f", {len(self.damaged)} damaged"
        return (
            f"ActivationStore({str(self.root)!r}: {state}, {self.n_tokens} tokens, "
            f"models {self.models}, {len(self.hooks)} hooks, {self.manifest['dtype']})"
        )

    # ---- reading ---------------------------------------------------------------------------
    def _intact(self) -> None:
        """Refuse to read a store with a damaged shard, naming it."""
        if self.damaged:
            i, problem = next(iter(self.damaged.items()))
            more = f" (and {len(self.damaged) - 1} more)" if len(self.damaged) > 1 else ""
            raise LabError(
                f"Shard {shard_path(self.root, i).name} of {self.root} is damaged ({problem})"
                f"{more}; recompute it by rerunning the cache into this folder with resume=True "
                "(--resume)."
            )

    def _check(self, model: str, hook: str) -> None:
        if model not in self.models:
            raise LabError(f"No model {model!r} in the store; it holds {self.models}.")
        if hook not in self.hooks:
            raise LabError(
                f"No hook {hook!r} in the store.{close_matches(hook, self.hooks)} "
                f"It holds: {', '.join(self.hooks)}."
            )

    def _slices(self, key: str, start: int | None, stop: int | None) -> list[Tensor]:
        """Views of rows ``start:stop`` of tensor ``key``, one per overlapping shard."""
        lo, hi, _ = slice(start, stop).indices(self.n_tokens)
        parts = []
        for shard, a, b in zip(self._shards, self._starts, self._starts[1:], strict=False):
            if b > lo and a < hi:
                parts.append(shard.tensor(key)[max(lo, a) - a : min(hi, b) - a])
        return parts

    def _rows(self, key: str, start, stop, device, empty_shape, dtype) -> Tensor:
        self._intact()
        parts = self._slices(key, start, stop)
        if not parts:
            return torch.empty((0, *empty_shape), dtype=dtype, device=device)
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out if device is None else out.to(device)

    def read(
        self,
        model: str,
        hook: str,
        start: int | None = None,
        stop: int | None = None,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Rows ``start:stop`` of ``hook`` in ``model``: ``[token, ...]``, real tokens only.

        Within one shard the result is a memory-mapped view (no copy); across shards it is
        one concatenation. ``device`` moves it (e.g. ``"cuda"``).
        """
        self._check(model, hook)
        shape = tuple(self.manifest["shapes"][hook])
        return self._rows(f"{model}/{hook}", start, stop, device, shape, self.dtype)

    def stacked(
        self,
        model: str,
        hooks: str | Sequence[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Stacked:
        """``[layer, token, d_model]`` (``d_model``: the hooks' common per-token shape).

        ``hooks`` are names or patterns over the store's hooks (``"resid_post"``), stacked in
        the order given (a pattern's matches in the store's firing order). One output tensor
        is allocated on ``device`` and filled shard by shard from the memory map: no other copy
        is made.
        """
        names: list[str] = []  # in the order given; a pattern's matches in the store's order
        for pattern in split_patterns(hooks):
            names += [h for h in match_hooks(pattern, self.hooks) if h not in names]
        for h in names:
            self._check(model, h)
        self._intact()
        shapes = {tuple(self.manifest["shapes"][h]) for h in names}
        if len(shapes) != 1:
            raise LabError(
                f"Cannot stack hooks of different shapes {sorted(shapes)}; pick one kind."
            )
        out = torch.empty(
            (len(names), self.n_tokens, *shapes.pop()),
            dtype=dtype or self.dtype,
            device=device,
        )
        for shard, a, b in zip(self._shards, self._starts, self._starts[1:], strict=False):
            for layer, h in enumerate(names):
                out[layer, a:b].copy_(shard.tensor(f"{model}/{h}"))
        return out

    def sequence_ids(self) -> Int[Tensor, " token"]:
        """The dataset sequence each row came from."""
        return self._rows("seq", None, None, None, (), torch.long)

    def positions(self) -> Int[Tensor, " token"]:
        """The position within its sequence of each row."""
        return self._rows("pos", None, None, None, (), torch.long)

    def targets(self, name: str, device: str | torch.device | None = None) -> Tensor:
        """Per-token target ``name`` carried from the dataset: ``[token, ...]``."""
        spec = self.manifest.get("targets", {})
        if name not in spec:
            have = ", ".join(spec) or "none"
            raise LabError(
                f"No target {name!r} in the store.{close_matches(name, spec)} It holds: {have}."
            )
        dtype = getattr(torch, spec[name]["dtype"])
        return self._rows(f"target/{name}", None, None, device, tuple(spec[name]["shape"]), dtype)
