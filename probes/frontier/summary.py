"""Readings of a frontier table (pure functions of it): the calibration contrast, each curve's
cost, and the practitioner sampler against RLHF (at its best beta and at equal KL).

"RLHF peak" is the RLHF checkpoint of highest true utility on the frontier's prompts; "at equal
KL" interpolates the RLHF checkpoints' true utility (sorted by KL to the base) at each sampler
point's KL, within the checkpoints' KL range (outside it: no comparison, NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lab.errors import LabError

__all__ = ["calibration_contrast", "compare_with_rlhf", "curve_costs"]

_CONTRAST = ["method", "point", "predictor", "ece", "policy_ece", "true_utility", "kl_to_base"]


def _need(table: pd.DataFrame, method: str) -> pd.DataFrame:
    rows = table[table.method == method]
    if rows.empty:
        have = ", ".join(table.method.unique())
        raise LabError(f"The frontier table has no {method!r} rows (it has {have}).")
    return rows


def calibration_contrast(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, its best-utility point (and RLHF's last checkpoint): the ECE of prediction
    queries (``ece``, from the model that answers them) beside the ECE of the policy's own
    next-token distributions (``policy_ece``; NaN for a weighted sample set)."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        picks = {"best utility": part.true_utility.idxmax()}
        if method == "rlhf":
            picks["last checkpoint"] = part.knob.idxmax()
        for what, i in picks.items():
            r = part.loc[i]
            point = f"{what} ({r.knob_name}={r.knob:g})"
            rows.append({**r[_CONTRAST[2:]].to_dict(), "method": method, "point": point})
    return pd.DataFrame(rows, columns=_CONTRAST)


def curve_costs(table: pd.DataFrame) -> pd.DataFrame:
    """CPU seconds of each method's whole curve: measured here, recorded elsewhere (RLHF's
    training run), their total and per point."""
    cost = table.groupby("method", sort=False)[["points", "curve_cpu_s", "recorded_cpu_s"]].first()
    cost["total_cpu_s"] = cost.curve_cpu_s + cost.recorded_cpu_s
    cost["cpu_s_per_point"] = cost.total_cpu_s / cost.points
    return cost.reset_index()


def compare_with_rlhf(table: pd.DataFrame, method: str = "sampler_practitioner") -> dict[str, Any]:
    """``method`` at its best beta against the RLHF peak, and at equal KL against the RLHF
    checkpoint curve; with the costs of the sampler's betas by each route (RLHF: one recorded
    training run per beta)."""
    mine, rlhf = _need(table, method), _need(table, "rlhf")
    best, peak = mine.loc[mine.true_utility.idxmax()], rlhf.loc[rlhf.true_utility.idxmax()]
    curve = rlhf.sort_values("kl_to_base")
    kl, utility = curve.kl_to_base.to_numpy(), curve.true_utility.to_numpy()
    inside = (mine.kl_to_base >= kl.min()) & (mine.kl_to_base <= kl.max())
    at_kl = np.where(inside, np.interp(mine.kl_to_base, kl, utility), np.nan)
    equal = pd.DataFrame(
        {
            "beta": mine.knob.to_numpy(),
            "kl_to_base": mine.kl_to_base.to_numpy(),
            "true_utility": mine.true_utility.to_numpy(),
            "rlhf_true_utility_at_kl": at_kl,
            "difference": mine.true_utility.to_numpy() - at_kl,
        }
    )
    runs = len(mine)
    return {
        "method": method,
        "best_beta": float(best.knob),
        "best_true_utility": float(best.true_utility),
        "best_kl_to_base": float(best.kl_to_base),
        "rlhf_peak_step": float(peak.knob),
        "rlhf_peak_true_utility": float(peak.true_utility),
        "rlhf_peak_kl_to_base": float(peak.kl_to_base),
        "equal_kl": equal.to_dict("records"),
        "sampler_curve_cpu_s": float(mine.curve_cpu_s.iloc[0]),
        "rlhf_runs_for_the_same_betas_cpu_s": runs * float(rlhf.recorded_cpu_s.iloc[0]),
    }
