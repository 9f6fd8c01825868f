"""``lab report RUN_DIR``: one self-contained HTML page from a run folder, openable offline.

A run folder holds tidy results written by ``lab demo`` or ``lab sweep``; each section of the
report is a small strategy in ``SECTIONS`` that names the files it needs and renders them (pure
functions of the files: nothing here touches a model). A section whose files are missing is
listed as missing, with the command that makes them; a folder with none of them is refused.
Figures are inline PNG, and circuitsvis's script is embedded once, never fetched.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lab.errors import LabError
from lab.report.html import CircuitsVisPage, circuitsvis_script, figure_html, table_html

__all__ = ["SECTIONS", "RunDir", "Section", "build_report"]


class RunDir:
    """A run folder's files, read on demand (JSON as dicts, parquet as DataFrames)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise LabError(f"No run folder at {self.root}; run `lab demo --out DIR` first.")

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def json(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LabError(
                f"{path} is not valid UTF-8 JSON ({e}); rerun `lab sweep` or `lab demo`, "
                "which rewrite it."
            ) from None

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / name)


@dataclass(frozen=True)
class Section:
    """One part of the report: a title, the files it needs, and how to render them."""

    title: str  # heading on the page
    needs: tuple[str, ...]  # files of the run folder; the section renders if any one exists
    made_by: str  # the command that makes them (shown when they are missing)
    render: Callable[[RunDir, CircuitsVisPage], str]  # -> HTML fragment


def _headline_section(run: RunDir, _: CircuitsVisPage) -> str:
    from probes.components.migration import departure_note, departures, top_steering

    parts = []
    if run.has("classify.parquet"):
        scores = run.table("classify.parquet")
        noise = departures(scores).query("within_noise")
        for r in noise.itertuples():
            parts.append(
                f"<p class='noise'>No finding on {html.escape(r.metric)}: "
                f"{html.escape(departure_note(r))}.</p>"
            )
        top = top_steering(scores, n=5)
        items = "".join(
            f"<li><b>{html.escape(r.component)}</b>: removes {r.value:.0%} "
            f"(90% CI {r.lo:.0%} to {r.hi:.0%}) of KL(tuned || base); {html.escape(r.label)}</li>"
            for r in top.itertuples()
        )
        if items:
            parts.append(
                f"<p>The components that carry the tuned model's steering:</p><ol>{items}</ol>"
            )
    if run.has("joint.parquet"):
        parts.append(_joint_text(run))
    return "".join(parts)


def _gap_notes(run: RunDir, table: pd.DataFrame) -> tuple[dict[str, str], str]:
    """Per metric, why its shares are noise (metrics clear of noise are absent), and where the
    departures' intervals came from: the patching table itself, else the classify analysis."""
    from probes.components.migration import departure_note, departures

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


def _joint_text(run: RunDir) -> str:
    joint = run.table("joint.parquet")
    j = joint.set_index("metric")["value"]
    text = (
        f"Patching the base activations of {joint['components'].iloc[0]} into the tuned model "
        f"together removes {j['kl_share']:.0%} of KL(tuned || base)"
    )
    if "reach_share" in j:
        text += (
            f", and {j['reach_share']:.0%} of the tuned model's excess wedding-reach rate "
            f"(tuned {j['reach_tuned']:.2f}, patched {j['reach_patched']:.2f}, "
            f"base {j['reach_base']:.2f})"
        )
    return f"<p class='finding'>{html.escape(text)}.</p>"


def _environment(run: RunDir) -> dict[str, Any]:
    """``environment.json``: an object with ``python`` (text) and ``versions`` (name -> text)."""
    env = run.json("environment.json")
    versions = env.get("versions", {}) if isinstance(env, dict) else None
    if not isinstance(versions, dict) or not isinstance(env.get("python", ""), str):
        raise LabError(
            f'{run.root / "environment.json"} is not an object with "python" (text) and '
            '"versions" (an object of name: version); rerun `lab sweep`, which rewrites it.'
        )
    return env


