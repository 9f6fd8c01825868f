"""Pure plots of probe result tables (matplotlib; each function returns a Figure)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lab.errors import LabError

__all__ = ["plot_probe_scores"]

_STYLE = {"base": "tab:blue", "tuned": "tab:red", "random": "tab:gray"}


def plot_probe_scores(table: pd.DataFrame, target: str, *, split: str = "test") -> Figure:
    """Probe score by layer for each model (task solid, control dashed), at the selected reg.

    A randomly initialised baseline is simply one more model in the table (e.g. ``"random"``).
    Scores are averaged over seeds and hooks of one layer; the band is the seed min-max.
    """
    rows = table[(table["target"] == target) & (table["split"] == split) & table["selected"]]
    rows = rows[rows["metric"] != "selectivity"]
    if rows.empty:
        raise LabError(
            f"No {split} scores for target {target!r}; the table has targets "
            f"{sorted(table['target'].unique())}."
        )
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for (model, control), group in rows.groupby(["model", "control"], sort=False):
        per_layer = group.groupby("layer")["value"]
        mean, low, high = per_layer.mean(), per_layer.min(), per_layer.max()
        color = _STYLE.get(model)
        style = "-" if control == "task" else "--"
        label = model if control == "task" else f"{model} ({control} control)"
        ax.plot(mean.index, mean.values, style, marker="o", ms=3, color=color, label=label)
        ax.fill_between(mean.index, low.values, high.values, color=color, alpha=0.15, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (-1: embeddings)" if rows["layer"].min() < 0 else "layer")
    ax.set_ylabel(f"{rows['metric'].iloc[0]} ({split})")
    ax.set_title(f"{rows['kind'].iloc[0]} probe for {target!r} by layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig
