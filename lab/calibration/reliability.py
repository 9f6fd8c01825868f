"""Calibration pictures: reliability bins from (confidence, accuracy) pairs, and the diagram.

Pure functions of data; nothing here touches a model.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from jaxtyping import Float
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["reliability_bins", "reliability_diagram"]


def reliability_bins(
    confidence: Float[Tensor, " n"], accuracy: Float[Tensor, " n"], model: str, bins: int = 15
) -> pd.DataFrame:
    """Equal-width confidence bins: mean confidence, mean accuracy and count per non-empty bin.

    ``accuracy`` may be fractional (for the organism: the world's probability of the model's
    top-1 token, the exact expected accuracy), as in ``lab.organism.metrics.ece``.
    """
    conf, acc = confidence.double().flatten(), accuracy.double().flatten()
    idx = (conf * bins).long().clamp(0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        if m.any():
            rows.append(
                {
                    "model": model,
                    "bin": b,
                    "confidence": float(conf[m].mean()),
                    "accuracy": float(acc[m].mean()),
                    "count": int(m.sum()),
                }
            )
    return pd.DataFrame(rows)


def reliability_diagram(table: pd.DataFrame, *, title: str = "Reliability") -> Figure:
    """Accuracy against confidence per model (points sized by count), with the diagonal."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
    for model, part in table.groupby("model", sort=False):
        size = 15 + 150 * part["count"] / part["count"].max()
        ax.plot(part.confidence, part.accuracy, marker="o", lw=1, label=str(model))
        ax.scatter(part.confidence, part.accuracy, s=size, alpha=0.3)
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy (expected, under the truth)")
    top = min(1.0, 1.1 * float(max(table.confidence.max(), table.accuracy.max())))
    ax.set_xlim(0, top)  # zoomed to the data: a world with high entropy never gets near 1
    ax.set_ylim(0, top)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
