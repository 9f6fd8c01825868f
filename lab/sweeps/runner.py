"""A sweep's run folder and jobs: finished jobs skipped, stale results reported and redone, each
job's table written by the job, and each analysis's top-level table rewritten as its jobs finish
(``lab.sweeps.driver`` schedules the jobs on an executor).

A job's table goes to ``results/<kind>/<job id>.parquet``, next to a record (``.json``) of what
it was computed from. The id hashes that record, so a table on disk under the current id is this
config's result; a table of the same analysis under another id is stale, and is reported (with
what changed) and recomputed, never taken. ``<kind>.parquet`` next to ``config.toml`` always
holds exactly the finished jobs of the config beside it: the tables of an earlier config are
removed before the new ``config.toml`` is written, and each table is rewritten, atomically, as
each of its jobs finishes, so the report of a killed run shows the finished work.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from lab.sweeps.analyses.registry import ANALYSES
from lab.sweeps.config import Job, SweepConfig
from lab.sweeps.context import SweepContext, result_path
from lab.sweeps.graph import label
from lab.sweeps.identity import differences

__all__ = ["plan_text", "run_job", "stale_notes", "start_run", "write_table"]


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _environment() -> dict[str, Any]:
    libs = ("steerlab", "torch", "transformer-lens", "transformers", "numpy", "pandas")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "versions": {name: _version(name) for name in libs},
    }


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a retry may overlap a lost try
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    _atomic_bytes(path, df.to_parquet(index=False))


def _record(job: Job) -> dict[str, Any]:
    keys = ("index", "kind", "pair", "dataset", "name")
    return {"id": job.id, **{k: getattr(job, k) for k in keys}, "identity": job.identity}


def write_table(config: SweepConfig, kind: str) -> None:
    """``<kind>.parquet``: the finished ``kind`` jobs of this config, in config order (removed
    when none has finished)."""
    parts = [
        pd.read_parquet(p)
        for j in config.jobs
        if j.kind == kind and (p := result_path(config, j)).exists()
    ]
    top = config.out / f"{kind}.parquet"
    if parts:
        _write_parquet(pd.concat(parts, ignore_index=True), top)
    else:
        top.unlink(missing_ok=True)


def _earlier(config: SweepConfig, job: Job) -> tuple[str, list[str] | None] | None:
    """A table of the same analysis made from another config: (its id, what changed or None)."""
    folder = config.out / "results" / job.kind
    best: tuple[int, str, list[str] | None] | None = None
    for table in sorted(folder.glob("*.parquet")) if folder.exists() else []:
        if table.stem == job.id:
            continue
        record_file = table.with_suffix(".json")
        if record_file.exists():
            rec = json.loads(record_file.read_text())
            if (rec["pair"], rec["dataset"]) != (job.pair, job.dataset):
                continue
            changed = differences(rec["identity"], job.identity)
            rank = (rec["index"] != job.index) * 1000 + len(changed)
        else:  # written before job records existed
            try:
                cols = pd.read_parquet(table, columns=["pair", "dataset"]).head(1)
            except (OSError, ValueError, KeyError):
                continue
            if cols.empty or tuple(cols.iloc[0]) != (job.pair, job.dataset):
                continue
            changed, rank = None, 10_000
        if best is None or rank < best[0]:
            best = (rank, table.stem, changed)
    return None if best is None else best[1:]


def _stale_line(job: Job, earlier: tuple[str, list[str] | None]) -> str:
    old, changed = earlier
    why = f"{', '.join(changed)} changed" if changed else "no record of their config"
    return f"stale: {label(job)}: results {old} ({why}); rerunning as {job.id}"


def stale_notes(config: SweepConfig) -> list[str]:
    """One line per job to do whose analysis has results from another config."""
    notes = []
    for job in config.jobs:
        if not result_path(config, job).exists() and (e := _earlier(config, job)):
            notes.append(_stale_line(job, e))
    return notes


def plan_text(config: SweepConfig) -> str:
    """The job graph in run order: each job's state, id, what it reads, and stale results."""
    lines = [f"{len(config.jobs)} jobs in {config.out}, in run order:"]
    for i in config.order:
        job = config.jobs[i]
        done = result_path(config, job).exists()
        earlier = None if done else _earlier(config, job)
        state = "done" if done else "stale" if earlier else "todo"
        line = f"  {state:<5} {job.id}  {label(job)}"
        if job.needs:
            reads = ", ".join(f"{label(config.job(v))} ({v})" for v in job.needs.values())
            line += f"\n          reads {reads}"
        if earlier:
            line += "\n          " + _stale_line(job, earlier)
        lines.append(line)
    return "\n".join(lines)


def _start(config: SweepConfig) -> None:
    """Clear the previous config's top-level tables, then write this config and its tables."""
    for kind in ANALYSES:
        (config.out / f"{kind}.parquet").unlink(missing_ok=True)
    if config.path is not None:
        _atomic_bytes(config.out / "config.toml", config.path.read_bytes())
        (config.out / "config.json").unlink(missing_ok=True)
    else:
        text = json.dumps(config.raw, indent=2, default=str)
        _atomic_bytes(config.out / "config.json", text.encode())
        (config.out / "config.toml").unlink(missing_ok=True)
    _atomic_bytes(config.out / "environment.json", json.dumps(_environment(), indent=2).encode())
    for kind in sorted({j.kind for j in config.jobs}):
        write_table(config, kind)


def start_run(config: SweepConfig) -> list[Job]:
    """Report stale results, write this config and its tables to the run folder, and return
    the jobs not yet done, in dependency order."""
    config.out.mkdir(parents=True, exist_ok=True)
    for note in stale_notes(config):
        print(note, file=sys.stderr)
    _start(config)
    todo = [config.jobs[i] for i in config.order]
    return [j for j in todo if not result_path(config, j).exists()]


def run_job(ctx: SweepContext, job: Job) -> None:
    """Run ``job`` with ``ctx`` (its sweep's context) and write its table and its record, each
    atomically; the driver rewrites the top-level table (``write_table``) once it is done."""
    table = ANALYSES[job.kind].run(ctx.for_job(job), job.params)
    table = table.assign(job=job.id, pair=job.pair, dataset=job.dataset)
    path = result_path(ctx.config, job)
    _atomic_bytes(path.with_suffix(".json"), json.dumps(_record(job), indent=1).encode())
    _write_parquet(table, path)
