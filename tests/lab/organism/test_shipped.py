"""The shipped pair in data/organism: its recorded metrics meet the targets, and it loads."""

import json
from pathlib import Path

import pytest
import torch

import lab
import lab.organism
from lab.errors import LabError
from lab.organism.world import HMM

SHIPPED = Path(__file__).resolve().parents[3] / "data" / "organism"
pytestmark = pytest.mark.skipif(
    not (SHIPPED / "metrics.json").exists(), reason="no shipped organism (lab organism train)"
)


@pytest.fixture(scope="module")
def rows() -> dict:
    return json.loads((SHIPPED / "metrics.json").read_text())


def test_base_is_calibrated_and_carries_beliefs(rows):
    base = rows["base"]
    assert base["excess_loss"] <= 0.005 and base["ece"] <= 0.005
    assert base["belief_probe_r2"] >= 0.9


def test_rlhf_steers_and_over_updates(rows):
    rlhf, base, star, world = rows["rlhf"], rows["base"], rows["pi_star"], rows["world"]
    assert rlhf["wedding_reach"] >= 0.8 > 0.3 > world["wedding_reach"]
    assert rlhf["ece"] >= 10 * base["ece"]
    assert rlhf["impossible_transition_rate"] > star["impossible_transition_rate"]
    rm = rows["reward_model"]
    assert rm["rm_incoherence_price"] < -rm["true_incoherence_coef"]  # the blind spot


def test_cards_say_how_they_were_made():
    for name in ("base", "rlhf", "peak", "reward"):
        card = json.loads((SHIPPED / name / "card.json").read_text())
        assert card["command"].startswith("lab organism train")
        assert (SHIPPED / name / "model.safetensors").stat().st_size < 5_000_000


def test_load_pair_organism():
    pair = lab.load_pair("organism", device="cpu")
    tokens = pair.to_tokens("kitchen dinner happy")
    assert tokens[0, 0].item() == 0
    assert pair.base(tokens).shape == pair.tuned(tokens).shape == (1, 4, 57)


def test_load_is_the_pair_with_its_world_labeler_and_reward_model():
    org = lab.organism.load()
    assert org.pair.sources == {"base": "organism", "tuned": "organism"}
    assert org.pair.device == torch.device("cpu")
    card = json.loads((SHIPPED / "rlhf" / "card.json").read_text())
    assert org.world.to_dict() == HMM.from_dict(card["world"]).to_dict()
    assert (org.beta, org.length, org.prompt_words) == (
        card["beta"],
        card["length"],
        card["prompt_words"],
    )
    assert org.reward_model is not None and set(org.models) == {"base", "rlhf", "peak"}
    tokens = org.world.draw(4, org.length, torch.Generator().manual_seed(0))[0]
    with torch.inference_mode():
        for role, name in (("base", "base"), ("tuned", "rlhf")):
            hf = org.models[name](tokens).logits
            torch.testing.assert_close(org.pair.models[role](tokens), hf, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(org.pair.base(tokens), org.pair.tuned(tokens), atol=1e-2)


def test_load_refuses_a_folder_that_is_not_an_organism(tmp_path):
    with pytest.raises(LabError, match="not an organism folder"):
        lab.organism.load(tmp_path)
