"""Patching metrics: their values, their tiling over stacked runs, and their use in sweeps."""

import pytest
import torch

from lab import load_pair
from probes.metrics import FnMetric, KLMetric, LogitDiff, LogProb, TokenSetProb, read_logits
from probes.patching import PatchConfig, denoise

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