def _run_section(run: RunDir, _: CircuitsVisPage) -> str:
    parts = []
    config = next((n for n in ("config.toml", "config.json") if run.has(n)), None)
    if config:
        text = (run.root / config).read_text()
        parts.append(
            f"<details><summary>Configuration ({config})</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
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


def _calibration_section(run: RunDir, _: CircuitsVisPage) -> str:
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
        from lab.calibration.reliability import reliability_diagram

        table = run.table("reliability.parquet")
        parts.append(
            figure_html(
                reliability_diagram(table, title="Reliability on world text"), "reliability diagram"
            )
        )
    if run.has("calibrate.parquet"):
        from lab.calibration.summary import format_summary, plot_calibration, summarize

        results = run.table("calibrate.parquet")
        parts.append(f"<pre>{html.escape(format_summary(summarize(results)))}</pre>")
        parts.append(figure_html(plot_calibration(results), "calibration suite"))
    return "".join(parts)


def _probes_section(run: RunDir, _: CircuitsVisPage) -> str:
    from probes.linear.plots import plot_probe_scores

    table = run.table("probes.parquet")
    figs = [
        figure_html(plot_probe_scores(table, target=t), f"probe {t}")
        for t in table["target"].unique()
    ]
    return "".join(figs)


def _patching_section(run: RunDir, _: CircuitsVisPage) -> str:
    from probes.patching.heatmaps import layer_head_heatmap, layer_position_heatmap

    table = run.table("patching.parquet")
    noise, how = _gap_notes(run, table)
    parts = [
        "<p>Share of the tuned model's departure from the base (per metric) that patching "
        "one site's activation across the pair removes (into tuned) or induces (into "
        f"base). {html.escape(how)}</p>"
    ]
    for (site, metric, into), part in table.groupby(["site", "metric", "into"], sort=False):
        title = f"{site}, {metric}, patched into {into}"
        grey = " noise" if metric in noise else ""
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
            table_part = table_html(rows).replace('class="data"', f'class="data{grey}"', 1)
            parts.append(f"<h3>{html.escape(title)}</h3>{table_part}")
            continue
        fig.suptitle(title + (" (within noise)" if grey else ""))
        parts.append(figure_html(fig, title).replace('class="figure"', f'class="figure{grey}"'))
    return "".join(parts)


def _swap_section(run: RunDir, page: CircuitsVisPage) -> str:
    from lab.report.locus import swap_section

    return swap_section(run, page)


def _migration_section(run: RunDir, _: CircuitsVisPage) -> str:
    from probes.components.migration import departures, layer_summary, migration_map, top_steering

    scores = run.table("classify.parquet")
    deps = departures(scores)
    grey = " noise" if deps.query("within_noise").metric.eq("kl_to_base").any() else ""
    parts = [
        figure_html(migration_map(scores), "migration map"),
        figure_html(layer_summary(scores), "steering by layer"),
    ]
    parts = [f.replace('class="figure"', f'class="figure{grey}"') for f in parts]
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
        parts.append(_joint_text(run))
    return "".join(parts)


def _examples_section(run: RunDir, page: CircuitsVisPage) -> str:
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
        _swap_section,
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

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.data{border-collapse:collapse;font-size:.85em;margin:.5em 0}table.data td,table.data th{
border:1px solid #ddd;padding:3px 8px;text-align:right}img.figure{max-width:100%;display:block;
margin:.8em 0}.missing{color:#a33}.finding{background:#f3f7ff;padding:.6em;border-left:3px solid
#36c}code,pre{background:#f6f6f6;padding:2px 4px}.noise{color:#888}table.noise,img.figure.noise{
opacity:.4}p.noise{background:#f4f4f4;padding:.4em;border-left:3px solid #bbb}"""


def build_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Write ``report.html`` for ``run_dir``; return its path and the missing sections' notes."""
    run = RunDir(run_dir)
    page = CircuitsVisPage()
    body, missing = [], []
    for name, section in SECTIONS.items():
        if not any(run.has(f) for f in section.needs):
            missing.append(
                f"{name}: needs {' or '.join(section.needs)} (made by {section.made_by})"
            )
            continue
        body.append(
            f'<section id="{name}"><h2>{html.escape(section.title)}</h2>'
            f"{section.render(run, page)}</section>"
        )
    if not body:
        wanted = sorted({f for s in SECTIONS.values() for f in s.needs})
        raise LabError(
            f"{run.root} holds no results (none of {', '.join(wanted)}); "
            "run `lab demo --out DIR` or `lab sweep CONFIG` first."
        )
    notes = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    missing_html = (
        f'<section id="missing"><h2>Missing</h2><ul class="missing">{notes}</ul></section>'
        if missing
        else ""
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Steerlab report</title>"
        f"<style>{_STYLE}</style>{circuitsvis_script()}</head><body>"
        f"<h1>Steerlab report: which components stopped predicting and started steering?</h1>"
        f"<p>Run folder <code>{html.escape(str(run.root))}</code>, written {when}.</p>"
        + "".join(body)
        + missing_html
        + "</body></html>"
    )
    path = Path(out) if out else run.root / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path, missing
