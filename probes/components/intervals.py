"""Cluster-bootstrap intervals of classify's scores, and each metric's departure (the gap a
cross-model share divides by) with its prompt-bootstrap interval."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lab.errors import LabError
from lab.runtime import device_of
from lab.types import Tokens
from probes.patching.metrics import Metric, read_logits

__all__ = ["bootstrap", "departure", "interval"]


def bootstrap(parts: pd.DataFrame, score: str, rng: np.random.Generator, n_boot: int):
    """(score, gap) at the point and per resample; the gap is the share's denominator."""
    v, t, s = (parts[k].to_numpy() for k in ("value", "target", "source"))

    def stat(ix):
        gap = np.mean(s[ix] - t[ix])
        if score == "prediction":
            return float(np.mean(v[ix] - t[ix])), gap
        return (float(np.mean(v[ix] - t[ix]) / gap) if gap else float("nan")), gap

    point = stat(np.arange(len(v)))
    boots = np.array([stat(rng.integers(0, len(v), len(v))) for _ in range(n_boot)])
    return point, boots[:, 0], boots[:, 1]


def interval(boots: np.ndarray, ci: float) -> tuple[float, float]:
    alpha = (1 - ci) / 2
    if not np.isfinite(boots).any():
        return np.nan, np.nan
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


def departure(
    pair: Any,
    tokens: Tokens,
    metrics: dict[str, Metric],
    *,
    ci: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
    logits: dict[str, Tensor] | None = None,
) -> pd.DataFrame:
    """Each metric's departure, as the gap (source - target) a cross-model patching share of it
    divides by, with a prompt-bootstrap interval; one row per (metric, into).

    Columns ``metric`` (the name given), ``into``, ``gap``, ``gap_lo``, ``gap_hi``,
    ``within_noise``: merge it into ``cross_model``'s table on ``metric`` and ``into``.
    ``logits``: each model's logits on ``tokens`` (``{"base": ..., "tuned": ...}``, ``batch pos
    vocab``) when the caller has them; else both models run here.
    """
    values = {}
    for role, model in pair.models.items():
        with torch.inference_mode():
            if logits is not None and role in logits:
                out = logits[role].float()
            else:
                out = model(tokens.to(device_of(model))).float()
            for name, metric in metrics.items():
                if getattr(metric, "reads", "logits") != "logits":
                    raise LabError(
                        f"Metric {name!r} reads {metric.reads}; a departure needs logit metrics."
                    )
                values[role, name] = metric(read_logits(out, metric)).detach().double()
    values = {k: v.cpu().numpy() for k, v in values.items()}
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(tokens), (n_boot, len(tokens)))
    rows = []
    for name in metrics:
        diff = values["base", name] - values["tuned", name]  # into tuned: source base
        for into, d in (("tuned", diff), ("base", -diff)):
            lo, hi = interval(d[resamples].mean(1), ci)
            noise = not (lo > 0 or hi < 0)
            rows.append(
                {
                    "metric": name,
                    "into": into,
                    "gap": float(d.mean()),
                    "gap_lo": lo,
                    "gap_hi": hi,
                    "within_noise": noise,
                }
            )
    return pd.DataFrame(rows)
