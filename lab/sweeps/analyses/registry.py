"""The registries of the sweep's kinds: every analysis and every dataset source by name.

A config's ``kind = "..."`` is a key of ``ANALYSES`` and its ``source = "..."`` a key of
``DATASET_SOURCES``. The analyses themselves live beside this module, by concern:
``pair`` (weights, calibration), ``organism`` (the organism against its world), ``probing``
(activations cached once, probes from the store), ``causal`` (patching, swapping, components)
and ``datasets`` (the sources).
"""

from __future__ import annotations

from typing import Any

from lab.datasets.dataset import Dataset
from lab.sweeps.analyses import causal, probing
from lab.sweeps.analyses.datasets import (
    FileData,
    OrganismData,
    WorldData,
    file_inputs,
    jsonl_data,
    organism_data,
    organism_inputs,
    text_data,
    world_data,
)
from lab.sweeps.analyses.organism import (
    FrontierParams,
    OrganismEvalParams,
    ReliabilityParams,
    frontier_job,
    organism_eval_job,
    reliability_job,
)
from lab.sweeps.analyses.pair import CalibrateParams, WeightsParams, calibrate_job, weights_job
from lab.sweeps.config import Analysis, DatasetSource
from lab.sweeps.context import SweepContext

__all__ = ["ANALYSES", "DATASET_SOURCES", "build_dataset"]

DATASET_SOURCES: dict[str, DatasetSource] = {
    "organism": DatasetSource(OrganismData, organism_data, organism_inputs),
    "jsonl": DatasetSource(FileData, jsonl_data, file_inputs),
    "text": DatasetSource(FileData, text_data, file_inputs),
    "world": DatasetSource(WorldData, world_data, file_inputs),
}


def build_dataset(ctx: SweepContext, spec: dict[str, Any]) -> Dataset:
    """Build the dataset a config's ``[datasets.NAME]`` table describes (validated on load)."""
    source = DATASET_SOURCES[spec["source"]]
    return source.build(ctx, source.params(**spec))


ANALYSES: dict[str, Analysis] = {
    "weights": Analysis(WeightsParams, weights_job),
    "organism_eval": Analysis(OrganismEvalParams, organism_eval_job),
    "reliability": Analysis(ReliabilityParams, reliability_job),
    "frontier": Analysis(FrontierParams, frontier_job),
    "calibrate": Analysis(CalibrateParams, calibrate_job),
    "cache": Analysis(probing.CacheParams, probing.cache_job),
    # probes read the store of this pair and dataset's cache job, unless they name a store
    "probes": Analysis(
        probing.ProbesParams, probing.probes_job, needs=lambda p: () if p.store else ("cache",)
    ),
    "patching": Analysis(causal.PatchingParams, causal.patching_job),
    "swap": Analysis(causal.SwapParams, causal.swap_job),
    "classify": Analysis(causal.ClassifyParams, causal.classify_job),
    "joint": Analysis(causal.JointParams, causal.joint_job, needs=lambda p: ("classify",)),
    "examples": Analysis(causal.ExamplesParams, causal.examples_job, needs=lambda p: ("classify",)),
}
