"""The headline of a run, computed once and said three ways: the report's first section (HTML),
``summary.json`` (a dict) and the lines ``lab demo`` prints.

It is the top steering components (share of KL(tuned || base) removed by patching in the base
activation, with a 90% interval), the metrics whose departure is within noise (no finding), what
the top five remove together, and the organism's key metrics.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lab.report.tables import Run
from probes.components.migration import departure_note, departures, top_steering

__all__ = ["Headline", "headline", "joint_result", "joint_text", "pruning_result", "pruning_text"]

_ORGANISM_METRICS = ("wedding_reach", "ece", "excess_loss", "kl_to_pi_star")


@dataclass(frozen=True)
class Headline:
    """What a run found, from its classify, joint and organism_eval tables (each optional)."""

    top: list[dict[str, Any]] | None = None  # component, value, lo, hi, label (None: no classify)
    no_finding: list[tuple[str, str]] = field(default_factory=list)  # (metric, why it is noise)
    joint: dict[str, Any] | None = None  # metric -> value, and "components" (which were patched)
    organism: dict[str, float] | None = None  # "model.metric" -> value
    pruning: dict[str, Any] | None = None  # exact, components, mass_left_out, rank_corr (pruned)

    def summary(self) -> dict[str, Any]:
        """The headline as ``summary.json`` holds it (keys present only when measured)."""
        out: dict[str, Any] = {}
        if self.top is not None:
            out["top_steering"] = [
                {
                    "component": c["component"],
                    "kl_share_removed": c["value"],
                    "ci": [c["lo"], c["hi"]],
                    "label": c["label"],
                }
                for c in self.top
            ]
        if self.joint is not None:
            out["top5_joint"] = dict(self.joint)
        if self.organism is not None:
            out["organism"] = dict(self.organism)
        if self.pruning is not None:
            out["pruning"] = dict(self.pruning)
        return out

    def lines(self) -> list[str]:
        """The headline as ``lab demo`` prints it."""
        out = [
            "\nTop steering components (share of KL(tuned || base) removed by patching in "
            "the base activation, 90% CI):"
        ]
        out += [
            f"  {c['component']:<8} {c['value']:6.1%}  [{c['lo']:6.1%}, {c['hi']:6.1%}]  "
            f"{c['label']}"
            for c in self.top or []
        ]
        if self.pruning is not None:
            out.append(pruning_text(self.pruning))
        if self.joint is not None:
            j = self.joint
            line = f"Together they remove {j['kl_share']:.0%} of KL(tuned || base)"
            if "reach_share" in j:
                line += f" and {j['reach_share']:.0%} of the excess wedding-reach rate"
            out.append(line + ".")
        return out

    def html(self) -> str:
        """The headline as the report's first section shows it."""
        parts = [
            f"<p class='noise'>No finding on {html.escape(metric)}: {html.escape(why)}.</p>"
            for metric, why in self.no_finding
        ]
        items = "".join(
            f"<li><b>{html.escape(c['component'])}</b>: removes {c['value']:.0%} "
            f"(90% CI {c['lo']:.0%} to {c['hi']:.0%}) of KL(tuned || base); "
            f"{html.escape(c['label'])}</li>"
            for c in self.top or []
        )
        if items:
            parts.append(
                f"<p>The components that carry the tuned model's steering:</p><ol>{items}</ol>"
            )
        if self.pruning is not None:
            parts.append(f"<p>{html.escape(pruning_text(self.pruning))}</p>")
        if self.joint is not None:
            parts.append(joint_text(self.joint))
        return "".join(parts)


def pruning_text(p: dict[str, Any]) -> str:
    """What an attribution-pruned classification patched exactly, and how well attribution
    ranked it."""
    return (
        f"Exact patching of {p['exact']} of {p['components']} components, chosen by attribution "
        f"patching ({p['mass_left_out']:.1%} of the attribution mass left to estimates); "
        f"exact vs attribution rank correlation on them: {p['rank_corr']:.2f}."
    )


def pruning_result(scores: pd.DataFrame) -> dict[str, Any] | None:
    """A pruned classify table's exact count, mass left out and rank correlation (steering
    share of KL(tuned || base), into tuned); None when every component was patched exactly."""
    if "exact" not in scores or scores["exact"].astype(bool).all():
        return None
    row = scores.query("score == 'steering' and model == 'tuned' and metric == 'kl_to_base'")
    return {
        "exact": int(scores[scores["exact"].astype(bool)].component.nunique()),
        "components": int(scores.component.nunique()),
        "mass_left_out": float(row.mass_left_out.iloc[0]),
        "rank_corr": float(row.rank_corr.iloc[0]),
    }


def joint_text(joint: dict[str, Any]) -> str:
    """What patching the top components together removes, as a highlighted paragraph."""
    text = (
        f"Patching the base activations of {joint['components']} into the tuned model "
        f"together removes {joint['kl_share']:.0%} of KL(tuned || base)"
    )
    if "reach_share" in joint:
        text += (
            f", and {joint['reach_share']:.0%} of the tuned model's excess wedding-reach rate "
            f"(tuned {joint['reach_tuned']:.2f}, patched {joint['reach_patched']:.2f}, "
            f"base {joint['reach_base']:.2f})"
        )
    return f"<p class='finding'>{html.escape(text)}.</p>"


def joint_result(table: pd.DataFrame) -> dict[str, Any]:
    """A joint analysis's table as metric -> value, with ``components`` (which were patched)."""
    out: dict[str, Any] = dict(zip(table.metric, table.value, strict=True))
    out["components"] = table["components"].iloc[0]
    return out


def headline(run: Run) -> Headline:
    """The headline of ``run`` (a ``RunDir`` or ``RunTables``); empty parts where a table is
    missing."""
    top, no_finding, joint, organism, pruning = None, [], None, None, None
    if run.has("classify.parquet"):
        scores = run.table("classify.parquet")
        noise = departures(scores).query("within_noise")
        no_finding = [(r.metric, departure_note(r)) for r in noise.itertuples()]
        cols = ["component", "value", "lo", "hi", "label"]
        top = top_steering(scores, n=5)[cols].to_dict("records")
        pruning = pruning_result(scores)
    if run.has("joint.parquet"):
        joint = joint_result(run.table("joint.parquet"))
    if run.has("organism_eval.parquet"):
        ev = run.table("organism_eval.parquet")
        keep = ev[ev.metric.isin(_ORGANISM_METRICS)]
        organism = {f"{r.model}.{r.metric}": r.value for r in keep.itertuples()}
    return Headline(top=top, no_finding=no_finding, joint=joint, organism=organism, pruning=pruning)
