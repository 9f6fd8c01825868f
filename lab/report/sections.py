"""The report's sections: each a small strategy that names the files it needs and renders them.

Pure functions of a run's tables (a ``RunDir`` or ``RunTables``): nothing here touches a model.
A share whose departure (tuned minus base) is within noise is greyed out (class ``noise``) and
said to be no finding.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lab.calibration.reliability import reliability_diagram
from lab.calibration.summary import format_summary, plot_calibration, summarize
from lab.errors import LabError
from lab.report.frontier import frontier_section
from lab.report.headline import headline, joint_result, joint_text
from lab.report.html import CircuitsVisPage, figure_html, table_html
from lab.report.locus import swap_section
from lab.report.tables import Run
from probes.components.migration import (
    departure_note,
    departures,
    layer_summary,
    migration_map,
    top_steering,
)
from probes.linear.plots import plot_probe_scores
from probes.patching.heatmaps import layer_head_heatmap, layer_position_heatmap

__all__ = ["SECTIONS", "Section"]


@dataclass(frozen=True)
class Section:
    """One part of the report: a title, the files it needs, and how to render them."""

    title: str  # heading on the page
    needs: tuple[str, ...]  # files of the run; the section renders if any one exists
    made_by: str  # the command that makes them (shown when they are missing)
    render: Callable[[Run, CircuitsVisPage], str]  # -> HTML fragment


def _headline_section(run: Run, _: CircuitsVisPage) -> str:
    return headline(run).html()


def _gap_notes(run: Run, table: pd.DataFrame) -> tuple[dict[str, str], str]:
    """Per metric, why its shares are noise (metrics clear of noise are absent), and where the
    departures' intervals came from: the patching table itself, else the classify analysis."""
    deps, where = departures(table), "this table"
    if deps.empty and run.has("classify.parquet"):
        deps, where = departures(run.table("classify.parquet")), "the classify analysis"
    if deps.empty:
        return {}, (
            "No interval of the departures was recorded, so shares below are not checked "
            "against noise: a share of a departure near 0 can be large and mean nothing."
        )
    notes = {r.metric: departure_note(r) for r in deps.itertuples() if r.within_noise}
    return notes, (
        f"Departures and their intervals are from {where}; shares of a departure whose interval "
        "includes 0 are greyed out: they divide by noise and are no finding."
    )


def _environment(run: Run) -> dict[str, Any]:
    """``environment.json``: an object with ``python`` (text) and ``versions`` (name -> text)."""
    env = run.json("environment.json")
    versions = env.get("versions", {}) if isinstance(env, dict) else None
    if not isinstance(versions, dict) or not isinstance(env.get("python", ""), str):
        raise LabError(
            f'{run.locate("environment.json")} is not an object with "python" (text) and '
            '"versions" (an object of name: version); rerun `lab sweep`, which rewrites it.'
        )
    return env


def _run_section(run: Run, _: CircuitsVisPage) -> str:
    parts = []
    config = next((n for n in ("config.toml", "config.json") if run.has(n)), None)
    if config:
        parts.append(
            f"<details><summary>Configuration ({config})</summary>"
            f"<pre>{html.escape(run.text(config))}</pre></details>"
        )
    if run.has("environment.json"):
        env = _environment(run)
        rows = [{"what": k, "version": v} for k, v in env.get("versions", {}).items()]
        rows.insert(0, {"what": "python", "version": env.get("python")})
        parts.append(f"<h3>Environment</h3>{table_html(rows)}")
    if run.has("weights.parquet"):
        w = run.table("weights.parquet")
        parts.append("<h3>Relative weight change ||W_tuned - W_base|| / ||W_base||</h3>")
        parts.append(table_html(w[["pair", "group", "value"]].to_dict("records")))
    return "".join(parts)


_EVAL_COLS = (
    "excess_loss",
    "ece",
    "entropy",
    "kl_to_world",
    "wedding_reach",
    "impossible_transition_rate",
    "true_utility",
    "rm_score",
    "kl_to_base",
    "kl_to_pi_star",
    "belief_probe_r2",
)


def _calibration_section(run: Run, _: CircuitsVisPage) -> str:
    parts = []
    if run.has("organism_eval.parquet"):
        ev = run.table("organism_eval.parquet").pivot_table(
            index="model", columns="metric", values="value", sort=False
        )
        cols = [c for c in _EVAL_COLS if c in ev.columns]
        rows = [{"model": m, **{c: ev.loc[m, c] for c in cols}} for m in ev.index]
        parts.append("<h3>Organism: each model against the world's exact truth</h3>")
        parts.append(table_html(rows))
    if run.has("reliability.parquet"):
        table = run.table("reliability.parquet")
        fig = reliability_diagram(table, title="Reliability on world text")
        parts.append(figure_html(fig, "reliability diagram"))
    if run.has("calibrate.parquet"):
        results = run.table("calibrate.parquet")
        parts.append(f"<pre>{html.escape(format_summary(summarize(results)))}</pre>")
        parts.append(figure_html(plot_calibration(results), "calibration suite"))
    return "".join(parts)


