"""Steerlab: which components of a fine-tuned model stopped predicting and started steering?

A notebook's five lines (with ``probes``, the analyses)::

    org = lab.organism.load()              # the shipped pair (org.pair), its world and labeler
    data = lab.Dataset.from_organism(org.world.sample(256, org.length))   # exact targets
    store = lab.cache_pair(org.pair, data, "resid_post", out="runs/store")  # activations
    fits = probes.fit_probes(store, ["scene"])             # a linear probe per layer and model
    scores = probes.classify(org.pair, data.tokens[:64])   # per component: predicts or steers?
    lab.report.build({"classify": scores, "probes": fits.table}, "runs/report.html")

``lab.load_pair(base, tuned)`` loads any pair instead. The subpackages: ``models`` (loading,
outputs, the KL family), ``real`` (real pairs offline), ``datasets``, ``activations`` (hooks,
caching, the store), ``calibration``, ``organism``, ``report``, ``sweeps`` and ``cli``; see the
README's Layout.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.models.pair import ModelPair, PairConfig, load_pair

if TYPE_CHECKING:
    from lab import activations, calibration, datasets, models, organism, real, report, sweeps
    from lab.activations import ActivationStore, cache_pair
    from lab.datasets import Dataset

__all__ = [
    "ActivationStore",
    "Dataset",
    "LabError",
    "ModelPair",
    "PairConfig",
    "activations",
    "cache_pair",
    "calibration",
    "datasets",
    "load_pair",
    "models",
    "organism",
    "real",
    "report",
    "sweeps",
]

_SUBPACKAGES = {
    "activations",
    "calibration",
    "datasets",
    "models",
    "organism",
    "real",
    "report",
    "sweeps",
}
_NAMES = {
    "ActivationStore": "lab.activations",
    "cache_pair": "lab.activations",
    "Dataset": "lab.datasets",
}


def __getattr__(name: str) -> Any:
    # Start-up cost: importing every subpackage here would add about 1.9 s of CPU to the 6.1 s
    # of `import lab` (measured with time.process_time), and so to every `lab` command; each
    # subpackage loads on first use instead (PEP 562).
    if name in _SUBPACKAGES:
        return importlib.import_module(f"lab.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
