"""fit_probes: every model, hook, target, reg and seed at once, read from a store-like source."""

import pandas as pd
import pytest
import torch

from lab.errors import LabError
from probes.linear.kinds import Probe
from probes.linear.layerwise import ProbeConfig, fit_probes, layer_of
from probes.linear.source import TensorSource
from probes.linear.splits import split_by_sequence


def build_source(n_seq=20, pos=16, d=8, layers=3, models=("base", "tuned"), seed=0, **targets):
    """A TensorSource whose later layers carry a token-class signal more strongly."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 12, (n_seq * pos,), generator=gen)
    cls = torch.arange(12) % 3
    embed = torch.randn(12, d, generator=gen)
    feats = {}
    for i, model in enumerate(models):
        noise = torch.randn(layers, n_seq * pos, d, generator=gen)
        strength = torch.linspace(0.2, 2.0, layers)[:, None, None] * (1 + i)
        feats[model] = strength * embed[tokens] + noise
    table = {
        "cls": cls[tokens],
        "value": embed[tokens, 0] + 0.1 * torch.randn(n_seq * pos, generator=gen),
    }
    table |= targets
    hooks = tuple(f"blocks.{i}.hook_resid_post" for i in range(layers))
    return TensorSource(feats, hooks, torch.arange(n_seq).repeat_interleave(pos), table), tokens


@pytest.fixture
def make_source():
    """The factory: ``make_source(**overrides) -> (source, token_ids)``."""
    return build_source


@pytest.fixture
def source():
    return build_source()[0]


CPU = {"device": "cpu"}


def test_tidy_table_with_controls_and_selection(source, tmp_path):
    config = ProbeConfig(regs=(0.01, 1.0), seeds=(0, 1), **CPU)
    results = fit_probes(source, ["cls"], config)
    table = results.table
    assert {
        "model",
        "hook",
        "layer",
        "target",
        "control",
        "seed",
        "reg",
        "split",
        "metric",
        "value",
    } <= set(table.columns)
    test = table[(table.split == "test") & (table.metric == "accuracy")]
    # one selected test score per (model, hook, target, control, seed)
    assert len(test) == 2 * 3 * 2 * 2
    task = test[test.control == "task"].groupby(["model", "layer"])["value"].mean()
    control = test[test.control == "shuffle"]["value"]
    assert task.loc[("tuned", 2)] > 0.9
    assert control.max() < 0.6
    selectivity = table[table.metric == "selectivity"]
    assert len(selectivity) == 2 * 3 * 2 and selectivity.value.max() > 0.4
    results.to_parquet(tmp_path / "probes.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "probes.parquet"), table)
    selected = results.maps["tuned", "cls", 0]
    assert selected.weight.shape == (3, 1, 8, 3) and selected.bias.shape == (3, 1, 3)


def test_batched_sweep_equals_one_probe_at_a_time(source):
    config = ProbeConfig(regs=(0.1,), control=None, **CPU)
    table = fit_probes(source, ["cls"], config).table
    split = split_by_sequence(source.sequence_ids(), config.fractions, 0)
    y = source.targets("cls")
    for model in ("base", "tuned"):
        x = source.stacked(model, source.hooks)
        probe = Probe("logistic", reg=0.1).fit(x[:, split.train], y[split.train])
        alone = probe.score(x[:, split.test], y[split.test])
        batched = table[(table.model == model) & (table.split == "test")].sort_values("layer")[
            "value"
        ]
        torch.testing.assert_close(torch.tensor(batched.values), alone.double(), atol=1e-6, rtol=0)


def test_ridge_sweep_and_types_control(make_source):
    source, tokens = make_source()
    config = ProbeConfig(kind="ridge", regs=(1.0, 100.0), control="types", **CPU)
    table = fit_probes(source, ["value"], config, token_ids=tokens).table
    r2 = table[(table.split == "test") & (table.metric == "r2")]
    assert r2[(r2.control == "task") & (r2.model == "tuned")]["value"].max() > 0.9
    # The types control is learnable from token identity: selectivity is small, not large.
    assert r2[r2.control == "types"]["value"].max() > 0.5


def test_diff_means_sweep(source):
    table = fit_probes(source, ["cls"], ProbeConfig(kind="diff_means", control=None, **CPU)).table
    assert table[table.split == "test"]["value"].max() > 0.8


def test_missing_target_lists_the_available_ones(source):
    with pytest.raises(
        LabError, match=r"No target 'clss'.*available: cls, value.*Did you mean: cls"
    ):
        fit_probes(source, ["clss"], ProbeConfig(**CPU))


def test_nan_features_name_hook_and_rows(make_source):
    source, _ = make_source()
    source.features["tuned"][1, [3, 40]] = float("nan")
    with pytest.raises(LabError, match=r"'tuned', hook 'blocks.1.hook_resid_post', rows \[3, 40\]"):
        fit_probes(source, ["cls"], ProbeConfig(**CPU))


def test_wrong_length_and_single_class_targets(make_source):
    source, _ = make_source(
        short=torch.zeros(5, dtype=torch.long), one=torch.zeros(320, dtype=torch.long)
    )
    with pytest.raises(LabError, match="5 rows but the features have 320"):
        fit_probes(source, ["short"], ProbeConfig(**CPU))
    with pytest.raises(LabError, match="single class"):
        fit_probes(source, ["one"], ProbeConfig(**CPU))


def test_too_few_sequences(make_source):
    source, _ = make_source(n_seq=2)
    with pytest.raises(LabError, match="at least 3"):
        fit_probes(source, ["cls"], ProbeConfig(**CPU))


def test_layer_of():
    assert layer_of("blocks.11.hook_resid_post", 0) == 11
    assert layer_of("blocks.0.hook_resid_pre", 5) == -1
    assert layer_of("embed", 3) == 3
