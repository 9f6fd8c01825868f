"""The types a sweep config is made of: analysis and dataset kinds, jobs, and the parsed config.

These import no analysis: ``lab.sweeps.analyses.registry`` fills the registries of kinds with
them, ``lab.sweeps.sweep`` parses a TOML file into a ``SweepConfig`` of ``Job``s, and
``lab.sweeps.runner`` runs the jobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Analysis", "DatasetSource", "Job", "JobSpec", "SweepConfig", "digest"]


@dataclass(frozen=True)
class Analysis:
    """One kind of analysis: its parameter class, what it reads, and the function that runs it."""

    params: type  # a frozen dataclass; every TOML key of the analysis must be one of its fields
    # (lab.sweeps.context.SweepContext, params) -> tidy table
    run: Callable[[Any, Any], pd.DataFrame]
    needs_pair: bool = True  # whether a job names a pair (and usually a dataset)
    needs: Callable[[Any], tuple[str, ...]] = lambda params: ()  # params -> kinds it reads


@dataclass(frozen=True)
class DatasetSource:
    """One kind of dataset: its spec class, its builder and the files it reads."""

    params: type  # a frozen dataclass of the [datasets.NAME] table's keys (source included)
    # (lab.sweeps.context.SweepContext, spec) -> lab.datasets.dataset.Dataset
    build: Callable[[Any, Any], Any]
    inputs: Callable[[SweepConfig, Any], list[Path]]  # files the dataset is made from


@dataclass(frozen=True)
class JobSpec:
    """The keys every ``[[analyses]]`` table may have besides the analysis's own parameters."""

    kind: str  # a key of lab.sweeps.analyses.registry.ANALYSES
    pair: str | None = None  # a name in [pairs]
    dataset: str | None = None  # a name in [datasets]
    name: str | None = None  # a name other analyses' use = {...} can pick this job by
    use: dict[str, str] | None = None  # needed kind -> the name of the job that provides it
    # what the job asks of a Ray or Slurm executor, over [run.ray] / [run.slurm]: num_cpus,
    # num_gpus, memory (bytes); where a job runs is not part of its id
    resources: dict[str, float] | None = None


def digest(record: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able record."""
    blob = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Job:
    """One analysis on one pair and dataset, with its parameters and what its result depends on."""

    kind: str  # key of lab.sweeps.analyses.registry.ANALYSES
    pair: str | None  # name in the config's [pairs]
    dataset: str | None  # name in the config's [datasets]
    params: Any  # the analysis's parameter dataclass
    index: int = 0  # position in the config's [[analyses]]
    name: str | None = None  # the job's name, if the config gives one
    use: dict[str, str] | None = field(default=None, hash=False)  # kind -> name of the provider
    resources: dict[str, float] = field(default_factory=dict, hash=False)  # JobSpec.resources
    needs: dict[str, str] = field(default_factory=dict, hash=False)  # kind -> id of the provider
    identity: dict[str, Any] = field(default_factory=dict, hash=False)  # what the result depends on

    @property
    def id(self) -> str:
        """``<pair>-<dataset>-<hash of the identity record>`` (lab.sweeps.identity)."""
        return f"{self.pair or 'all'}-{self.dataset or 'all'}-{digest(self.identity)}"


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
    jobs: list[Job]  # expanded, in config order (jobs[i].index == i)
    raw: dict[str, Any] = field(repr=False)  # the config as read, written next to the results
    order: list[int] = field(default_factory=list)  # job indices in dependency order
    executor: str = "local"  # a key of lab.sweeps.executors.EXECUTORS; options in raw["run"]
    max_retries: int = 2  # times a failed job is submitted again before the sweep fails

    def job(self, job_id: str) -> Job:
        """The job with this id."""
        return next(j for j in self.jobs if j.id == job_id)
