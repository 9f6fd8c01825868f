"""Component classification and the migration map, on a pair whose only difference is known."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lab import LabError, load_pair
from lab.testing import make_checkpoint
from probes.classify import ClassifyConfig, classify, component_sites, score_components
from probes.migration import layer_summary, migration_map, migration_table, top_steering


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
    return pair, tokens, cfg, classify(score_components(pair, tokens, config=cfg), cfg)


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
    assert migration_map(scores).axes and layer_summary(scores).axes
    with pytest.raises(LabError, match="No steering scores for metric 'reward'"):
        migration_table(scores, metric="reward")


def test_too_few_prompts_are_refused(one_mlp_pair):
    pair, tokens, _, _ = one_mlp_pair
    with pytest.raises(LabError, match="cannot make 8 chunks"):
        score_components(pair, tokens[:10], config=ClassifyConfig(n_chunks=8))
    assert len(component_sites(pair.base, 10)) == 10
