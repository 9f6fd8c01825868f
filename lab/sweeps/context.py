"""What a running sweep job can ask for: its pair, dataset, the organism, and the results of the
jobs it needs. Pairs, datasets and the organism load once per sweep.

The context knows no analysis: the runner hands it the function that builds a dataset from its
spec (``lab.sweeps.analyses.registry.build_dataset``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.models.checkpoints import data_dir
from lab.models.pair import ModelPair, load_pair
from lab.organism.evaluate import Organism, load_organism
from lab.sweeps.config import Job, SweepConfig
from lab.sweeps.graph import label

__all__ = ["DatasetBuilder", "SweepContext", "result_path"]

# (context, a [datasets.NAME] table) -> the dataset it describes
DatasetBuilder = Callable[["SweepContext", dict[str, Any]], Dataset]


def result_path(config: SweepConfig, job: Job) -> Path:
    """Where a job's table is written: ``results/<kind>/<job id>.parquet``."""
    return config.out / "results" / job.kind / f"{job.id}.parquet"


class SweepContext:
    """What a running job can ask for; pairs, datasets and the organism load once per sweep.

    ``build`` makes a dataset from a ``[datasets.NAME]`` table and the context
    (``lab.sweeps.analyses.registry.build_dataset``)."""

    def __init__(
        self,
        config: SweepConfig,
        build: DatasetBuilder,
        job: Job | None = None,
        cache: dict[tuple, Any] | None = None,
    ):
        self.config, self.build, self.job = config, build, job
        self._cache: dict[tuple, Any] = {} if cache is None else cache

    def for_job(self, job: Job) -> SweepContext:
        """The context of ``job``, sharing what this sweep has loaded."""
        return SweepContext(self.config, self.build, job, self._cache)

    @property
    def out(self) -> Path:
        return self.config.out

    def _get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def pair(self, name: str | None = None) -> ModelPair:
        """The loaded ``ModelPair`` named ``name`` (default: the job's)."""
        name = name or self.job.pair
        spec = dict(self.config.pairs[name])
        spec["device"] = spec.get("device") or self.config.device
        spec["dtype"] = spec.get("dtype") or self.config.dtype
        return self._get(
            ("pair", name), lambda: load_pair(spec.pop("base"), spec.pop("tuned", None), **spec)
        )

    def organism(self) -> Organism | None:
        """The shipped organism (world, labeler, pi*) when the job's pair is the organism."""
        spec = self.config.pairs[self.job.pair]
        names = {str(spec.get("base")), str(spec.get("tuned") or spec.get("base"))}
        if not all(n == "organism" or n.startswith("organism/") for n in names):
            return None
        return self._get(("organism",), lambda: load_organism(data_dir() / "organism"))

    def required_organism(self) -> Organism:
        """The shipped organism; refuses a job whose pair is not the organism."""
        org = self.organism()
        if org is None:
            raise LabError(
                f"The {self.job.kind!r} analysis needs the organism pair (base = 'organism')."
            )
        return org

    def dataset(self, name: str | None = None) -> Dataset:
        """The dataset named ``name`` (default: the job's), built by its source."""
        name = name or self.job.dataset
        if name is None:
            raise LabError(f"The {self.job.kind!r} analysis needs a dataset: add dataset = NAME.")
        spec = self.config.datasets[name]
        return self._get(("dataset", name), lambda: self.build(self, spec))

    def needed_job(self, kind: str) -> Job:
        """The exact job of ``kind`` that this job reads (resolved when the config loaded)."""
        if kind not in self.job.needs:
            raise LabError(
                f"{label(self.job)} reads a {kind!r} result but does not declare that need; "
                f"add {kind!r} to its Analysis.needs in lab.sweeps.analyses.registry."
            )
        return self.config.job(self.job.needs[kind])

    def needed(self, kind: str) -> pd.DataFrame:
        """The table of the ``kind`` job this job reads."""
        job = self.needed_job(kind)
        path = result_path(self.config, job)
        if not path.exists():
            raise LabError(f"{label(job)} has not finished ({path} is missing); run the sweep.")
        return pd.read_parquet(path)
