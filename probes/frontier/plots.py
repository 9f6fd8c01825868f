"""The frontier's figure: a pure function of the frontier table (``probes.frontier.frontier``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from lab.errors import LabError

__all__ = ["plot_frontier"]

_PANELS = (
    ("true_utility", "true utility (labeler)"),
    ("rm_score", "reward-model score"),
    ("ece", "ECE of prediction queries"),
)
_NEEDS = {"method", "label", "knob", "kl_to_base"} | {c for c, _ in _PANELS}


def plot_frontier(table: pd.DataFrame) -> Figure:
    """True utility, RM score and prediction ECE against KL(policy || base) per token, one line per
    method in the order of its knob (beta, n, training step); RLHF's first and last steps and its
    highest-utility step are labelled."""
    missing = _NEEDS - set(table.columns)
    if missing:
        raise LabError(
            f"Not a frontier table: missing {', '.join(sorted(missing))}; make one with "
            "probes.frontier.frontier or `lab organism frontier`."
        )
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(5.2 * len(_PANELS), 4.2))
    for ax, (col, name) in zip(axes, _PANELS, strict=True):
        for _, part in table.groupby("method", sort=False):
            part = part.sort_values("knob")
            style = "-" if len(part) > 1 else ""
            ax.plot(part.kl_to_base, part[col], style, marker="o", ms=3, label=part.label.iloc[0])
        ax.set_xlabel("KL(policy || base), nats per token")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    rlhf = table[table.method == "rlhf"]
    if not rlhf.empty:
        marks = {rlhf.knob.idxmin(), rlhf.true_utility.idxmax(), rlhf.knob.idxmax()}
        for i in marks:
            r = rlhf.loc[i]
            axes[0].annotate(f"step {r.knob:g}", (r.kl_to_base, r.true_utility), fontsize=7)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("The utility–KL frontier on the same world prompts")
    fig.tight_layout()
    return fig
