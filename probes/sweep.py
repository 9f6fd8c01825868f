"""Sweeps: a TOML config expands into jobs, each writing one tidy table; done jobs are skipped.

A config names pairs, datasets and analyses::

    [run]
    out = "runs/organism"            # where results go (relative to the config file)

    [pairs.organism]
    base = "organism"
    tuned = "organism"

    [datasets.world]
    source = "organism"              # see lab.datasets
    n = 128

    [[analyses]]
    kind = "probes"                  # a key of ANALYSES
    pair = "organism"
    dataset = "world"
    ...                              # the analysis's own parameters

Each analysis kind is a small strategy in ``probes.analyses.ANALYSES``: its
parameters (a frozen dataclass, so unknown keys are refused by name) and a function from a
``SweepContext`` and those parameters to a tidy ``DataFrame``. A job's table is written
atomically to ``results/<kind>/<job>.parquet``; a crashed sweep run again skips finished jobs,
so nothing finished is lost. At the end each analysis's jobs are concatenated into
``<kind>.parquet`` next to ``config.toml`` and ``environment.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from lab.errors import LabError, close_matches

__all__ = ["Analysis", "Job", "SweepConfig", "SweepContext", "load_config", "run"]

_TOP_KEYS = ("run", "pairs", "datasets", "analyses")
_RUN_KEYS = ("out", "seed", "device", "dtype")


@dataclass(frozen=True)
class Analysis:
    """One kind of analysis: its parameter class and the function that runs one job."""

    params: type  # a frozen dataclass; every TOML key of the analysis must be one of its fields
    run: Callable[[SweepContext, Any], pd.DataFrame]  # (context, params) -> tidy table
    needs_pair: bool = True  # whether a job names a pair (and usually a dataset)


def _analyses() -> dict[str, Analysis]:
    from probes.analyses import ANALYSES

    return ANALYSES


@dataclass(frozen=True)
class Job:
    """One analysis on one pair and dataset, with its parameters."""

    kind: str  # key of probes.analyses.ANALYSES
    pair: str | None  # name in the config's [pairs]
    dataset: str | None  # name in the config's [datasets]
    params: Any  # the analysis's parameter dataclass

    @property
    def id(self) -> str:
        blob = json.dumps(
            [self.kind, self.pair, self.dataset, dataclasses.asdict(self.params)],
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        return f"{self.pair or 'all'}-{self.dataset or 'all'}-{digest}"


@dataclass(frozen=True)
class SweepConfig:
    """A parsed, validated sweep config."""

    path: Path | None  # the TOML file, if read from one
    out: Path  # output folder
    seed: int  # base seed for every job
    device: str | None  # device for models (None: CUDA when available)
    dtype: str | None  # model dtype (None: float32)
    pairs: dict[str, dict[str, Any]]  # name -> load_pair keyword arguments (base, tuned, ...)
    datasets: dict[str, dict[str, Any]]  # name -> dataset spec (source, ...)
    jobs: list[Job]  # expanded, in config order
    raw: dict[str, Any] = field(repr=False)  # the config as read, written next to the results


def _unknown(what: str, keys, valid) -> None:
    bad = sorted(set(keys) - set(valid))
    if bad:
        hint = close_matches(bad[0], valid)
        raise LabError(
            f"Unknown {what}: {', '.join(bad)}. Valid: {', '.join(sorted(valid))}.{hint}"
        )


def _job(i: int, spec: dict[str, Any], pairs, datasets) -> Job:
    analyses = _analyses()
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in analyses:
        raise LabError(
            f"analyses[{i}]: unknown kind {kind!r}. Valid analyses: {', '.join(sorted(analyses))}."
            + close_matches(str(kind), analyses)
        )
    analysis = analyses[kind]
    pair, dataset = spec.pop("pair", None), spec.pop("dataset", None)
    if analysis.needs_pair and pair not in pairs:
        raise LabError(f"analyses[{i}] ({kind}) names pair {pair!r}; defined: {sorted(pairs)}.")
    if dataset is not None and dataset not in datasets:
        raise LabError(
            f"analyses[{i}] ({kind}) names dataset {dataset!r}; defined: {sorted(datasets)}."
        )
    fields = [f.name for f in dataclasses.fields(analysis.params)]
    _unknown(f"keys in analyses[{i}] ({kind})", spec, [*fields, "kind", "pair", "dataset"])
    try:
        params = analysis.params(**spec)
    except (TypeError, ValueError) as e:
        raise LabError(f"analyses[{i}] ({kind}): {e}") from e
    return Job(kind, pair, dataset, params)


def load_config(source: str | Path | dict[str, Any], *, out: str | Path | None = None):
    """Parse and validate a sweep config (a TOML path or a dict) into a ``SweepConfig``."""
    path = None
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise LabError(f"No sweep config at {path}; see data/sweeps/ for examples.")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise LabError(f"{path} is not valid TOML: {e}") from e
    _unknown("top-level sections", raw, _TOP_KEYS)
    run_cfg = raw.get("run", {})
    _unknown("keys in [run]", run_cfg, _RUN_KEYS)
    pairs, datasets = raw.get("pairs", {}), raw.get("datasets", {})
    jobs = [_job(i, spec, pairs, datasets) for i, spec in enumerate(raw.get("analyses", []))]
    if not jobs:
        raise LabError("The config has no [[analyses]]; add at least one.")
    root = path.parent if path else Path.cwd()
    out_dir = Path(out) if out else root / run_cfg.get("out", "runs/sweep")
    return SweepConfig(
        path=path,
        out=out_dir,
        seed=int(run_cfg.get("seed", 0)),
        device=run_cfg.get("device"),
        dtype=run_cfg.get("dtype"),
        pairs=pairs,
        datasets=datasets,
        jobs=jobs,
        raw=raw,
    )


class SweepContext:
    """What a running job can ask for; pairs, datasets and the organism load once per sweep."""

    def __init__(self, config: SweepConfig, job: Job | None = None, cache=None):
        self.config, self.job = config, job
        self._cache: dict[tuple, Any] = {} if cache is None else cache

    def for_job(self, job: Job) -> SweepContext:
        return SweepContext(self.config, job, self._cache)

    @property
    def out(self) -> Path:
        return self.config.out

    def _get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def pair(self, name: str | None = None) -> Any:
        """The loaded ``ModelPair`` named ``name`` (default: the job's)."""
        from lab.models import load_pair

        name = name or self.job.pair
        spec = dict(self.config.pairs[name])
        spec.setdefault("device", self.config.device)
        spec.setdefault("dtype", self.config.dtype)
        return self._get(
            ("pair", name), lambda: load_pair(spec.pop("base"), spec.pop("tuned", None), **spec)
        )

    def organism(self) -> Any | None:
        """The shipped organism (world, labeler, pi*) when the job's pair is the organism."""
        from lab.checkpoints import data_dir
        from lab.organism.evaluate import load_organism

        spec = self.config.pairs[self.job.pair]
        names = {str(spec.get("base")), str(spec.get("tuned", spec.get("base")))}
        if not all(n == "organism" or n.startswith("organism/") for n in names):
            return None
        return self._get(("organism",), lambda: load_organism(data_dir() / "organism"))

    def dataset(self, name: str | None = None) -> Any:
        """The dataset named ``name`` (default: the job's), built by ``probes.analyses``."""
        from probes.analyses import build_dataset

        name = name or self.job.dataset
        if name is None:
            raise LabError(f"The {self.job.kind!r} analysis needs a dataset: add dataset = NAME.")
        return self._get(("dataset", name), lambda: build_dataset(self, self.config.datasets[name]))


def _environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    libs = ("steerlab", "torch", "transformer-lens", "transformers", "numpy", "pandas")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "versions": {name: v(name) for name in libs},
    }


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def run(source: str | Path | dict | SweepConfig, *, out: str | Path | None = None) -> Path:
    """Run every job not yet done; return the output folder (results per analysis inside)."""
    config = source if isinstance(source, SweepConfig) else load_config(source, out=out)
    config.out.mkdir(parents=True, exist_ok=True)
    if config.path is not None:
        shutil.copyfile(config.path, config.out / "config.toml")
    else:
        (config.out / "config.json").write_text(json.dumps(config.raw, indent=2, default=str))
    (config.out / "environment.json").write_text(json.dumps(_environment(), indent=2))
    ctx = SweepContext(config)
    todo = [
        j for j in config.jobs if not (config.out / "results" / j.kind / f"{j.id}.parquet").exists()
    ]
    for job in tqdm(todo, desc="sweep", unit="job", disable=not todo):
        table = _analyses()[job.kind].run(ctx.for_job(job), job.params)
        table = table.assign(job=job.id, pair=job.pair, dataset=job.dataset)
        _write_parquet(table, config.out / "results" / job.kind / f"{job.id}.parquet")
    for kind in sorted({j.kind for j in config.jobs}):
        parts = [
            pd.read_parquet(config.out / "results" / kind / f"{j.id}.parquet")
            for j in config.jobs
            if j.kind == kind
        ]
        _write_parquet(pd.concat(parts, ignore_index=True), config.out / f"{kind}.parquet")
    return config.out
