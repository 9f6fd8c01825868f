"""Attribution-pruned exact patching: attribution patching ranks every component, exact (cone)
patching runs only on the top candidates, until the attribution mass left out is below a stated
fraction.

For each metric, a component's mass is ``|estimated effect| / sum over components of |estimated
effect|``. Components are taken in decreasing mass until the mass of those left out is below
``prune_mass`` (strictly: ``prune_mass = 0`` keeps every component, so the pruned result equals
the exhaustive one). Several metrics: a component is a candidate when any metric needs it; a cap
``max_exact`` keeps the candidates ranked highest by any metric (ties: larger mass first).

``probes.components.classify`` uses it with ``ClassifyConfig(prune_mass=..., max_exact=...)``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lab.errors import LabError
from probes.patching.attribution import spearman

__all__ = ["check_pruning", "mass_left_out", "select_candidates", "with_estimates"]


def check_pruning(prune_mass: float | None, max_exact: int | None) -> None:
    """Refuse a pruning setting that means nothing, saying what to give instead."""
    if prune_mass is None:
        if max_exact is not None:
            raise LabError("max_exact caps attribution pruning; give prune_mass too (e.g. 0.05).")
        return
    if isinstance(prune_mass, bool) or not isinstance(prune_mass, (int, float)):
        raise LabError(f"prune_mass must be a number in [0, 1); got {prune_mass!r}.")
    if math.isnan(prune_mass) or not 0 <= prune_mass < 1:
        raise LabError(
            f"prune_mass must be in [0, 1) (the attribution mass left to estimates; 0 patches "
            f"every component exactly); got {prune_mass}."
        )
    if max_exact is not None and (
        isinstance(max_exact, bool) or not isinstance(max_exact, int) or max_exact < 1
    ):
        raise LabError(f"max_exact must be a whole number >= 1 (or None); got {max_exact!r}.")


def _masses(estimates: pd.DataFrame) -> pd.DataFrame:
    """Component x metric table of each component's share of the metric's total |effect|."""
    effect = estimates.pivot_table(
        index="component", columns="metric", values="effect", aggfunc="sum", sort=False
    )
    size = effect.abs()
    total = size.sum()
    return (size / total.where(total > 0)).fillna(0.0)


def select_candidates(
    estimates: pd.DataFrame, prune_mass: float, max_exact: int | None = None
) -> list[str]:
    """The components exact patching must run on, best first.

    ``estimates``: one row per (component, metric) with the estimated ``effect``. At least one
    component is kept (even when every estimate is 0: then no mass tells them apart).
    """
    check_pruning(prune_mass, max_exact)
    mass = _masses(estimates)
    best: dict[str, tuple[int, float]] = {}  # component -> (best rank, its mass there)
    for metric in mass.columns:
        col = mass[metric].sort_values(ascending=False, kind="stable")
        # left[k]: the mass left out when the first k are taken (summed, never below 0)
        left = np.append(np.cumsum(col.to_numpy()[::-1])[::-1], 0.0)
        needed = int(np.argmax(left < prune_mass)) if (left < prune_mass).any() else len(col)
        for rank, name in enumerate(col.index[: max(needed, 1)]):
            old = best.get(name)
            if old is None or (rank, -col[name]) < (old[0], -old[1]):
                best[name] = (rank, float(col[name]))
    order = sorted(best, key=lambda n: (best[n][0], -best[n][1]))
    return order[:max_exact] if max_exact is not None else order


def mass_left_out(estimates: pd.DataFrame, exact: set[str]) -> pd.Series:
    """Per metric, the attribution mass of the components not in ``exact``."""
    mass = _masses(estimates)
    return mass.loc[~mass.index.isin(list(exact))].sum()


_GROUP = ["model", "score", "metric"]  # one run of exact patching and its estimates


def with_estimates(table: pd.DataFrame, est: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Classify's exact scores (``table``), then the components pruned away with attribution's
    estimate as their value (``exact`` False, no interval; the gap and its interval are the
    group's, the unpatched runs' own). Columns added: ``exact``, ``estimate`` (attribution's
    share, or extra KL for the prediction score), and per (model, score, metric) ``rank_corr``
    (Spearman, exact scores vs their estimates, over the exact components) and
    ``mass_left_out``. ``est``: raw rows (value, target, source) of the estimates."""
    if est.empty:
        return table.assign(exact=True, estimate=np.nan, rank_corr=np.nan, mass_left_out=0.0)
    effect = est.value - est.target
    gap = (est.source - est.target).where(lambda g: g != 0)
    estimate = effect.where(est.score != "steering", effect / gap)
    est = est.assign(estimate=estimate, effect=effect)[[*keys, "estimate", "effect"]]
    exact = table.merge(est, on=keys, how="left").assign(exact=True)
    index = ["component", *_GROUP]
    done = est.set_index(index).index.isin(exact.set_index(index).index)
    shared = exact.drop_duplicates(_GROUP).set_index(_GROUP)
    shared = shared[["gap", "gap_lo", "gap_hi", "within_noise"]]
    skipped = est[~done].join(shared, on=_GROUP)
    skipped = skipped.assign(value=skipped.estimate, lo=np.nan, hi=np.nan, exact=False)
    every = pd.concat([exact, skipped], ignore_index=True)
    stats = []
    for key, part in every.groupby(_GROUP, sort=False):
        got = part[part.exact.astype(bool)]
        left = mass_left_out(part.assign(metric="m"), set(got.component)).get("m", 0.0)
        rank = spearman(got.value, got.estimate) if len(got) > 1 else np.nan
        stats.append({**dict(zip(_GROUP, key, strict=True)), "rank_corr": rank,
                      "mass_left_out": float(left)})  # fmt: skip
    return every.drop(columns="effect").merge(pd.DataFrame(stats), on=_GROUP, how="left")
