"""Heatmaps of patching results: pure functions of a results table, returning the Figure.

They read the tidy tables of ``probes.patching.patch`` and ``probes.patching.attribution`` (columns
site, layer,
head, position, metric, value, target, source, share) and never touch a model.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from lab.errors import LabError

__all__ = ["component_heatmap", "layer_head_heatmap", "layer_position_heatmap"]


def _grid(table: pd.DataFrame, column: str, value: str, metric: str | None) -> pd.DataFrame:
    if value not in table.columns:
        raise LabError(f"No column {value!r} in the table; it has {', '.join(table.columns)}.")
    if metric is None:
        metrics = table["metric"].unique()
        if len(metrics) > 1:
            raise LabError(f"The table holds several metrics ({', '.join(metrics)}); name one.")
    else:
        table = table[table["metric"] == metric]
    table = table.dropna(subset=[column])
    if table.empty:
        raise LabError(f"No rows with a {column}: sweep by {column} to plot layer x {column}.")
    if table.duplicated(["layer", column]).any():
        raise LabError(
            f"Several rows per (layer, {column}): pick one site kind (and head or position) first."
        )
    return table.pivot(index="layer", columns=column, values=value).sort_index()


def _heatmap(grid: pd.DataFrame, xlabel: str, title: str, labels: list[str] | None) -> Figure:
    fig = Figure(figsize=(1.2 + 0.35 * grid.shape[1], 1.0 + 0.35 * grid.shape[0]))
    ax = fig.subplots()
    bound = float(abs(grid.to_numpy(dtype=float)).max()) or 1.0
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-bound, vmax=bound)
    ax.set_xticks(range(grid.shape[1]), labels or [str(c) for c in grid.columns], rotation=90)
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def _sweep_heatmap(
    table: pd.DataFrame, column: str, value: str, metric: str | None, labels: list[str] | None
) -> Figure:
    """Layer by ``column`` of one sweep's table, titled by its site kinds."""
    grid = _grid(table, column, value, metric)
    kind = ", ".join(table["site"].unique())
    return _heatmap(grid, column, f"{kind}: {value}", labels)


def layer_position_heatmap(
    table: pd.DataFrame,
    *,
    value: str = "share",
    metric: str | None = None,
    tokens: list[str] | None = None,
) -> Figure:
    """Layer by position (e.g. a resid_pre sweep), coloured by ``value``; ``tokens`` label x."""
    return _sweep_heatmap(table, "position", value, metric, tokens)


def layer_head_heatmap(
    table: pd.DataFrame, *, value: str = "share", metric: str | None = None
) -> Figure:
    """Layer by head (e.g. a head-output sweep over all positions), coloured by ``value``."""
    return _sweep_heatmap(table, "head", value, metric, None)


def component_heatmap(
    table: pd.DataFrame, *, value: str = "share", metric: str | None = None
) -> Figure:
    """Layer by component (each head or key/value group, then the MLP), coloured by ``value``:
    a swap table (``probes.patching.swap``), or a patching table of head outputs and MLP outputs."""
    rows = table[table["site"].isin(["z", "kv_group", "mlp_out"]) & table["position"].isna()]
    if rows.empty:
        raise LabError("No head, key/value group or MLP rows in the table to plot by component.")
    rows = rows.assign(
        head=rows["head"].astype("Int64").astype(object).where(rows["head"].notna(), "MLP")
    )
    grid = _grid(rows, "head", value, metric)
    heads = [c for c in grid.columns if c != "MLP"]
    grid = grid[sorted(heads) + (["MLP"] if "MLP" in grid.columns else [])]
    prefix = "G" if (rows["site"] == "kv_group").any() else "H"
    labels = [c if c == "MLP" else f"{prefix}{c}" for c in grid.columns]
    kind = ", ".join(rows["site"].unique())
    return _heatmap(grid, "component", f"{kind}: {value}", labels)
