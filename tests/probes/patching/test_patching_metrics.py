"""Patching metrics: their values, their tiling over stacked runs, and their use in sweeps."""

import pandas as pd
import pytest
import torch

from lab import LabError, load_pair
from probes.patching.metrics import (
    FnMetric,
    KLMetric,
    LogitDiff,
    LogProb,
    TokenSetProb,
    check_names,
    read_logits,
)
from probes.patching.patch import PatchConfig, denoise
from probes.patching.table import to_grid

torch.manual_seed(0)
LOGITS = torch.randn(3, 5, 11)
METRICS = [
    LogitDiff(positions=(-1, 2), correct=torch.tensor([1, 2, 3]), wrong=torch.tensor([4, 5, 6])),
    LogProb(positions=(0, -1), targets=torch.tensor([[1, 2], [3, 4], [5, 6]])),
    LogProb(positions=(-1,), targets=torch.tensor([7, 8, 9])),
    TokenSetProb(positions=(1, 3), tokens=(2, 5, 7)),
    KLMetric(positions=(-1,), reference=torch.randn(3, 1, 11).log_softmax(-1)),
]


def test_values():
    lp = LOGITS.log_softmax(-1)
    assert METRICS[0](read_logits(LOGITS, METRICS[0]))[1] == pytest.approx(
        float(((LOGITS[1, 4, 2] - LOGITS[1, 4, 5]) + (LOGITS[1, 2, 2] - LOGITS[1, 2, 5])) / 2)
    )
    assert METRICS[1](read_logits(LOGITS, METRICS[1]))[2] == pytest.approx(
        float((lp[2, 0, 5] + lp[2, 4, 6]) / 2)
    )
    assert METRICS[3](read_logits(LOGITS, METRICS[3]))[0] == pytest.approx(
        float(lp[0, [1, 3]][:, [2, 5, 7]].exp().sum(-1).mean())
    )
    ref = METRICS[4].reference
    kl = (lp[:, -1:].exp() * (lp[:, -1:] - ref)).sum(-1).mean(-1)
    assert torch.allclose(METRICS[4](read_logits(LOGITS, METRICS[4])), kl)
    assert torch.allclose(METRICS[4](ref.expand(3, 1, 11).clone()), torch.zeros(3), atol=1e-6)


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_tiled_metric_scores_each_stacked_copy_as_the_metric(metric):
    read = read_logits(LOGITS, metric)
    copies = torch.stack([read, read.flip(-1), 2 * read])  # 3 patched runs of the 3 prompts
    tiled = metric.tile(3)(copies.reshape(9, *read.shape[1:])).view(3, 3)
    for c in range(3):
        assert torch.allclose(tiled[c], metric(copies[c]))


