"""The sweep's analyses and dataset sources, by concern, and their registries (``registry``)."""

from lab.sweeps.analyses.registry import ANALYSES, DATASET_SOURCES, build_dataset

__all__ = ["ANALYSES", "DATASET_SOURCES", "build_dataset"]
