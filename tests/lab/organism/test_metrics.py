import math

import pytest
import torch

from lab.errors import LabError
from lab.models.outputs import kl_per_token
from lab.organism.labeler import Labeler
from lab.organism.metrics import (
    as_policy,
    belief_probe_r2,
    ece,
    generation_metrics,
    prediction_metrics,
    scene_reach,
    without_bos,
)
from lab.organism.story import story_labeler, story_world
from lab.organism.world import HMM


@pytest.fixture(scope="module")
def world() -> HMM:
    return story_world()


def test_ece_by_hand():
    conf = torch.tensor([0.95, 0.95, 0.55, 0.55])
    acc = torch.tensor([1.0, 1.0, 0.0, 1.0])
    # bin of 0.95: |1 - 0.95| x 2/4; bin of 0.55: |0.5 - 0.55| x 2/4
    assert ece(conf, acc) == pytest.approx(0.05 * 0.5 + 0.05 * 0.5)
    assert ece(conf, conf) == 0.0


def test_kl_per_token():
    p = torch.tensor([[[0.0, -math.inf, math.log(0.5), math.log(0.5)]]]).double()
    p[..., 0] = math.log(1e-300)
    q = torch.log(torch.tensor([[[0.25, 0.25, 0.25, 0.25]]])).double()
    assert kl_per_token(q, q) == 0.0
    assert kl_per_token(p, q) == pytest.approx(math.log(2), abs=1e-6)


def test_without_bos_renormalises():
    lp = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]])).double()
    out = without_bos(lp).exp()
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.5, 0.5]]]).double())


def test_world_against_itself_is_perfect(world):
    tokens = world.draw(32, 12, torch.Generator().manual_seed(0))[0]
    own = world.forward(tokens).next_token_logprobs
    m = prediction_metrics(own, world, tokens)
    assert abs(m["excess_loss"]) < 1e-12 and abs(m["kl_to_world"]) < 1e-12 and m["ece"] < 1e-12


def test_miscalibrated_model_is_caught(world):
    tokens = world.draw(64, 12, torch.Generator().manual_seed(0))[0]
    sharp = (world.forward(tokens).next_token_logprobs * 3).log_softmax(-1)
    m = prediction_metrics(sharp, world, tokens)
    assert m["kl_to_world"] > 0.1 and m["ece"] > 0.05 and m["excess_loss"] > 0


def test_belief_probe_recovers_linear_code(world):
    tokens = world.draw(200, 10, torch.Generator().manual_seed(1))[0]
    beliefs = world.forward(tokens).beliefs
    mix = torch.randn(world.n_scenes, 16, dtype=torch.float64)
    good = beliefs @ mix
    noise = torch.randn_like(good)
    r = belief_probe_r2([noise, good], beliefs)
    assert r["belief_probe_best_layer"] == 1
    assert r["belief_probe_r2_best_layer"] > 0.999
    assert belief_probe_r2([noise], beliefs)["belief_probe_r2"] < 0.2


def test_scene_reach_and_generation_metrics(world):
    labeler = story_labeler(world)
    wedding_words = [world.words.index(w) + 1 for w in ("bride", "groom", "ring")]
    office = world.words.index("desk") + 1
    tokens = torch.tensor([[0, office, office, *wedding_words], [0] + [office] * 5])
    assert scene_reach(world, tokens, "wedding", start=3) == 0.5
    m = generation_metrics(tokens, 3, world, labeler)
    # desk -> bride is a forbidden office -> wedding move, in the first sequence only
    assert m["incoherent_per_sequence"] == 0.5
    assert m["impossible_transition_rate"] == pytest.approx(1 / 6)
    with pytest.raises(LabError, match="continuation starts"):
        generation_metrics(tokens, 9, world, labeler)


def test_policy_wrappers(world):
    policy = as_policy(world)
    prompts = world.draw(4, 3, torch.Generator().manual_seed(0))[0]
    out = policy.sample(prompts, 8, torch.Generator().manual_seed(0))
    assert out.shape == (4, 9) and torch.equal(out[:, :4], prompts)
    with pytest.raises(LabError, match="as a policy"):
        as_policy("gpt2")
    assert isinstance(story_labeler(world), Labeler)
