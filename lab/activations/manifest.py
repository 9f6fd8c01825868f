"""A store's manifest: what it holds and where it came from, written before the first shard.

``manifest.json`` names the models (source, resolved location, a weights fingerprint), the hooks
and their per-token shapes, the storage dtype, the dataset (name, hash, size), the batching, the
planned shard count, the package versions and, once complete, every shard's size and SHA-256. Two
manifests describe "the same store" (a resume, a reuse) when their ``IDENTITY`` keys agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from lab.activations.hooks import HookPlan
from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.models.pair import ModelPair

__all__ = [
    "FORMAT",
    "IDENTITY",
    "MANIFEST",
    "build_manifest",
    "identity_diff",
    "model_location",
    "now",
    "read_manifest",
    "weights_fingerprint",
    "write_manifest",
]

FORMAT = "steerlab-activation-store/1"
MANIFEST = "manifest.json"
# Manifest keys that must agree for a store to be "the same store" (resume, reuse).
IDENTITY = ("models", "hooks", "dtype", "shapes", "dataset", "batch_size", "padding_side")
_PACKAGES = ("torch", "transformers", "transformer-lens", "safetensors", "steerlab")


def now() -> str:
    """The current UTC time, to the second, as the manifest records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap hash of the weights: the first and last values of every parameter."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        edge = torch.cat([flat[:8], flat[-8:]]).float().cpu()
        h.update(name.encode() + edge.numpy().tobytes())
    return h.hexdigest()[:16]


def model_location(source: str) -> str:
    """What a checkpoint name points at: an existing folder as its resolved absolute path (so
    ``./m``, ``m`` and ``/abs/m`` agree), anything else (a hub id, ``organism``) as given."""
    path = Path(source).expanduser()
    if source.split("/")[0] != "organism" and path.exists():
        return str(path.resolve())
    return source


def build_manifest(
    pair: ModelPair,
    dataset: Dataset,
    plan: HookPlan,
    dtype: torch.dtype,
    batch_size: int,
    padding_side: str,
) -> dict[str, Any]:
    """The manifest of a new (not yet complete) store of ``plan``'s hooks over ``dataset``."""
    example = dataset.batch(0, 1)
    targets = {
        k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape[1:])}
        for k, t in example.targets.items()
    }
    return {
        "format": FORMAT,
        "models": {
            role: {
                "source": pair.sources.get(role, role),
                "location": model_location(pair.sources.get(role, role)),
                "fingerprint": weights_fingerprint(m),
            }
            for role, m in pair.models.items()
        },
        "hooks": list(plan.names),
        "shapes": {h: list(s) for h, s in plan.shapes.items()},
        "dtype": str(dtype).removeprefix("torch."),
        "dataset": {
            "name": dataset.name,
            "hash": dataset.fingerprint(),
            "n_sequences": len(dataset),
            "n_tokens": dataset.n_tokens,
        },
        "batch_size": batch_size,
        "padding_side": padding_side,
        "n_shards": -(-len(dataset) // batch_size),
        "targets": targets,
        "pair": {"architecture": pair.cfg.architecture, "n_layers": pair.cfg.n_layers},
        "versions": _versions(),
        "created": now(),
        "complete": False,
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file, fsync, rename)."""
    tmp = root / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)


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
