"""The migration map: every component at (prediction score, steering score) in base and in tuned,
with an arrow from one to the other. Pure functions of the table that
``probes.components.classify.classify`` (or ``classify_scores``) makes.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lab.errors import LabError
from probes.patching.units import SITE_UNITS, component_name

__all__ = [
    "departure_note",
    "departures",
    "layer_summary",
    "locus_map",
    "locus_table",
    "migration_map",
    "migration_table",
    "top_steering",
]


def migration_table(scores: pd.DataFrame, metric: str = "kl_to_base") -> pd.DataFrame:
    """One row per component: prediction and steering scores in base and tuned, and how far the
    component moved (the arrow's length)."""
    pred = scores[scores.score == "prediction"]
    steer = scores[(scores.score == "steering") & (scores.metric == metric)]
    if steer.empty:
        have = sorted(scores.loc[scores.score == "steering", "metric"].unique())
        raise LabError(f"No steering scores for metric {metric!r}; the table has {have}.")
    wide = pred.pivot(index="component", columns="model", values="value").add_prefix("pred_")
    wide = wide.join(
        steer.pivot(index="component", columns="model", values="value").add_prefix("steer_")
    )
    kinds = scores.drop_duplicates("component").set_index("component")[["kind", "layer"]]
    wide = wide.join(kinds)
    if "label" in scores:
        labels = scores.drop_duplicates(["component", "model"]).pivot(
            index="component", columns="model", values="label"
        )
        wide = wide.join(labels.add_prefix("label_"))
    wide["moved"] = np.hypot(
        (wide.pred_tuned - wide.pred_base) / _scale(wide[["pred_base", "pred_tuned"]]),
        wide.steer_tuned - wide.steer_base,
    )
    return wide.reset_index().sort_values(["layer", "kind", "component"], ignore_index=True)


def _scale(frame: pd.DataFrame) -> float:
    m = float(np.nanmax(np.abs(frame.to_numpy()))) if frame.size else 0.0
    return m if m > 0 else 1.0


def top_steering(
    scores: pd.DataFrame, n: int = 5, metric: str = "kl_to_base", *, noise: bool = False
) -> pd.DataFrame:
    """The ``n`` components with the largest steering share in tuned, with their intervals.

    Shares of a departure within noise (``within_noise``: the gap's interval includes 0) are
    ratios of noise, so they are left out unless ``noise``; then the result may be empty. So are
    a pruned classification's estimates (``exact`` False: attribution's, with no interval).
    """
    steer = scores[
        (scores.score == "steering") & (scores.metric == metric) & (scores.model == "tuned")
    ]
    if "exact" in steer:
        steer = steer[steer["exact"].astype(bool)]
    if not noise and "within_noise" in steer:
        steer = steer[~steer["within_noise"].astype(bool)]
    return steer.sort_values("value", ascending=False).head(n).reset_index(drop=True)


def departures(scores: pd.DataFrame) -> pd.DataFrame:
    """Per steering metric, the departure tuned - base that its shares divide by, with its
    interval and ``within_noise``; from a ``classify`` table (or a patching table that carries
    ``probes.components.classify.departure``'s columns). Empty when the table carries no gap
    interval."""
    cols = ["metric", "departure", "lo", "hi", "within_noise"]
    if "gap_lo" not in scores:
        return pd.DataFrame(columns=cols)
    into = "into" if "into" in scores else "model"
    rows = scores[scores[into] == "tuned"]
    if "score" in rows:
        rows = rows[rows.score == "steering"]
    rows = rows.drop_duplicates("metric")  # the gap is the unpatched runs': one per metric
    # patched into tuned, the gap is base - tuned: the departure is its negation
    return pd.DataFrame(
        {
            "metric": rows.metric,
            "departure": -rows.gap,
            "lo": -rows.gap_hi,
            "hi": -rows.gap_lo,
            "within_noise": rows.within_noise.astype(bool),
        }
    ).reset_index(drop=True)


def departure_note(row: Any) -> str:
    """Why shares of a metric whose departure is within noise are no finding (one sentence)."""
    return (
        f"tuned and base differ on {row.metric} by {row.departure:.3g} (interval {row.lo:.3g} "
        f"to {row.hi:.3g}), which includes 0: that departure is within noise, so shares of it "
        "divide by noise and are no finding"
    )


def _label(ax: Any, rows: pd.DataFrame, x: str, y: str) -> None:
    """Each row's component name beside its point (columns ``x``, ``y``) on a map."""
    for component, px, py in zip(rows["component"], rows[x], rows[y], strict=True):
        ax.annotate(component, (px, py), textcoords="offset points", xytext=(5, 4), fontsize=9)


def migration_map(
    scores: pd.DataFrame, *, metric: str = "kl_to_base", n_labels: int = 6, title: str = ""
) -> Figure:
    """Components from base (hollow) to tuned (filled): x prediction score, y steering share."""
    t = migration_table(scores, metric)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    colors = {"head": "tab:blue", "mlp": "tab:orange"}
    for r in t.itertuples():
        ax.annotate(
            "",
            xy=(r.pred_tuned, r.steer_tuned),
            xytext=(r.pred_base, r.steer_base),
            arrowprops={"arrowstyle": "->", "color": colors[r.kind], "alpha": 0.55},
        )
    for kind, part in t.groupby("kind"):
        ax.scatter(
            part.pred_base,
            part.steer_base,
            facecolors="none",
            edgecolors=colors[kind],
            s=40,
            label=f"{kind} in base",
        )
        ax.scatter(
            part.pred_tuned, part.steer_tuned, color=colors[kind], s=40, label=f"{kind} in tuned"
        )
    _label(ax, t.nlargest(n_labels, "moved"), "pred_tuned", "steer_tuned")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("prediction score: extra KL to the truth when ablated (nats/token)")
    ax.set_ylabel(f"steering score: share of departure ({metric})")
    ax.set_title(title or "Migration map: base (hollow) to tuned (filled)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def layer_summary(scores: pd.DataFrame, *, metric: str = "kl_to_base") -> Figure:
    """Per layer: the summed steering share of its heads and of its MLP, base and tuned."""
    t = migration_table(scores, metric)
    layers = sorted(t.layer.unique())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    width = 0.38
    x = np.arange(len(layers))
    for ax, model in zip(axes, ("base", "tuned"), strict=True):
        for i, kind in enumerate(("head", "mlp")):
            sums = [t[(t.layer == L) & (t.kind == kind)][f"steer_{model}"].sum() for L in layers]
            ax.bar(x + (i - 0.5) * width, sums, width, label=f"{kind}s")
        ax.set_xticks(x, [f"L{L}" for L in layers])
        ax.set_title(f"{model}: steering share by layer")
        ax.axhline(0, color="grey", lw=0.6)
    axes[0].set_ylabel(f"share of departure ({metric})")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _shares(table: pd.DataFrame, metric: str, into: str, column: str) -> pd.DataFrame:
    """Per component (kind, layer, head): its share of ``metric``'s departure with model
    ``into`` patched or swapped, from a patching or swap table (``site``, ``into``, ``share``)
    or a ``classify`` table (``score``, ``model``, ``value``)."""
    if "score" in table:  # classify: steering rows, the model patched into
        rows = table[(table.score == "steering") & (table.model == into)]
        rows = rows.assign(kind=rows.kind, share=rows.value)
    else:
        rows = table[table.site.isin(list(SITE_UNITS)) & table["position"].isna()]
        if "into" in rows:
            rows = rows[rows["into"] == into]
        rows = rows.assign(kind=rows.site.map(SITE_UNITS))
    rows = rows[rows.metric == metric]
    if rows.empty:
        raise LabError(
            f"No per-component shares of {metric!r} patched into {into} in the {column} table; "
            f"it has metrics {sorted(table.metric.unique())}."
        )
    head = rows["head"].astype("Int64")
    out = pd.DataFrame(
        {"kind": rows.kind, "layer": rows.layer.astype(int), "head": head, column: rows.share}
    )
    return out.reset_index(drop=True)


def locus_table(
    swap: pd.DataFrame, mediation: pd.DataFrame, *, metric: str = "kl_to_base", into: str = "tuned"
) -> pd.DataFrame:
    """One row per component: ``locus`` (the share of ``metric``'s departure that swapping its
    weights removes, into tuned, or induces, into base) beside ``mediation`` (the share that
    patching its activation does; a patching or classify table). Components of one table only
    (key/value groups have no activation site) get NaN on the other side."""
    locus = _shares(swap, metric, into, "locus")
    med = _shares(mediation, metric, into, "mediation")
    both = locus.merge(med, on=["kind", "layer", "head"], how="outer")
    keys = zip(both.kind, both.layer, both["head"], strict=True)
    both.insert(0, "component", [component_name(*k) for k in keys])
    both["gap"] = both.mediation - both.locus
    return both.sort_values(["layer", "kind", "head"], ignore_index=True)


def locus_map(
    swap: pd.DataFrame,
    mediation: pd.DataFrame,
    *,
    metric: str = "kl_to_base",
    into: str = "tuned",
    n_labels: int = 6,
) -> Figure:
    """Locus beside mediation: each component at (activation-patching share, swap share). On the
    diagonal a component's own computation carries what flows through it; far right and low, it
    passes on a change made upstream (mediation without locus)."""
    t = locus_table(swap, mediation, metric=metric, into=into).dropna(subset=["locus", "mediation"])
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    colors = {"head": "tab:blue", "mlp": "tab:orange"}
    for kind, part in t.groupby("kind"):
        ax.scatter(part.mediation, part.locus, color=colors.get(kind, "tab:gray"), s=40, label=kind)
    score = np.maximum(t.locus.abs(), t.mediation.abs())
    _label(ax, t.loc[score.nlargest(n_labels).index], "mediation", "locus")
    finite = np.concatenate([t.locus.to_numpy(float), t.mediation.to_numpy(float), [0.0, 1.0]])
    lo, hi = float(np.nanmin(finite)), float(np.nanmax(finite))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.7, ls="--")
    verb = "removed" if into == "tuned" else "induced"
    ax.set_xlabel(f"mediation: share {verb} by patching the activation ({metric})")
    ax.set_ylabel(f"locus: share {verb} by swapping the weights ({metric})")
    ax.set_title(f"Locus vs mediation, into {into}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
