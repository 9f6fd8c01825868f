"""The report's component-swapping section: swap shares per component (locus) and, when the run
also holds activation patching or classify results, locus beside mediation. Pure functions of
the run's tables, like every section of ``lab.report.sections``."""

from __future__ import annotations

import html

import pandas as pd

from lab.errors import LabError
from lab.report.html import CircuitsVisPage, figure_html, table_html
from lab.report.tables import Run
from probes.components.migration import departure_note, departures, locus_map, locus_table
from probes.patching.heatmaps import component_heatmap

__all__ = ["locus_figure", "swap_section"]


def _mediation(run: Run) -> tuple[pd.DataFrame | None, str]:
    """The run's per-component mediation shares: its patching table, else its classify table."""
    for name in ("patching.parquet", "classify.parquet"):
        if run.has(name):
            return run.table(name), name.split(".")[0]
    return None, ""


def locus_figure(run: Run, swap: pd.DataFrame, metric: str = "kl_to_base") -> str:
    """The locus-vs-mediation scatter and its table (into tuned), or "" without mediation."""
    mediation, where = _mediation(run)
    if mediation is None:
        return ""
    try:
        both = locus_table(swap, mediation, metric=metric)
        fig = locus_map(swap, mediation, metric=metric)
    except LabError:
        return ""  # no per-component shares of this metric on one side
    top = both.reindex(both.locus.abs().sort_values(ascending=False).index).head(10)
    rows = top[["component", "locus", "mediation", "gap"]].to_dict("records")
    return (
        f"<h3>Locus (swap) beside mediation (activation patching, from the {where} analysis)"
        "</h3><p>Each component's share of KL(tuned || base) removed when the tuned model gets "
        "the base's weights for it (locus: whose computation changed) and when it gets the "
        "base's activation there (mediation: what the change flows through). A component far "
        "right of the diagonal passes on a change made upstream.</p>"
        + figure_html(fig, "locus vs mediation")
        + table_html(rows)
    )


def swap_section(run: Run, _: CircuitsVisPage) -> str:
    """Swap shares per component and metric (greyed out where the departure is noise), then
    locus beside mediation."""
    swap = run.table("swap.parquet")
    deps = departures(swap)
    noise = {r.metric: departure_note(r) for r in deps.itertuples() if r.within_noise}
    parts = [
        "<p>Share of the tuned model's departure from the base (per metric) that giving one "
        "component the other model's weights, on the model's own inputs, removes (into tuned) "
        "or induces (into base). Heads keep the receiver's norms; under grouped-query attention "
        "a head keeps the receiver's shared keys and values (a KV group swaps them).</p>"
    ]
    for (metric, into), part in swap.groupby(["metric", "into"], sort=False):
        title = f"swap, {metric}, into {into}"
        grey = "noise" if metric in noise else ""
        if grey:
            parts.append(
                f"<p class='noise'>{html.escape(title)}: {html.escape(noise[metric])}.</p>"
            )
        fig = component_heatmap(part, metric=metric)
        fig.suptitle(title + (" (within noise)" if grey else ""))
        parts.append(figure_html(fig, title, cls=grey))
    parts.append(locus_figure(run, swap))
    return "".join(parts)