def _probes_section(run: Run, _: CircuitsVisPage) -> str:
    table = run.table("probes.parquet")
    figs = [
        figure_html(plot_probe_scores(table, target=t), f"probe {t}")
        for t in table["target"].unique()
    ]
    return "".join(figs)


def _patching_section(run: Run, _: CircuitsVisPage) -> str:
    table = run.table("patching.parquet")
    noise, how = _gap_notes(run, table)
    parts = [
        "<p>Share of the tuned model's departure from the base (per metric) that patching "
        "one site's activation across the pair removes (into tuned) or induces (into "
        f"base). {html.escape(how)}</p>"
    ]
    # a sweep's table says which way each patch went; probes.patching's own table does not
    keys = ["site", "metric", "into"] if "into" in table else ["site", "metric"]
    for key, part in table.groupby(keys, sort=False):
        site, metric, *into = key
        title = f"{site}, {metric}" + "".join(f", patched into {i}" for i in into)
        grey = "noise" if metric in noise else ""
        if grey:
            parts.append(
                f"<p class='noise'>{html.escape(title)}: {html.escape(noise[metric])}.</p>"
            )
        if part["position"].notna().any():
            fig = layer_position_heatmap(part, metric=metric)
        elif part["head"].notna().any():
            fig = layer_head_heatmap(part, metric=metric)
        else:
            rows = part[["layer", "value", "target", "source", "share"]].to_dict("records")
            parts.append(f"<h3>{html.escape(title)}</h3>{table_html(rows, cls=grey)}")
            continue
        fig.suptitle(title + (" (within noise)" if grey else ""))
        parts.append(figure_html(fig, title, cls=grey))
    return "".join(parts)


def _migration_section(run: Run, _: CircuitsVisPage) -> str:
    scores = run.table("classify.parquet")
    deps = departures(scores)
    grey = "noise" if deps.query("within_noise").metric.eq("kl_to_base").any() else ""
    parts = [
        figure_html(migration_map(scores), "migration map", cls=grey),
        figure_html(layer_summary(scores), "steering by layer", cls=grey),
    ]
    if not deps.empty:
        parts.append(
            "<h3>Departures tuned - base that the shares divide by</h3><p>A departure whose "
            "interval includes 0 is within noise: its shares are greyed out and left out of the "
            f"findings.</p>{table_html(deps.to_dict('records'))}"
        )
    top = top_steering(scores, n=5)
    parts.append("<h3>Top steering components (share of KL(tuned || base) removed)</h3>")
    parts.append(table_html(top[["component", "value", "lo", "hi", "label"]].to_dict("records")))
    if run.has("joint.parquet"):
        parts.append(joint_text(joint_result(run.table("joint.parquet"))))
    return "".join(parts)


def _examples_section(run: Run, page: CircuitsVisPage) -> str:
    parts = []
    for r in run.table("examples.parquet").itertuples():
        item = json.loads(r.payload)
        parts.append(f"<h3>{html.escape(r.title)}</h3>")
        if r.kind == "attention":
            parts.append(
                page.element(
                    "AttentionPatterns",
                    tokens=item["tokens"],
                    attention=item["pattern"],
                    headLabels=item["labels"],
                )
            )
        else:
            parts.append(
                page.element("ColoredTokens", tokens=item["tokens"], values=item["values"])
            )
    return "".join(parts)


SECTIONS: dict[str, Section] = {
    "headline": Section(
        "Headline", ("classify.parquet",), "lab demo / a classify analysis", _headline_section
    ),
    "run": Section(
        "The pair and the run",
        ("config.toml", "config.json", "weights.parquet"),
        "lab demo / lab sweep",
        _run_section,
    ),
    "calibration": Section(
        "Calibration",
        ("organism_eval.parquet", "reliability.parquet", "calibrate.parquet"),
        "lab demo (organism) or lab calibrate --out RUN/calibrate.parquet",
        _calibration_section,
    ),
    "frontier": Section(
        "The utility–KL frontier: steering the kept base against RLHF and the exact optimum",
        ("frontier.parquet",),
        "lab organism frontier --out RUN / a frontier analysis in lab sweep",
        frontier_section,
    ),
    "probes": Section(
        "Linear probes by layer",
        ("probes.parquet",),
        "lab demo / a probes analysis in lab sweep",
        _probes_section,
    ),
    "patching": Section(
        "Cross-model patching",
        ("patching.parquet",),
        "lab demo / a patching analysis in lab sweep",
        _patching_section,
    ),
    "swap": Section(
        "Component swapping: whose computation changed",
        ("swap.parquet",),
        "a swap analysis in lab sweep",
        swap_section,
    ),
    "migration": Section(
        "Migration map: from predicting to steering",
        ("classify.parquet",),
        "lab demo / a classify analysis in lab sweep",
        _migration_section,
    ),
    "examples": Section(
        "Top steering heads and per-token KL(tuned || base)",
        ("examples.parquet",),
        "lab demo",
        _examples_section,
    ),
}
