"""Localization scores: hand-computed cases and sklearn's AUROC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lab.errors import LabError
from lab.organism.localization import (
    auroc,
    faithfulness_areas,
    precision_at_k,
    ranking,
    summarize,
)


def scores_of(values):
    return {f"c{i}": float(v) for i, v in enumerate(values)}


def test_auroc_hand_cases():
    s = scores_of([0.9, 0.1, 0.5, 0.3])
    assert auroc(s, ["c0"]) == 1.0
    assert auroc(s, ["c1"]) == 0.0
    # planted c2 (0.5) beats c1, c3, loses to c0: 2 of 3 pairs
    assert auroc(s, ["c2"]) == pytest.approx(2 / 3)
    # planted {c0, c3}: c0 beats both, c3 (0.3) beats c1 not c2: 3 of 4
    assert auroc(s, ["c0", "c3"]) == pytest.approx(3 / 4)


def test_auroc_ties_count_half():
    s = scores_of([1.0, 1.0, 0.0])
    assert auroc(s, ["c0"]) == pytest.approx(0.75)  # tie with c1 half, beats c2
    assert auroc(scores_of([0.2] * 5), ["c1", "c3"]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_auroc_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 36
    values = rng.integers(0, 6, n) / 5  # many ties
    mask = np.zeros(n, bool)
    mask[rng.choice(n, 1 + seed, replace=False)] = True
    s = scores_of(values)
    planted = [f"c{i}" for i in np.flatnonzero(mask)]
    assert auroc(s, planted) == pytest.approx(roc_auc_score(mask, values), abs=1e-12)


def test_precision_at_k_hand_cases():
    s = scores_of([0.9, 0.8, 0.1, 0.5])
    assert precision_at_k(s, ["c0", "c1"]) == 1.0
    assert precision_at_k(s, ["c0", "c3"]) == 0.5  # top 2 are c0, c1
    assert precision_at_k(s, ["c2"]) == 0.0


def test_precision_at_k_ties_across_the_cut_count_in_proportion():
    # k = 2: c0 is above the cut, one slot left among the tied c1, c2, c3 (one of them planted)
    s = scores_of([0.9, 0.5, 0.5, 0.5])
    assert precision_at_k(s, ["c0", "c2"]) == pytest.approx((1 + 1 / 3) / 2)
    # everything alike: the base rate k / N
    assert precision_at_k(scores_of([0.0] * 10), ["c1", "c4", "c7"]) == pytest.approx(0.3)


def test_faithfulness_areas_hand_cases():
    # N = 4, an exact single planted component: f = 0, 1, 1, 1, 1 (x = 0, .25, .5, .75, 1)
    areas = faithfulness_areas([0, 1, 1, 1, 1])
    assert areas["cpr"] == pytest.approx(0.875)  # 0.125 + 3 * 0.25
    assert areas["cmd"] == pytest.approx(0.125)
    # a straight line 0 -> 1: area 1/2 either way
    line = faithfulness_areas(np.linspace(0, 1, 11))
    assert line["cpr"] == pytest.approx(0.5) and line["cmd"] == pytest.approx(0.5)
    # overshoot counts as distance from 1 (MIB's |1 - f|): f = 0, 2 over N = 1
    over = faithfulness_areas([0.0, 2.0])
    assert over["cpr"] == pytest.approx(1.0) and over["cmd"] == pytest.approx(1.0)


def test_ranking_is_stable_on_ties():
    assert ranking({"a": 0.1, "b": 0.5, "c": 0.1, "d": 0.7}) == ["d", "b", "a", "c"]


def test_summarize_mean_and_worst():
    assert summarize([1.0, 0.5, 0.9]) == {"mean": pytest.approx(0.8), "worst": 0.5}
    assert summarize([0.1, 0.3], higher_is_better=False) == {
        "mean": pytest.approx(0.2),
        "worst": 0.3,
    }


@pytest.mark.parametrize(
    ("planted", "message"),
    [
        ([], "some but not all"),
        (["c0", "c1", "c2"], "some but not all"),
        (["L9H9"], "scored components are c0, c1, c2"),
    ],
)
def test_bad_planted_sets_are_refused(planted, message):
    with pytest.raises(LabError, match=message):
        auroc(scores_of([0.1, 0.2, 0.3]), planted)
    with pytest.raises(LabError, match=message):
        precision_at_k(scores_of([0.1, 0.2, 0.3]), planted)


def test_non_finite_scores_and_curves_are_refused():
    with pytest.raises(LabError, match="c1 are not"):
        auroc(scores_of([0.1, float("nan"), 0.3]), ["c0"])
    with pytest.raises(LabError, match="finite"):
        faithfulness_areas([0.0, float("nan"), 1.0])
    with pytest.raises(LabError, match=r"n = 0\.\.N"):
        faithfulness_areas([0.0])
