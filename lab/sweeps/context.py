"""What a running sweep job can ask for: its pair, dataset, the organism, and the results of the
jobs it needs. Pairs, datasets and the organism load once per sweep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lab.errors import LabError
from lab.sweeps.graph import label

if TYPE_CHECKING:
    from lab.sweeps.sweep import Job, SweepConfig

__all__ = ["SweepContext", "result_path"]


def result_path(config: SweepConfig, job: Job) -> Path:
    """Where a job's table is written: ``results/<kind>/<job id>.parquet``."""
    return config.out / "results" / job.kind / f"{job.id}.parquet"


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
        from lab.models.pair import load_pair

        name = name or self.job.pair
        spec = dict(self.config.pairs[name])
        spec["device"] = spec.get("device") or self.config.device
        spec["dtype"] = spec.get("dtype") or self.config.dtype
        return self._get(
            ("pair", name), lambda: load_pair(spec.pop("base"), spec.pop("tuned", None), **spec)
        )

    def organism(self) -> Any | None:
        """The shipped organism (world, labeler, pi*) when the job's pair is the organism."""
        from lab.models.checkpoints import data_dir
        from lab.organism.evaluate import load_organism

        spec = self.config.pairs[self.job.pair]
        names = {str(spec.get("base")), str(spec.get("tuned") or spec.get("base"))}
        if not all(n == "organism" or n.startswith("organism/") for n in names):
            return None
        return self._get(("organism",), lambda: load_organism(data_dir() / "organism"))

    def dataset(self, name: str | None = None) -> Any:
        """The dataset named ``name`` (default: the job's), built by its source."""
        from lab.sweeps.analyses import build_dataset

        name = name or self.job.dataset
        if name is None:
            raise LabError(f"The {self.job.kind!r} analysis needs a dataset: add dataset = NAME.")
        return self._get(("dataset", name), lambda: build_dataset(self, self.config.datasets[name]))

    def needed_job(self, kind: str) -> Job:
        """The exact job of ``kind`` that this job reads (resolved when the config loaded)."""
        if kind not in self.job.needs:
            raise LabError(
                f"{label(self.job)} reads a {kind!r} result but does not declare that need; "
                f"add {kind!r} to its Analysis.needs in lab.sweeps.analyses."
            )
        return self.config.job(self.job.needs[kind])

    def needed(self, kind: str) -> pd.DataFrame:
        """The table of the ``kind`` job this job reads."""
        job = self.needed_job(kind)
        path = result_path(self.config, job)
        if not path.exists():
            raise LabError(f"{label(job)} has not finished ({path} is missing); run the sweep.")
        return pd.read_parquet(path)
