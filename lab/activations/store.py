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
``lab.activations.shards``), and a
run killed at any point leaves complete shards 0..k-1 that open as they are. The manifest is
written before the first shard and marked ``complete`` after the last.

Integrity: opening checks every shard's size against its header and its record (a stat and a
header read per shard); ``verify=True`` (``lab store info``, and every resume) also checks the
SHA-256s, which reads the whole store. A damaged shard makes the store incomplete, is named by
any read, and is recomputed by a resume.

Reading (``ActivationStore``) is by model, hook and token slice, memory-mapped, and as a stacked
``[layer, token, d_model]`` tensor for probes, built with one copy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from lab.activations.hooks import match_hooks, split_patterns
from lab.activations.shards import ShardReader, ShardRecord, shard_problem
from lab.errors import LabError, close_matches
from lab.types import Stacked

__all__ = [
    "FORMAT",
    "ActivationStore",
    "append_record",
    "identity_diff",
    "model_location",
    "scan_shards",
    "shard_path",
    "shard_records",
    "write_manifest",
]

FORMAT = "steerlab-activation-store/1"
MANIFEST = "manifest.json"
JOURNAL = "shards.jsonl"
_SHARD = re.compile(r"shard-(\d{6})\.safetensors")
# Manifest keys that must agree for a store to be "the same store" (resume, reuse).
IDENTITY = ("models", "hooks", "dtype", "shapes", "dataset", "batch_size", "padding_side")


def shard_path(root: Path, index: int) -> Path:
    return root / f"shard-{index:06d}.safetensors"


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file, fsync, rename)."""
    tmp = root / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)


def model_location(source: str) -> str:
    """What a checkpoint name points at: an existing folder as its resolved absolute path (so
    ``./m``, ``m`` and ``/abs/m`` agree), anything else (a hub id, ``organism``) as given."""
    path = Path(source).expanduser()
    if source.split("/")[0] != "organism" and path.exists():
        return str(path.resolve())
    return source


def _identity(manifest: dict[str, Any], key: str) -> Any:
    value = manifest.get(key)
    if key == "models" and isinstance(value, dict):  # by what the names point at, not spelling
        return {
            role: (m.get("location") or model_location(m["source"]), m.get("fingerprint"))
            for role, m in value.items()
        }
    return value


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The identity keys on which two manifests differ."""
    return [k for k in IDENTITY if _identity(old, k) != _identity(new, k)]


def shard_records(root: Path, manifest: dict[str, Any]) -> dict[int, ShardRecord]:
    """Each shard's recorded size and checksum: the manifest's, updated by the journal's."""
    out = {
        i: ShardRecord(r["bytes"], r["sha256"])
        for i, r in enumerate(manifest.get("shards") or [])
        if r is not None
    }
    journal = root / JOURNAL
    if journal.is_file():
        for line in journal.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                out[int(r["index"])] = ShardRecord(int(r["bytes"]), str(r["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue  # blank, or cut short by a kill: that shard is checked by its header
    return out


def append_record(root: Path, index: int, record: ShardRecord) -> None:
    """Record a written shard in the journal (appended, flushed and fsynced)."""
    line = {"index": index, "bytes": record.bytes, "sha256": record.sha256}
    with open(root / JOURNAL, "a") as f:
        f.write("\n" + json.dumps(line))  # on a line of its own, even after one cut short
        f.flush()
        os.fsync(f.fileno())


def scan_shards(
    root: Path, manifest: dict[str, Any], checksum: bool
) -> tuple[list[int], dict[int, str]]:
    """The shard files present and intact, and the damaged ones with what is wrong with each."""
    records = shard_records(root, manifest)
    present = sorted(int(m.group(1)) for p in root.iterdir() if (m := _SHARD.fullmatch(p.name)))
    good, damaged = [], {}
    for i in present:
        problem = shard_problem(shard_path(root, i), records.get(i), checksum)
        if problem is None:
            good.append(i)
        else:
            damaged[i] = problem
    return good, damaged


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the store in ``root``, or None when there is none."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LabError(f"{path} is not valid JSON ({e}); this folder is not a usable store.") from e
    if manifest.get("format") != FORMAT:
        raise LabError(f"{path} is not a Steerlab activation store manifest ({FORMAT}).")
    return manifest


def complete_shards(root: Path) -> int:
    """How many shards 0..k-1 exist without a gap (the first missing one is k)."""
    present = {int(m.group(1)) for p in root.iterdir() if (m := _SHARD.fullmatch(p.name))}
    k = 0
    while k in present:
        k += 1
    return k


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
