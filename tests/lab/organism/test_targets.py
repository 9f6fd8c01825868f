"""Organism targets: the attractor-reach recursion against brute-force enumeration."""

import itertools
from types import SimpleNamespace

import pytest
import torch

from lab.errors import LabError
from lab.models.checkpoints import data_dir
from lab.organism.evaluate import load_organism
from lab.organism.targets import organism_targets, policy_value, reach_probability
from lab.organism.world import HMM
from lab.sweeps.analyses import build_dataset


def _brute_force(transition, start, steps, target):
    """P(target among ``steps`` scenes whose first is ``start``), by enumerating every path."""
    n = transition.shape[0]
    miss = 0.0
    for path in itertools.product(range(n), repeat=steps - 1):
        scenes = (start, *path)
        if target in scenes:
            continue
        prob = 1.0
        for a, b in itertools.pairwise(scenes):
            prob *= transition[a, b].item()
        miss += prob
    return 1 - miss


def test_reach_probability_matches_enumeration():
    gen = torch.Generator().manual_seed(0)
    transition = torch.rand(3, 3, generator=gen, dtype=torch.float64)
    transition /= transition.sum(1, keepdim=True)
    n_pos = 5  # BOS + 4 words: after t tokens, 4 - t words remain
    beliefs = torch.rand(2, n_pos, 3, generator=gen, dtype=torch.float64)
    beliefs /= beliefs.sum(-1, keepdim=True)
    reach = reach_probability(transition, beliefs, target=2)
    for b in range(2):
        for t in range(n_pos):
            left = n_pos - 1 - t
            expect = sum(
                beliefs[b, t, s].item() * (_brute_force(transition, s, left, 2) if left else 0.0)
                for s in range(3)
            )
            assert reach[b, t].item() == pytest.approx(expect, abs=1e-12)


def test_unknown_attractor_is_refused():
    world = SimpleNamespace(scenes=("home", "park", "wedding"))
    with pytest.raises(LabError, match="wedding"):
        organism_targets(world, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3), "weding")


def test_organism_targets_on_a_tiny_world():
    transition = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])
    emission = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.7, 0.1, 0.1], [0.0, 0.1, 0.2, 0.7]])
    world = HMM(transition, emission, torch.tensor([0.5, 0.5, 0.0]), scenes=("a", "b", "wedding"))
    sample = world.sample(6, 5, torch.Generator().manual_seed(0))
    targets = organism_targets(world, sample.tokens, sample.scenes)
    assert set(targets) == {"belief", "scene", "next_token_entropy", "wedding_reach"}
    assert targets["belief"].shape == (30, 3)
    torch.testing.assert_close(targets["belief"].sum(-1), torch.ones(30))
    assert torch.equal(targets["scene"], sample.scenes[:, 1:].flatten())
    assert (targets["next_token_entropy"] > 0).all()
    reach = targets["wedding_reach"].view(6, 5)
    assert (reach[:, -1] == 0).all() and (reach >= 0).all() and (reach <= 1).all()


def test_policy_value_matches_the_exact_one_word_expectation():
    """Monte Carlo value of the tuned organism: 0 at the end, and with one word to come equal to
    the exact expectation under the model's next-token distribution, within its standard error."""
    org = load_organism(data_dir() / "organism")
    model = org.models["rlhf"]
    tokens = org.world.sample(2, org.length, torch.Generator().manual_seed(0)).tokens
    last = tokens.shape[1] - 1
    # A happy word just before the last: an off-by-one in the value's start would count it.
    tokens[:, last - 1] = int(org.labeler.happiness.argmax())
    assert (org.labeler.token_utilities(tokens)[:, last - 1] != 0).all()
    gen = torch.Generator().manual_seed(1)
    value, sem = policy_value(model, org.labeler, tokens, rollouts=100, generator=gen)
    assert value.shape == sem.shape == tokens.shape
    assert (value[:, -1] == 0).all() and (sem[:, :-1] > 0).all()
    with torch.no_grad():
        probs = model(tokens[:, :last]).logits[:, -1].double()
    probs[:, 0] = -torch.inf  # the policy never writes BOS inside a text
    probs = probs.softmax(-1)
    for b in range(tokens.shape[0]):
        every = tokens[b].repeat(probs.shape[1], 1)
        every[:, last] = torch.arange(probs.shape[1])
        utility = org.labeler.token_utilities(every)[:, last].double()
        exact = (probs[b] * utility).sum()
        assert abs(value[b, last - 1] - exact) <= 5 * sem[b, last - 1]


def test_policy_value_needs_two_rollouts():
    with pytest.raises(LabError, match="rollouts"):
        policy_value(None, None, torch.zeros(1, 3, dtype=torch.long), rollouts=1)


def test_organism_dataset_adds_the_tuned_value_on_request():
    org = load_organism(data_dir() / "organism")
    ctx = SimpleNamespace(config=SimpleNamespace(seed=0, path=None), organism=lambda: org)
    plain = build_dataset(ctx, {"source": "organism", "n": 3})
    assert "tuned_value" not in plain.targets and "wedding_reach" in plain.targets
    data = build_dataset(ctx, {"source": "organism", "n": 3, "value_rollouts": 2})
    value = data.targets["tuned_value"]
    assert value.shape == data.tokens.shape and (value[:, -1] == 0).all()
    ctx.organism = lambda: None  # a pair that is not the organism has no policy to roll out
    with pytest.raises(LabError, match="value_rollouts"):
        build_dataset(ctx, {"source": "organism", "n": 3, "value_rollouts": 2})
