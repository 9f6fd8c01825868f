"""Component classification and the migration map, on a pair whose only difference is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from lab import LabError, load_pair
from lab.testing import make_checkpoint
from probes.components import (
    ClassifyConfig,
    classify,
    classify_scores,
    component_sites,
    departure,
    layer_summary,
    migration,
    migration_map,
    migration_table,
    score_components,
    top_steering,
)
from probes.patching.metrics import KLMetric
from probes.patching.patch import cross_model
from probes.patching.sites import Site


@pytest.fixture(scope="module")
def one_mlp_pair(tmp_path_factory):
    """A tuned model that differs from its base only in the last block's MLP."""
    root = tmp_path_factory.mktemp("one_mlp")
    base = make_checkpoint(root / "base", arch="gpt2")
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        w = model.transformer.h[1].mlp.c_fc.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    model.save_pretrained(root / "tuned")
    (root / "tuned" / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    (root / "tuned" / "tokenizer_config.json").write_bytes(
        (base / "tokenizer_config.json").read_bytes()
    )
    pair = load_pair(base, root / "tuned", device="cpu")
    tokens = torch.randint(4, 320, (32, 10), generator=torch.Generator().manual_seed(2))
    tokens[:, 0] = 0
    cfg = ClassifyConfig(n_chunks=4, n_boot=200, steering_threshold=0.5)
    return pair, tokens, cfg, classify(pair, tokens, config=cfg)


def test_the_changed_mlp_carries_all_the_steering(one_mlp_pair):
    _, _, _, scores = one_mlp_pair
    steer = scores[(scores.score == "steering") & (scores.metric == "kl_to_base")]
    by = steer.set_index(["component", "model"])["value"]
    # Every input to the last MLP is the same in both models, so swapping its output swaps all.
    assert by[("L1 MLP", "tuned")] == pytest.approx(1.0, abs=1e-4)
    assert by[("L1 MLP", "base")] == pytest.approx(1.0, abs=1e-4)
    others = by.drop(index="L1 MLP", level=0)
    assert others.abs().max() < 1e-6  # identical activations: patching changes nothing
    top = top_steering(scores, n=1)
    assert top.component[0] == "L1 MLP" and top.lo[0] <= top.value[0] <= top.hi[0]


def test_labels_follow_the_thresholds(one_mlp_pair):
    *_, scores = one_mlp_pair
    labels = scores.drop_duplicates(["component", "model"]).set_index(["component", "model"])
    assert labels.loc[("L1 MLP", "tuned"), "label"] in {"steering-like", "both"}
    assert labels.loc[("L0H0", "tuned"), "label"] in {"prediction-like", "neither"}
    pred = scores[(scores.score == "prediction") & (scores.model == "base")]
    assert (pred.value > 0).all()  # ablating anything moves base away from its own prediction


def test_migration_table_and_figures(one_mlp_pair):
    _, _, _, scores = one_mlp_pair
    table = migration_table(scores)
    assert len(table) == 10 and set(table.kind) == {"head", "mlp"}
    (ax,) = migration_map(scores).axes
    assert ax.get_xlabel().startswith("prediction score") and "kl_to_base" in ax.get_ylabel()
    assert len(ax.collections) == 4  # heads and MLPs, each in base and in tuned
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["head in base", "head in tuned", "mlp in base", "mlp in tuned"]
    summary = layer_summary(scores).axes
    assert [a.get_title() for a in summary] == [
        "base: steering share by layer",
        "tuned: steering share by layer",
    ]
    assert [t.get_text() for t in summary[0].get_xticklabels()] == ["L0", "L1"]
    with pytest.raises(LabError, match="No steering scores for metric 'reward'"):
        migration_table(scores, metric="reward")


def test_too_few_prompts_are_refused(one_mlp_pair):
    pair, tokens, _, _ = one_mlp_pair
    with pytest.raises(LabError, match="cannot make 8 chunks"):
        score_components(pair, tokens[:10], config=ClassifyConfig(n_chunks=8))
    assert len(component_sites(pair.base, 10)) == 10


def _raw(metric, target, gap, moved, noise, n_chunks=8):
    """Per-chunk rows of two components for one metric, patched into tuned: the chunks' gaps
    alternate ``gap +- noise`` (mean exactly ``gap``) and the patch moves by ``moved``."""
    rows = []
    for comp, kind, layer, head in (("L0H0", "head", 0, 0), ("L0 MLP", "mlp", 0, None)):
        for c in range(n_chunks):
            t = target + noise * np.sin(c)
            s = t + gap + noise * (-1) ** c
            for score, met in (("steering", metric), ("prediction", "kl")):
                rows.append(
                    {"component": comp, "kind": kind, "layer": layer, "head": head,
                     "model": "tuned", "score": score, "metric": met, "chunk": c,
                     "value": t + moved, "target": t, "source": s}
                )  # fmt: skip
    return rows


def test_a_departure_within_noise_flags_its_shares():
    raw = pd.DataFrame(
        [
            # tuned and base differ by 0.003 on the attractor, with chunk noise 0.02: a share
            # near 5.7 (the 568%) that divides by noise
            *_raw("attractor_prob", 0.5, 0.003, 0.017, 0.02),
            *_raw("kl_to_base", 0.2, -0.2, -0.1, 0.01),
        ]
    ).drop_duplicates(["component", "model", "score", "metric", "chunk"])
    cfg = ClassifyConfig(n_boot=300, steering_metric="attractor_prob")
    scores = classify_scores(raw, cfg)
    steer = scores[scores.score == "steering"].set_index(["component", "metric"])
    att, kl = steer.loc[("L0 MLP", "attractor_prob")], steer.loc[("L0 MLP", "kl_to_base")]
    assert att.value == pytest.approx(0.017 / 0.003) and att.gap == pytest.approx(0.003)
    assert att.gap_lo < 0 < att.gap_hi and att.within_noise
    assert kl.value == pytest.approx(0.5) and kl.gap_hi < 0 and not kl.within_noise
    assert kl.gap_lo < kl.gap < kl.gap_hi
    assert set(scores.label) == {"neither"}  # a share of noise is not steering, however large
    assert top_steering(scores, metric="attractor_prob").empty  # only the clear findings
    assert len(top_steering(scores, metric="attractor_prob", noise=True)) == 2
    assert len(top_steering(scores)) == 2  # kl_to_base's departure is clear of noise
    deps = migration.departures(scores).set_index("metric")
    assert deps.loc["attractor_prob", "within_noise"] and not deps.loc["kl_to_base", "within_noise"]
    assert deps.loc["kl_to_base", "departure"] == pytest.approx(-kl.gap)
    assert "within noise" in migration.departure_note(migration.departures(scores).iloc[0])


def test_departure_intervals_of_a_real_pair(one_mlp_pair):
    pair, tokens, _, scores = one_mlp_pair
    with torch.inference_mode():
        reference = pair.base(tokens).log_softmax(-1)
    kl = KLMetric(positions=tuple(range(10)), reference=reference)
    dep = departure(pair, tokens, {"kl_to_base": kl}, n_boot=200).set_index("into")
    table = cross_model(pair, tokens, [Site("mlp_out", 1)], [kl], into="tuned")
    # the gap a cross-model share divides by, with an interval clear of 0 (the MLP changed)
    assert dep.loc["tuned", "gap"] == pytest.approx(float(table.source[0] - table.target[0]))
    assert dep.loc["tuned", "gap_lo"] < dep.loc["tuned", "gap"] < dep.loc["tuned", "gap_hi"] < 0
    assert dep.loc["base", "gap"] == pytest.approx(-dep.loc["tuned", "gap"])
    assert not dep.within_noise.any()
    steer = scores[(scores.score == "steering") & (scores.metric == "kl_to_base")]
    assert not steer.within_noise.any() and (steer[steer.model == "tuned"].gap_hi < 0).all()
    same = dataclasses.replace(pair, tuned=pair.base)  # no departure at all
    flat = departure(same, tokens, {"kl_to_base": kl}, n_boot=50)
    assert flat.within_noise.all() and (flat.gap == 0).all()
