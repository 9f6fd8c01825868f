"""The tidy table of a patching sweep: one row per (site, metric), with the unpatched runs'
values and the share of the gap between them that the patch closes; ``to_grid`` lays one metric
of one site kind out as a tensor shaped like ``transformer_lens.patching``'s results."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from lab.errors import LabError
from probes.patching.sites import Site

__all__ = ["COLUMNS", "result_table", "sites_of", "to_grid"]

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
    return [Site.from_row(r) for r in table.itertuples()]


def _only(table: pd.DataFrame, column: str, chosen: str | None, arg: str) -> pd.DataFrame:
    """The rows whose ``column`` is ``chosen``; with None, the table must hold one value."""
    present = list(dict.fromkeys(table[column]))
    if chosen is None:
        if len(present) > 1:
            raise LabError(
                f"The table holds {len(present)} {column}s ({', '.join(map(str, present))}); "
                f"pick one with {arg}=."
            )
        return table
    if chosen not in present:
        raise LabError(f"No rows with {column} {chosen!r}; the table has {present}.")
    return table[table[column] == chosen]


def to_grid(
    table: pd.DataFrame,
    *,
    metric: str | None = None,
    site: str | None = None,
    column: str = "value",
) -> Float[Tensor, "layer ..."]:
    """One metric of one site kind as a tensor shaped like ``transformer_lens.patching``'s:
    ``layer pos`` (a sweep by position), ``layer head`` (per head, all positions), ``layer pos
    head`` (per head and position) or ``layer`` (neither).

    Index i along an axis is layer, position or head i, up to the largest in the table; cells
    no row fills (a sweep over some layers) are NaN. ``metric`` and ``site`` pick the rows when
    the table holds several; ``column``: which to lay out (``value``, ``share`` ...).
    """
    if column not in table.columns:
        raise LabError(f"No column {column!r}; a result table has {', '.join(table.columns)}.")
    rows = _only(_only(table, "metric", metric, "metric"), "site", site, "site")
    axes = [a for a in ("layer", "position", "head") if rows[a].notna().any()]
    for a in axes:
        if rows[a].isna().any():
            raise LabError(
                f"The {a} column is set on some rows and not on others (a sweep per {a} mixed "
                f"with one over every {a}); pick the rows of one sweep before to_grid."
            )
    index = [rows[a].to_numpy(dtype=np.int64) for a in axes]
    if len(set(zip(*index, strict=True))) != len(rows):
        raise LabError("Several rows fill one cell (the same site twice); drop the repeats.")
    grid = np.full([int(i.max()) + 1 for i in index], np.nan)
    grid[tuple(index)] = rows[column].to_numpy(dtype=np.float64)
    return torch.from_numpy(grid)
