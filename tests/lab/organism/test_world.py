import itertools
import math

import pytest
import torch

from lab.errors import LabError
from lab.organism.story import story_world
from lab.organism.world import HMM
from tests.lab.organism.conftest import build_tiny_world


def _brute_force_logprob(world: HMM, words: list[int]) -> float:
    """log P(words) by summing over every hidden path."""
    total = 0.0
    for path in itertools.product(range(world.n_scenes), repeat=len(words)):
        p = world.initial[path[0]].item()
        for t, (z, w) in enumerate(zip(path, words, strict=True)):
            if t > 0:
                p *= world.transition[path[t - 1], z].item()
            p *= world.emission[z, w - 1].item()
        total += p
    return math.log(total)


def _all_sequences(world: HMM, length: int) -> torch.Tensor:
    words = list(itertools.product(range(1, world.vocab_size), repeat=length))
    return torch.cat([torch.zeros(len(words), 1, dtype=torch.long), torch.tensor(words)], 1)


def test_forward_matches_brute_force(tiny_world):
    seqs = _all_sequences(tiny_world, 4)
    fwd = tiny_world.forward(seqs)
    brute = [_brute_force_logprob(tiny_world, s[1:].tolist()) for s in seqs]
    brute = torch.tensor(brute, dtype=torch.float64)
    torch.testing.assert_close(fwd.log_likelihood, brute, rtol=0, atol=1e-12)
    assert abs(fwd.log_likelihood.exp().sum().item() - 1) < 1e-12
    # next-token distribution = ratio of prefix probabilities
    for i, s in enumerate(seqs[:20]):
        for t in range(1, 4):
            words = s[1:].tolist()
            ratio = _brute_force_logprob(tiny_world, words[: t + 1])
            ratio -= _brute_force_logprob(tiny_world, words[:t])
            assert abs(fwd.next_token_logprobs[i, t, s[t + 1]].item() - ratio) < 1e-12


def test_belief_state_matches_brute_force(tiny_world):
    seq = torch.tensor([[0, 1, 3, 2]])
    fwd = tiny_world.forward(seq)
    # P(z_3 | x_1..x_3) by enumeration of paths
    weights = torch.zeros(2, dtype=torch.float64)
    for path in itertools.product(range(2), repeat=3):
        p = tiny_world.initial[path[0]]
        for t, z in enumerate(path):
            if t:
                p = p * tiny_world.transition[path[t - 1], z]
            p = p * tiny_world.emission[z, seq[0, t + 1] - 1]
        weights[path[-1]] += p
    filtered = weights / weights.sum()
    torch.testing.assert_close(fwd.filtered[0, 3], filtered, rtol=0, atol=1e-12)
    torch.testing.assert_close(fwd.beliefs[0, 3], filtered @ tiny_world.transition)
    probs = fwd.next_token_logprobs.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 4, dtype=torch.float64))


def test_sampling_frequencies_match_likelihood(tiny_world):
    g = torch.Generator().manual_seed(1)
    sample = tiny_world.sample(20_000, 2, g)
    seqs = _all_sequences(tiny_world, 2)
    expected = tiny_world.log_likelihood(seqs).exp()
    counts = torch.stack([(sample.tokens == s).all(1).sum() for s in seqs]).double() / 20_000
    assert (counts - expected).abs().max() < 0.015
    assert (sample.scenes[:, 0] == -1).all()


def test_continuation_keeps_prompt(tiny_world):
    prompts = torch.tensor([[0, 1, 1], [0, 2, 3]])
    out = tiny_world.sample(2, 5, torch.Generator().manual_seed(0), prompts=prompts)
    assert torch.equal(out.tokens[:, :3], prompts)
    assert out.tokens.shape == (2, 6)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("transition", torch.tensor([[0.5, 0.4], [0.5, 0.5]]), "sum to 1"),
        ("transition", torch.tensor([[1.5, -0.5], [0.5, 0.5]]), "negative"),
        ("transition", torch.ones(2, 3) / 3, "square"),
        ("emission", torch.ones(3, 3) / 3, "emission must be"),
        ("initial", torch.tensor([1.0]), "initial must have shape"),
        ("initial", torch.tensor([0.2, 0.2]), "sum to 1"),
    ],
)
def test_invalid_hmm_is_refused(field, value, match):
    with pytest.raises(LabError, match=match):
        build_tiny_world(**{field: value})


def test_bad_tokens_are_refused(tiny_world):
    with pytest.raises(LabError, match="BOS"):
        tiny_world.forward(torch.tensor([[1, 2]]))
    with pytest.raises(LabError, match="word ids"):
        tiny_world.forward(torch.tensor([[0, 9]]))


def test_story_world_shape():
    world = story_world()
    assert world.n_scenes == 8 and 50 <= world.vocab_size - 1 <= 60
    assert (world.transition > 0).all() and (world.emission > 0).all()
    wedding = world.scene_index("wedding")
    assert 0.01 < world.stationary()[wedding].item() < 0.04
    # entered (above the floor) from exactly two scenes
    assert (world.transition[:, wedding] > 1e-3).sum().item() == 3  # two scenes and itself
    restored = HMM.from_dict(world.to_dict())
    torch.testing.assert_close(restored.transition, world.transition, rtol=0, atol=1e-15)
