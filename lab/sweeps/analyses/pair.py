"""Sweep analyses of a pair as a whole: its weight change and the known-distribution calibration
suite. Each is ``(SweepContext, params) -> tidy DataFrame``; ``lab.sweeps.analyses.registry``
registers them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from lab.calibration.calibrate import calibrate
from lab.models.summary import weight_change
from lab.sweeps.context import SweepContext

__all__ = ["CalibrateParams", "WeightsParams", "calibrate_job", "weights_job"]


@dataclass(frozen=True)
class WeightsParams:
    """Relative weight change ||W_tuned - W_base|| / ||W_base|| per block (no parameters)."""


def weights_job(ctx: SweepContext, params: WeightsParams) -> pd.DataFrame:
    """One row per weight group (block, embed, other): its relative change."""
    change = weight_change(ctx.pair())
    return pd.DataFrame(
        [{"group": g, "metric": "relative_weight_change", "value": v} for g, v in change.items()]
    )


@dataclass(frozen=True)
class CalibrateParams:
    """The known-distribution calibration suite on both models (lab.calibration.calibrate)."""

    sets: list[str] = field(default_factory=lambda: ["calibration"])  # NAME or NAME:MODE


def calibrate_job(ctx: SweepContext, p: CalibrateParams) -> pd.DataFrame:
    """One row per record and model; outcome lists and probabilities as JSON text."""
    table = calibrate(ctx.pair(), p.sets)
    return table.assign(outcomes=table.outcomes.map(json.dumps), probs=table.probs.map(json.dumps))
