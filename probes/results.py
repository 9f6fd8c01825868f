"""The tidy table of a patching sweep: one row per (site, metric), with the unpatched runs'
values and the share of the gap between them that the patch closes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from probes.sites import Site

__all__ = ["COLUMNS", "result_table", "sites_of"]

# The columns of every result table, one row per (site, metric).
COLUMNS = ("site", "layer", "head", "position", "metric", "value", "target", "source", "share")


def result_table(
    sites: Sequence[Site], metrics: Sequence[str], values: dict, target: list, source: list
) -> pd.DataFrame:
    """One row per (site, metric), sites in the order given: ``values[site]``, ``target`` and
    ``source`` hold one value per metric (the patched run's and the two unpatched runs')."""
    n_metrics = len(metrics)
    value = np.array([values[s] for s in sites], dtype=np.float64).reshape(-1)
    target_col = np.tile(np.array(target, dtype=np.float64), len(sites))
    source_col = np.tile(np.array(source, dtype=np.float64), len(sites))
    gap = source_col - target_col
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(gap != 0, (value - target_col) / gap, np.nan)

    def per_row(xs: list) -> list:
        return [x for x in xs for _ in range(n_metrics)]

    def optional(xs: list) -> pd.arrays.IntegerArray:  # nullable Int64: None -> <NA>
        missing = np.array([x is None for x in xs], dtype=bool)
        data = np.array([0 if x is None else x for x in xs], dtype=np.int64)
        return pd.arrays.IntegerArray(np.repeat(data, n_metrics), np.repeat(missing, n_metrics))

    table = {
        "site": per_row([s.kind for s in sites]),
        "layer": np.repeat(np.array([s.layer for s in sites], dtype=np.int64), n_metrics),
        "head": optional([s.head for s in sites]),
        "position": optional([s.position for s in sites]),
        "metric": list(metrics) * len(sites),
        "value": value,
        "target": target_col,
        "source": source_col,
        "share": share,
    }
    return pd.DataFrame({c: table[c] for c in COLUMNS})


def sites_of(table: pd.DataFrame) -> list[Site]:
    """The sites of a result table's rows (e.g. the top rows of a screen), in order."""
    return [
        Site(
            r.site,
            int(r.layer),
            None if pd.isna(r.head) else int(r.head),
            None if pd.isna(r.position) else int(r.position),
        )
        for r in table.itertuples()
    ]
