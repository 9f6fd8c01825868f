"""A calibration run's summary table and plot, pure functions of
``lab.calibration.calibrate.calibrate``'s rows.

``summarize`` averages the per-record scores by (set, kind, model), adds an ``all`` row per set and
model, and ECE where the set has controls (records with an answer). ``plot_calibration`` draws KL,
top-outcome share and probability mass by kind, base beside tuned, and the controls' reliability
diagram.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from lab.calibration.calibrate import expected_calibration_error

__all__ = ["SCORES", "format_summary", "plot_calibration", "summarize"]

# scores averaged per group, in table order
SCORES = ("mass", "kl", "entropy", "true_entropy", "top_share", "true_top_share")


def _ece(rows: pd.DataFrame, n_bins: int) -> float:
    ctl = rows[rows["answer"].notna()]
    conf = torch.tensor(ctl["confidence"].to_numpy(dtype=float))
    hit = torch.tensor(ctl["correct"].to_numpy(dtype=bool))
    return expected_calibration_error(conf, hit, n_bins)


def summarize(results: pd.DataFrame, n_bins: int | None = None) -> pd.DataFrame:
    """Mean scores by (set, kind, model), an ``all`` kind per (set, model), accuracy and ECE."""
    n_bins = n_bins or results.attrs.get("n_bins", 15)
    parts = []
    for (set_name, model), rows in results.groupby(["set", "model"], sort=False):
        for kind, sub in [*rows.groupby("kind", sort=False), ("all", rows)]:
            has_answers = sub["answer"].notna().any()
            row = {"set": set_name, "kind": kind, "model": model, "n": len(sub)}
            row.update({s: sub[s].mean() for s in SCORES})
            ctl = sub[sub["answer"].notna()]
            row["accuracy"] = ctl["correct"].astype(float).mean() if has_answers else np.nan
            row["ece"] = _ece(sub, n_bins) if has_answers else np.nan
            parts.append(row)
    return pd.DataFrame(parts)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as an aligned text table: one line per (set, kind), base -> tuned per score."""
    cols = [
        ("mass", "mass"),
        ("kl", "KL(true||model)"),
        ("entropy", "entropy"),
        ("top_share", "top share"),
        ("ece", "ECE"),
    ]
    wide = summary.pivot_table(
        index=["set", "kind"],
        columns="model",
        values=[c for c, _ in cols],
        sort=False,
        dropna=False,
    )
    truth = summary.groupby(["set", "kind"], sort=False)[["n", "true_entropy", "true_top_share"]]
    truth = truth.first()
    head = f"{'set':<18} {'kind':<10} {'n':>4}  " + "  ".join(f"{t:>17}" for _, t in cols)
    lines = [head, f"{'':<35}" + "  ".join(f"{'base -> tuned':>17}" for _ in cols)]
    for (set_name, kind), t in truth.iterrows():
        cells = []
        for c, _ in cols:
            b, u = (
                wide.get((c, m), pd.Series(dtype=float)).get((set_name, kind))
                for m in ("base", "tuned")
            )
            cells.append(f"{_num(b):>7} -> {_num(u):<7}")
        lines.append(f"{set_name:<18} {kind:<10} {int(t['n']):>4}  " + "  ".join(cells))
    true = {k: t for (_, k), t in truth.iterrows() if k not in ("all", "control")}
    lines.append(
        "true entropy / top share: "
        + ", ".join(
            f"{k} {t['true_entropy']:.2f}/{t['true_top_share']:.2f}" for k, t in true.items()
        )
    )
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{v:.3f}"


def _bars(ax, summary: pd.DataFrame, score: str, title: str, truth: str | None = None) -> None:
    kinds = summary[summary["kind"] != "all"]
    labels = list(dict.fromkeys(_label(kinds)))
    x = np.arange(len(labels))
    for k, model in enumerate(dict.fromkeys(kinds["model"])):
        sub = kinds[kinds["model"] == model]
        vals = dict(zip(_label(sub), sub[score], strict=True))
        ax.bar(x + (k - 0.5) * 0.4, [vals.get(lab, np.nan) for lab in labels], 0.4, label=model)
    if truth is not None:
        true = dict(zip(_label(kinds), kinds[truth], strict=True))
        ax.scatter(x, [true[lab] for lab in labels], color="black", marker="_", s=300, label="true")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_title(title)
    ax.legend(fontsize=8)


def _label(df: pd.DataFrame) -> list[str]:
    many = df["set"].nunique() > 1
    return [f"{s}:{k}" if many else k for s, k in zip(df["set"], df["kind"], strict=True)]


def _reliability(ax, results: pd.DataFrame, n_bins: int) -> None:
    ctl = results[results["answer"].notna()]
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--")
    for model, rows in ctl.groupby("model", sort=False):
        conf = rows["confidence"].to_numpy(dtype=float)
        hit = rows["correct"].to_numpy(dtype=float)
        bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
        used = np.unique(bins)
        mc = [conf[bins == b].mean() for b in used]
        acc = [hit[bins == b].mean() for b in used]
        ece = _ece(rows, n_bins)
        ax.plot(mc, acc, marker="o", label=f"{model} (ECE {ece:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title(f"controls: reliability ({n_bins} bins)")
    ax.legend(fontsize=8)


def plot_calibration(results: pd.DataFrame) -> Figure:
    """KL, top-outcome share (true share marked) and mass by kind; the controls' reliability."""
    summary = summarize(results)
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    _bars(axes[0, 0], summary, "kl", "KL(true || model) on the outcomes (nats)")
    _bars(axes[0, 1], summary, "top_share", "top-outcome share", truth="true_top_share")
    _bars(axes[1, 0], summary, "mass", "probability mass on the valid outcomes")
    _reliability(axes[1, 1], results, results.attrs.get("n_bins", 15))
    src = results.attrs.get("sources", {})
    fig.suptitle(f"calibration: base {src.get('base')!r} vs tuned {src.get('tuned')!r}")
    return fig