def test_untileable_metrics_give_the_same_sweep(pair_dirs):
    model = load_pair(*pair_dirs("gpt2"), device="cpu").base
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(5, 300, (2, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = 9
    metric = LogitDiff(correct=torch.tensor([7, 8]), wrong=torch.tensor([40, 41]))
    wrapped = FnMetric(fn=metric, label="LogitDiff")
    cfg = PatchConfig(progress=False)
    a = denoise(model, clean, corrupted, "resid_pre", metric, config=cfg)
    b = denoise(model, clean, corrupted, "resid_pre", wrapped, config=cfg)
    assert a["value"].tolist() == pytest.approx(b["value"].tolist(), abs=1e-6)


# Names and grids ------------------------------------------------------------------------------

ATOL = 1e-5


def test_default_names_describe_the_metric():
    names = [m.name for m in METRICS]
    assert names[0] == "LogitDiff([1,2,3]-[4,5,6])@-1,2"
    assert names[1].startswith("LogProb(#") and names[1].endswith(")@0,-1")  # 6 ids: a digest
    assert names[2:4] == ["LogProb([7,8,9])", "TokenSetProb(2,5,7)@1,3"]
    assert names[4].startswith("KL(patched||ref#")
    assert len(set(names)) == len(names)
    same = LogitDiff(correct=torch.tensor([5, 5]), wrong=torch.tensor([6, 6]))
    assert same.name == "LogitDiff(5-6)"
    assert (
        LogitDiff(correct=torch.tensor([5, 5]), wrong=torch.tensor([6, 6]), label="io").name == "io"
    )
    assert FnMetric(fn=torch.mean).name == "mean" and FnMetric(fn=lambda x: x).name == "fn"


def test_two_metrics_of_one_class_get_their_own_rows(pair_dirs):
    """Two LogitDiffs were both named 'LogitDiff': their rows could not be told apart."""
    model = load_pair(*pair_dirs("gpt2"), device="cpu").base
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(5, 300, (2, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = 9
    first = LogitDiff(correct=torch.tensor([7, 8]), wrong=torch.tensor([40, 41]))
    second = LogitDiff(correct=torch.tensor([11, 12]), wrong=torch.tensor([50, 51]))
    cfg = PatchConfig(progress=False)
    both = denoise(model, clean, corrupted, "resid_pre", [first, second], config=cfg)
    assert both["metric"].nunique() == 2
    for m in (first, second):
        alone = denoise(model, clean, corrupted, "resid_pre", m, config=cfg)
        got = both[both["metric"] == m.name]["value"].to_numpy()
        assert got.tolist() == pytest.approx(alone["value"].tolist(), abs=ATOL)


def test_clashing_names_are_refused(pair_dirs):
    model = load_pair(*pair_dirs("gpt2"), device="cpu").base
    tokens = torch.randint(5, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    a = LogitDiff(correct=torch.tensor([7, 8]), wrong=torch.tensor([40, 41]), label="io")
    b = LogProb(targets=torch.tensor([1, 2]), label="io")
    with pytest.raises(LabError, match=r"Metrics share the name 'io'.*own label"):
        denoise(model, tokens, tokens, "resid_pre", [a, b], config=PatchConfig(progress=False))
    twin = FnMetric(fn=lambda x: x[:, 0, 0])
    with pytest.raises(LabError, match="share the name 'fn'"):
        check_names([twin, FnMetric(fn=lambda x: x[:, 0, 1])])


def table_of(rows):
    cols = ["site", "layer", "head", "position", "metric", "value", "target", "source", "share"]
    t = pd.DataFrame(rows, columns=cols)
    return t.astype({"head": "Int64", "position": "Int64"})


def test_to_grid_lays_out_layer_by_position_and_layer_by_head():
    by_pos = table_of(
        [
            ("resid_pre", layer, None, p, "m", 10 * layer + p, 0, 1, 0)
            for layer in (0, 2)
            for p in range(3)
        ]
    )
    grid = to_grid(by_pos)
    assert grid.shape == (3, 3) and grid.dtype == torch.float64
    assert grid[2].tolist() == [20, 21, 22] and grid[1].isnan().all()
    heads = table_of([("z", 1, h, None, "m", h, 0, 2, h / 2) for h in range(4)])
    assert to_grid(heads, column="share")[1].tolist() == [0, 0.5, 1, 1.5]
    both = table_of([("z", 0, h, p, "m", 10 * p + h, 0, 1, 0) for p in range(2) for h in range(3)])
    assert to_grid(both).shape == (1, 2, 3) and to_grid(both)[0, 1, 2] == 12


def test_to_grid_asks_which_metric_and_refuses_mixed_sweeps():
    two = table_of([("resid_pre", 0, None, 0, m, v, 0, 1, 0) for m, v in (("a", 1.0), ("b", 2.0))])
    with pytest.raises(LabError, match=r"2 metrics \(a, b\); pick one with metric="):
        to_grid(two)
    assert to_grid(two, metric="b").tolist() == [[2.0]]
    mixed = table_of(
        [("z", 0, 1, None, "m", 1.0, 0, 1, 0), ("z", 0, None, None, "m", 2.0, 0, 1, 0)]
    )
    with pytest.raises(LabError, match="head column is set on some rows"):
        to_grid(mixed)


def test_kl_to_model_computes_the_reference_itself(pair_dirs):
    pair = load_pair(*pair_dirs("llama"), device="cpu")
    tokens = torch.randint(1, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        base_lp = pair.base(tokens).log_softmax(-1).float()
        tuned = pair.tuned(tokens)
    by_hand = KLMetric(positions=(1, -1), reference=base_lp[:, [1, -1]])
    metric = KLMetric.to_model(pair.base, tokens, positions=(1, -1))
    assert torch.equal(metric.reference, by_hand.reference)
    assert torch.equal(metric(tuned[:, [1, -1]]), by_hand(tuned[:, [1, -1]]))
    assert metric(pair.base(tokens)[:, [1, -1]]).abs().max() < 1e-6  # KL to itself
    reverse = KLMetric.to_model(pair.base, tokens, positions=(1, -1), patched_first=False)
    assert not torch.allclose(reverse(tuned[:, [1, -1]]), metric(tuned[:, [1, -1]]))
    # padded: positions count within each prompt's real tokens (-1: its last real one)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    padded = KLMetric.to_model(pair.base, tokens, positions=(0, -1), mask=mask)
    with torch.inference_mode():
        lp = pair.base(tokens, attention_mask=mask).log_softmax(-1).float()
    assert torch.equal(padded.reference[1], lp[1, [2, 5]])
    assert torch.equal(padded.reference[2], lp[2, [0, 3]])


def test_kl_counts_zero_probability_as_zero():
    reference = torch.tensor([[[0.0, -torch.inf]]])  # all mass on token 0
    metric = KLMetric(positions=(-1,), reference=reference, patched_first=False)
    assert metric(torch.tensor([[[0.0, 0.0]]])).item() == pytest.approx(
        float(torch.log(torch.tensor(2.0)))
    )
