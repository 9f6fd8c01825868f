"""Probe kinds: sklearn-style fit / predict / score / directions, and every bad-input refusal."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score

from lab.errors import LabError
from probes.linear.kinds import PROBE_KINDS, Probe, get_kind
from probes.linear.solvers import SolverConfig


def _data(n=240, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.arange(1, d + 1)
    y = (x[:, 0] - x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()
    return x, y


def test_registry_holds_the_three_kinds():
    assert set(PROBE_KINDS) == {"logistic", "ridge", "diff_means"}
    with pytest.raises(LabError, match="ridge"):
        get_kind("ridg")


def test_logistic_probe_matches_sklearn_on_raw_features():
    x, y = _data()
    probe = Probe("logistic", reg=0.5, solver=SolverConfig(tol=1e-10)).fit(x, y + 10)
    xs = (x - x.mean(0)) / x.std(0, correction=0)
    sk = LogisticRegression(C=0.5, tol=1e-12, max_iter=10000).fit(xs.numpy(), (y + 10).numpy())
    assert (probe.predict(x).numpy() == sk.predict(xs.numpy())).all()
    assert probe.score(x, y + 10).item() == pytest.approx(sk.score(xs.numpy(), (y + 10).numpy()))
    # Directions are in raw activation space: the standardisation is folded in.
    np.testing.assert_allclose(
        probe.directions.numpy(), sk.coef_ / x.std(0, correction=0).numpy(), atol=1e-5
    )
    assert probe.intercept.shape == (4,)


def test_stacked_features_fit_each_feature_set():
    x, y = _data()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    stack = torch.stack([x, noise])
    probe = Probe("logistic", reg=1.0).fit(stack, y)
    scores = probe.score(stack, y)
    assert scores.shape == (2,)
    assert scores[0] > 0.9
    assert scores[1] < 0.6
    assert probe.predict(stack).shape == (2, 240)
    assert probe.directions.shape == (2, 4, 6)


def test_ridge_probe_matches_sklearn_for_vector_targets():
    x, _ = _data()
    y = torch.stack([x[:, 0] * 2 + 1, x[:, 3] - x[:, 4]], -1)
    probe = Probe("ridge", reg=3.0).fit(x, y)
    xs = ((x - x.mean(0)) / x.std(0, correction=0)).numpy()
    sk = Ridge(alpha=3.0).fit(xs, y.numpy())
    np.testing.assert_allclose(probe.predict(x).numpy(), sk.predict(xs), atol=1e-8)
    pooled = r2_score(y.numpy(), sk.predict(xs), multioutput="variance_weighted")
    assert probe.score(x, y).item() == pytest.approx(pooled)
    assert Probe("ridge").fit(x, y[:, 0]).predict(x).shape == (240,)


def test_diff_means_probe_and_balanced_option():
    x, y = _data()
    probe = Probe("diff_means").fit(x, y)
    assert probe.directions.shape == (4, 6)
    assert probe.score(x, y).item() > 0.5
    rare = torch.where(torch.arange(240) < 220, 0, 1)
    x2 = x + rare[:, None] * 2.0
    plain = Probe("logistic", reg=0.01).fit(x2, rare)
    balanced = Probe("logistic", reg=0.01, balanced=True).fit(x2, rare)
    assert (balanced.predict(x2) == 1).sum() >= (plain.predict(x2) == 1).sum()


@pytest.mark.parametrize(
    ("kind", "y", "match"),
    [
        ("logistic", torch.zeros(239, dtype=torch.long), "239 rows"),
        ("logistic", torch.ones(240, dtype=torch.long), "single class"),
        ("logistic", torch.rand(240), "real-valued"),
        ("ridge", torch.full((240,), float("nan")), "NaN"),
    ],
)
def test_bad_targets_are_refused(kind, y, match):
    x, _ = _data()
    with pytest.raises(LabError, match=match):
        Probe(kind).fit(x, y)


def test_nan_features_name_the_rows():
    x, y = _data()
    x[[5, 17], 2] = float("inf")
    with pytest.raises(LabError, match=r"rows \[5, 17\]"):
        Probe("logistic").fit(x, y)


def test_balanced_ridge_and_unfitted_probe_are_refused():
    x, _ = _data()
    with pytest.raises(LabError, match="balancing"):
        Probe("ridge", balanced=True).fit(x, x[:, 0])
    with pytest.raises(LabError, match="not fitted"):
        Probe("logistic").predict(x)


def test_docstrings_say_what_reg_and_score_compute():
    """Issue 14, finding 2: ``reg`` is the penalty on standardised weights, and ``score`` is the
    variance-weighted R² (not sklearn's default uniform average); the numbers back the words."""
    assert "standardised features" in Probe.__doc__
    assert "variance-weighted" in Probe.score.__doc__
    assert "uniform over outputs" not in Probe.score.__doc__
    x, _ = _data()
    y = torch.stack([x[:, 0] * 5 + x[:, 1], 0.1 * x[:, 2] + torch.linspace(-1, 1, 240)], -1)
    probe = Probe("ridge", reg=1.0).fit(x, y)
    xs = ((x - x.mean(0)) / x.std(0, correction=0)).numpy()
    pred = Ridge(alpha=1.0).fit(xs, y.numpy()).predict(xs)
    weighted = r2_score(y.numpy(), pred, multioutput="variance_weighted")
    uniform = r2_score(y.numpy(), pred)
    assert abs(weighted - uniform) > 0.01  # the two conventions differ here
    assert probe.score(x, y).item() == pytest.approx(weighted)
    # The same reg on raw features is a different penalty: sklearn at C on raw x differs.
    logistic = Probe("logistic", reg=0.05, solver=SolverConfig(tol=1e-10)).fit(x, y[:, 0] > 0)
    raw = LogisticRegression(C=0.05, tol=1e-12, max_iter=10000).fit(x.numpy(), y[:, 0] > 0)
    scaled = LogisticRegression(C=0.05, tol=1e-12, max_iter=10000).fit(xs, y[:, 0] > 0)
    direction = (logistic.directions[1] - logistic.directions[0]).numpy()
    scale = x.std(0, correction=0).numpy()
    np.testing.assert_allclose(direction, scaled.coef_[0] / scale, atol=1e-6)
    assert np.abs(direction - raw.coef_[0]).max() > 1e-2
