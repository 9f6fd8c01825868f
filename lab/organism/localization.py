"""Scoring a localization method against a known answer: AUROC, precision@k and the faithfulness
curve's area (CPR) and distance from 1 (CMD), as in the Mechanistic Interpretability Benchmark.

A method gives every component a score (higher: more likely to carry the tuned model's
steering); a planted organism says which components truly carry it.

- ``auroc``: area under the ROC curve of planted vs not planted, ties counted half (the
  Mann-Whitney statistic with mid-ranks, equal to ``sklearn.metrics.roc_auc_score``).
- ``precision_at_k``: the share of planted components among the top k, k the number planted;
  a tie across the cut counts its planted members in proportion (the expectation over random
  tie-breaking), so a method that scores everything alike gets the base rate, not luck.
- ``faithfulness_areas``: MIB's circuit metrics (Mueller et al. 2025, "MIB: A Mechanistic
  Interpretability Benchmark"; ``MIB_circuit_track/evaluation.py``, ``evaluate_area_under_curve``,
  and ``print_results.py``, ``area_under_curve``): a faithfulness value f per circuit size, the
  trapezoidal area under f (CPR, higher is better) and the area between f and 1, ``|1 - f|``
  (CMD, lower is better), with the size normalised to [0, 1] by the largest. Here the curve's
  point n is the share of the tuned model's departure (KL to the base, or a steering metric)
  removed when the method's top-n components take the base's weights, for n = 0..N (n = 0 is
  the empty set, share 0 by definition, as MIB's normalisation makes the empty circuit 0), and
  the size is n / N. MIB keeps a circuit and ablates the rest; swapping the top-n out and
  measuring the share removed is the same curve for the question "where is the steering", read
  from the other side (an exact set gives 1 from n = k on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import Float

from lab.errors import LabError

__all__ = [
    "auroc",
    "check_planted",
    "faithfulness_areas",
    "precision_at_k",
    "ranking",
    "summarize",
]


def check_planted(scores: Mapping[str, float], planted: Sequence[str]) -> np.ndarray:
    """The planted mask over ``scores``' components, refusing unknown names, an empty set, a
    set of every component and scores that are not finite numbers."""
    names = list(scores)
    unknown = sorted(set(planted) - set(names))
    if unknown:
        raise LabError(
            f"Planted component(s) {', '.join(unknown)} have no score; scored components are "
            f"{', '.join(names)}."
        )
    mask = np.array([n in set(planted) for n in names])
    if not mask.any() or mask.all():
        raise LabError(
            f"A planted set must hold some but not all of the {len(names)} components (got "
            f"{mask.sum()}): plant at least one component and leave at least one out."
        )
    values = np.array([scores[n] for n in names], dtype=np.float64)
    if not np.isfinite(values).all():
        bad = [n for n, v in zip(names, values, strict=True) if not np.isfinite(v)]
        raise LabError(f"Scores must be finite; {', '.join(bad)} are not (nan or inf).")
    return mask


def _midranks(x: Float[np.ndarray, " n"]) -> Float[np.ndarray, " n"]:
    """1-based ranks of ``x``, ties sharing their mean rank (scipy's ``rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def auroc(scores: Mapping[str, float], planted: Sequence[str]) -> float:
    """Area under the ROC curve of planted (positive) vs the rest, ties counted half."""
    mask = check_planted(scores, planted)
    ranks = _midranks(np.array(list(scores.values()), dtype=np.float64))
    n_pos, n_neg = int(mask.sum()), int((~mask).sum())
    u = ranks[mask].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def precision_at_k(scores: Mapping[str, float], planted: Sequence[str]) -> float:
    """The share of planted components among the top k (k = number planted); a tie across the
    cut counts in proportion (its expectation over random tie-breaking)."""
    mask = check_planted(scores, planted)
    values = np.array(list(scores.values()), dtype=np.float64)
    k = int(mask.sum())
    cut = np.sort(values)[::-1][k - 1]  # the k-th highest score
    above = values > cut
    tied = values == cut
    hits = mask[above].sum() + (k - above.sum()) * mask[tied].sum() / tied.sum()
    return float(hits / k)


def ranking(scores: Mapping[str, float]) -> list[str]:
    """Component names, highest score first; equal scores keep their given order."""
    names = list(scores)
    order = sorted(range(len(names)), key=lambda i: (-float(scores[names[i]]), i))
    return [names[i] for i in order]


def faithfulness_areas(curve: Float[np.ndarray, " n_plus_1"] | Sequence[float]) -> dict:
    """CPR (area under the curve) and CMD (area between the curve and 1) of a faithfulness curve
    given at n = 0..N components, with n normalised to n / N (trapezoidal rule, as MIB)."""
    f = np.asarray(curve, dtype=np.float64)
    if f.ndim != 1 or len(f) < 2:
        raise LabError(f"A faithfulness curve needs values at n = 0..N, N >= 1; got {f.shape}.")
    if not np.isfinite(f).all():
        raise LabError("A faithfulness curve must be finite; a departure of 0 has no share.")
    x = np.arange(len(f)) / (len(f) - 1)
    dx = np.diff(x)
    cpr = float((dx * (f[1:] + f[:-1]) / 2).sum())
    gap = np.abs(1 - f)
    cmd = float((dx * (gap[1:] + gap[:-1]) / 2).sum())
    return {"cpr": cpr, "cmd": cmd}


def summarize(values: Sequence[float], higher_is_better: bool = True) -> dict:
    """Mean and worst over a suite (worst: the lowest, or the highest when lower is better)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise LabError("Nothing to summarize: the suite gave no values.")
    worst = v.min() if higher_is_better else v.max()
    return {"mean": float(v.mean()), "worst": float(worst)}
