"""What a sweep job's result depends on, as a JSON-able record, and how two records differ.

A job's id (``lab.sweeps.config.Job.id``) is a hash of this record, so a changed checkpoint (its
files' sizes or modification times), dataset spec or file, seed, device, dtype, parameter, or a
changed job it reads gives a new id, and the old table is not taken for the new one. A
checkpoint folder counts by its resolved absolute path (a relative and an absolute path to it
are the same); a hub id counts as itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.models.checkpoints import data_dir, resolve_checkpoint
from lab.runtime import default_device, resolve_dtype
from lab.sweeps.config import DatasetSource, Job, SweepConfig

__all__ = [
    "checkpoint_identity",
    "differences",
    "file_identity",
    "folder_identity",
    "identify",
]


def file_identity(path: Path) -> dict[str, Any]:
    """A file by resolved path, size and modification time."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def folder_identity(folder: Path) -> dict[str, Any]:
    """A folder by resolved path and each of its files' size and modification time."""
    folder = folder.resolve()
    files = {
        p.name: [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }
    return {"path": str(folder), "files": files}


def checkpoint_identity(name: str, role: str, *, allow_pickle: bool = False) -> dict[str, Any]:
    """A checkpoint as ``lab.load_pair`` resolves it for ``role``: folder contents or hub id."""
    ckpt = resolve_checkpoint(name, role, allow_pickle=allow_pickle)
    if not ckpt.is_local:
        return {"hub": ckpt.location}
    return folder_identity(Path(ckpt.location))


def differences(old: Any, new: Any, prefix: str = "", depth: int = 3) -> list[str]:
    """Dotted keys (at most ``depth`` deep) where two records differ, e.g. ``pair.tuned``."""
    if old == new:
        return []
    if depth == 0 or not (isinstance(old, dict) and isinstance(new, dict)):
        return [prefix or "(everything)"]
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        where = f"{prefix}.{key}" if prefix else str(key)
        out += differences(old.get(key), new.get(key), where, depth - 1)
    return out


def _pair_identity(config: SweepConfig, name: str) -> dict[str, Any]:
    spec = config.pairs[name]
    pickle = bool(spec.get("allow_pickle"))
    base, tuned = spec["base"], spec.get("tuned") or spec["base"]
    out = {
        "name": name,
        "base": checkpoint_identity(base, "base", allow_pickle=pickle),
        "tuned": checkpoint_identity(tuned, "tuned", allow_pickle=pickle),
        "device": spec.get("device") or config.device or default_device().type,
        "dtype": str(resolve_dtype(spec.get("dtype") or config.dtype)),
        "options": {k: v for k, v in spec.items() if k not in ("base", "tuned", "device", "dtype")},
    }
    if any(str(n).split("/")[0] == "organism" for n in (base, tuned)):  # world, pi*, reward model
        shipped = data_dir() / "organism"
        out["organism"] = {
            p.name: folder_identity(p) for p in sorted(shipped.iterdir()) if p.is_dir()
        }
    return out


def _dataset_identity(
    config: SweepConfig, name: str, sources: Mapping[str, DatasetSource]
) -> dict[str, Any]:
    spec = config.datasets[name]
    source = sources[spec["source"]]
    files = source.inputs(config, source.params(**spec))
    return {"name": name, "spec": spec, "files": [file_identity(p) for p in files]}


def identify(
    config: SweepConfig, deps: list[dict[str, int]], sources: Mapping[str, DatasetSource]
) -> list[Job]:
    """``config.jobs``, each with the ids of the jobs it reads (``deps``: kind -> job index) and
    the record of everything its result depends on (``sources``: the dataset kinds, for the
    files each dataset reads); dependencies first, so their ids exist."""
    pairs = {name: _pair_identity(config, name) for name in config.pairs}
    data = {name: _dataset_identity(config, name, sources) for name in config.datasets}
    jobs = list(config.jobs)
    for i in config.order:
        job = jobs[i]
        needs = {kind: jobs[k].id for kind, k in deps[i].items()}
        identity = {
            "kind": job.kind,
            "params": dataclasses.asdict(job.params),
            "seed": config.seed,
            "device": config.device,
            "dtype": config.dtype,
            "pair": pairs.get(job.pair),
            "dataset": data.get(job.dataset),
            "needs": needs,
        }
        jobs[i] = dataclasses.replace(job, needs=needs, identity=identity)
    return jobs
