"""The quick training run: a loadable pair through lab.load_pair, for the story and any HMM."""

import json

import pytest
import torch

import lab
from lab.organism.evaluate import (
    EvalConfig,
    EvalData,
    evaluate_organism,
    evaluate_policy,
    load,
    load_organism,
    over_optimisation,
)
from lab.organism.labeler import Labeler
from lab.organism.pipeline import quick_config, train_organism
from lab.organism.world import HMM

KEYS = ("excess_loss", "ece", "kl_to_world", "true_utility", "kl_to_pi_star")


@pytest.fixture(scope="module")
def quick_pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("organism")
    rows = train_organism(out, quick_config(), seed=0, progress=False, command="test")
    return out, rows


def test_quick_run_writes_cards(quick_pair):
    out, rows = quick_pair
    for name in ("base", "rlhf", "peak", "reward"):
        folder = out / name
        for f in ("config.json", "model.safetensors", "tokenizer.json", "card.json"):
            assert (folder / f).exists(), f"{name}/{f}"
        card = json.loads((folder / "card.json").read_text())
        assert card["seed"] == 0 and card["wall_time_s"]["total"] > 0 and card["metrics"]
    assert set(rows) >= {"world", "base", "rlhf", "pi_star", "reward_model"}
    for row in ("base", "rlhf"):
        assert all(k in rows[row] for k in (*KEYS, "wedding_reach", "belief_probe_r2"))
    curve = json.loads((out / "rlhf" / "card.json").read_text())["curve"]
    assert {"rm_score", "true_utility", "kl_to_base", "ece", "wedding_reach"} <= set(curve[0])


def test_quick_pair_loads_through_load_pair(quick_pair):
    out, _ = quick_pair
    pair = lab.load_pair(str(out / "base"), str(out / "rlhf"), device="cpu")
    tokens = pair.to_tokens("kitchen dinner happy")
    assert tokens[0, 0].item() == 0  # BOS first, like the organism's sequences
    logits = pair.tuned(tokens)
    assert logits.shape == (1, 4, 57)
    org = load_organism(out)
    hf = org.models["base"](tokens).logits
    # lab.organism.load(folder): the same pair, named by its folders
    loaded = load(out)
    assert loaded.pair.sources == {"base": str(out / "base"), "tuned": str(out / "rlhf")}
    torch.testing.assert_close(loaded.pair.tuned(tokens), logits)
    torch.testing.assert_close(pair.base(tokens), hf, atol=1e-4, rtol=1e-4)
    # any policy: the bridge gives the same metrics as the HF model it wraps
    data = EvalData.draw(org.world, org.length, org.prompt_words, EvalConfig(texts=16, prompts=8))
    rows = [
        evaluate_policy(m, org, data, base=b, probe=True, generator=torch.Generator())
        for m, b in ((org.models["rlhf"], org.models["base"]), (pair.tuned, pair.base))
    ]
    for key in ("excess_loss", "ece", "kl_to_base"):
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-5, abs=1e-7)
    assert rows[1]["belief_probe_r2"] > -1


def test_general_hmm_end_to_end(tmp_path):
    g = torch.Generator().manual_seed(0)
    transition = torch.tensor(
        [[0.9, 0.1, 0.0, 0.0], [0.0, 0.9, 0.1, 0.0], [0.0, 0.0, 0.9, 0.1], [0.1, 0.0, 0.0, 0.9]]
    )
    transition = (transition + 1e-5) / (transition + 1e-5).sum(-1, keepdim=True)
    emission = torch.rand(4, 10, generator=g) ** 4 + 1e-6
    emission = emission / emission.sum(-1, keepdim=True)
    world = HMM(transition, emission, torch.ones(4) / 4)
    labeler = Labeler.for_world(world, {"w0": 1.0, "w1": 0.5}, penalty=4.0, exclusive_ratio=5.0)
    rows = train_organism(tmp_path, quick_config(), world=world, labeler=labeler, progress=False)
    assert "wedding_reach" not in rows["rlhf"]
    org = load_organism(tmp_path)
    assert org.world.n_scenes == 4 and org.world.vocab_size == 11
    again = evaluate_organism(org, EvalConfig(texts=32, prompts=32))
    assert set(again) >= {"world", "base", "rlhf", "pi_star"}
    assert abs(again["world"]["excess_loss"]) < 1e-12


def test_over_optimisation_summary():
    utility = [0, 4, 6, 6, 6, 4, 2, 1]
    curve = [
        {"step": 10 * i, "true_utility": u, "rm_score": float(i)} for i, u in enumerate(utility)
    ]
    out = over_optimisation(curve, window=1)
    assert out["curve_peak_step"] == 20 and out["curve_true_utility_peak"] == 6
    assert out["curve_true_utility_final"] == 1 and out["curve_rm_score_final"] == 7
