"""The sweep's analyses and dataset sources, each a small strategy registered by name.

``probes.sweep`` expands a config into jobs; each job calls one analysis here with a
``SweepContext`` (which loads pairs and datasets once) and its frozen parameter dataclass, and
gets back a tidy table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lab.errors import LabError, close_matches
from probes.sweep import ANALYSES, Analysis, SweepContext

__all__ = ["DATASET_SOURCES", "build_dataset"]


# ---- dataset sources ----------------------------------------------------------------------
def _path(ctx: SweepContext, spec: dict[str, Any]) -> Path:
    from lab.checkpoints import data_dir

    raw = Path(spec["path"])
    for root in (ctx.config.path.parent if ctx.config.path else Path.cwd(), data_dir().parent):
        if (root / raw).exists():
            return root / raw
    raise LabError(f"Dataset file {raw} not found (relative to the config or the repository).")


def _jsonl(ctx: SweepContext, spec: dict[str, Any]):
    from lab.datasets import Dataset

    return Dataset.from_jsonl(_path(ctx, spec), ctx.pair().tokenizer)


def _text(ctx: SweepContext, spec: dict[str, Any]):
    from lab.datasets import Dataset

    return Dataset.from_text_file(_path(ctx, spec), ctx.pair().tokenizer)


def _organism(ctx: SweepContext, spec: dict[str, Any]):
    from lab.checkpoints import organism_dir
    from lab.datasets import Dataset
    from lab.organism.evaluate import read_card
    from lab.organism.labeler import Labeler
    from lab.organism.world import HMM

    card = read_card(organism_dir("rlhf"))
    world, labeler = HMM.from_dict(card["world"]), Labeler.from_dict(card["labeler"])
    gen = torch.Generator().manual_seed(int(spec.get("seed", ctx.config.seed)))
    sample = world.sample(int(spec.get("n", 128)), int(spec.get("length", card["length"])), gen)
    return Dataset.from_organism(sample, labeler, name="organism")


DATASET_SOURCES: dict[str, Callable[[SweepContext, dict[str, Any]], Any]] = {
    "organism": _organism,
    "jsonl": _jsonl,
    "text": _text,
}


def build_dataset(ctx: SweepContext, spec: dict[str, Any]):
    """Build the dataset a config's ``[datasets.NAME]`` table describes."""
    source = spec.get("source")
    if source not in DATASET_SOURCES:
        raise LabError(
            f"Unknown dataset source {source!r}; valid: {', '.join(DATASET_SOURCES)}."
            + close_matches(str(source), DATASET_SOURCES)
        )
    return DATASET_SOURCES[source](ctx, spec)


# ---- analyses -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsParams:
    """Relative weight change ||W_tuned - W_base|| / ||W_base|| per block (no parameters)."""


def _weights(ctx: SweepContext, params: WeightsParams) -> pd.DataFrame:
    from lab.summary import weight_change

    rows = [
        {"group": g, "metric": "relative_weight_change", "value": v}
        for g, v in weight_change(ctx.pair()).items()
    ]
    return pd.DataFrame(rows)


ANALYSES["weights"] = Analysis(WeightsParams, _weights)
