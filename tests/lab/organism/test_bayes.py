import itertools
from dataclasses import replace

import pytest
import torch

from lab.errors import LabError
from lab.organism.bayes import PiStar
from lab.organism.story import story_labeler, story_world

LENGTH = 4


def _all_sequences(vocab: int, length: int) -> torch.Tensor:
    words = list(itertools.product(range(1, vocab), repeat=length))
    return torch.cat([torch.zeros(len(words), 1, dtype=torch.long), torch.tensor(words)], 1)


@pytest.mark.parametrize(("beta", "satiation"), [(0.3, None), (1.0, None), (5.0, None), (0.5, 2.0)])
def test_pi_star_matches_enumeration(tiny_world, tiny_labeler, beta, satiation):
    if satiation is not None:  # diminishing returns: the state also counts happy words
        tiny_labeler = replace(tiny_labeler, satiation=satiation, max_count=3)
    seqs = _all_sequences(tiny_world.vocab_size, LENGTH)
    log_p = tiny_world.log_likelihood(seqs)
    u = tiny_labeler.utility(seqs)
    log_joint = log_p + u / beta
    log_z = torch.logsumexp(log_joint, 0)
    brute = (log_joint - log_z).exp()
    pi = PiStar(tiny_world, tiny_labeler, beta, LENGTH)
    exact = pi.log_prob(seqs).exp()
    torch.testing.assert_close(exact, brute, rtol=0, atol=1e-9)
    assert abs(pi.objective() - beta * log_z.item()) < 1e-9
    # conditionals: prompts of one word
    for w in range(1, tiny_world.vocab_size):
        rows = seqs[:, 1] == w
        log_zw = torch.logsumexp(
            log_joint[rows]
            - log_p[rows]
            + tiny_world.log_likelihood(seqs[rows])
            - tiny_world.log_likelihood(seqs[rows][:, :2]),
            0,
        )
        got = pi.log_z(torch.tensor([[0, w]]))
        assert (
            abs(
                got.item()
                - (log_zw.item() - tiny_labeler.utility(seqs[rows][:1, :2]).item() / beta)
            )
            < 1e-9
        )


def test_satiation_by_hand(tiny_labeler):
    sated = replace(tiny_labeler, satiation=2.0, max_count=2)
    seq = torch.tensor([[0, 3, 3, 3, 3]])  # four happy words worth 0.7 x (1, 1/2, 0, 0)
    torch.testing.assert_close(
        sated.token_utilities(seq), torch.tensor([[0, 0.7, 0.35, 0, 0]], dtype=torch.float64)
    )


def test_tiny_labeler_sees_the_forbidden_move(tiny_labeler):
    # w1 is exclusive to s1, w0 to s0, s1 -> s0 is forbidden
    seq = torch.tensor([[0, 2, 3, 1, 3]])
    assert tiny_labeler.incoherent_moves(seq).tolist() == [[False, False, False, True, False]]
    assert tiny_labeler.utility(seq).item() == pytest.approx(0.7 * 2 - 3.0)


def test_identity_on_story_samples():
    world, labeler = story_world(), story_labeler()
    pi = PiStar(world, labeler, beta=0.5, length=12)
    g = torch.Generator().manual_seed(0)
    prompts = world.sample(64, 3, g).tokens
    tokens = pi.sample(prompts, g)
    assert tokens.shape == (64, 13)
    lhs = labeler.utility(tokens, start=4) - pi.beta * (
        pi.log_prob(tokens, start=4)
        - (world.log_likelihood(tokens) - world.log_likelihood(prompts))
    )
    torch.testing.assert_close(lhs, pi.beta * pi.log_z(prompts), rtol=0, atol=1e-9)
    probs = pi.next_token_logprobs(tokens[:, :-1]).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(64, 12, dtype=torch.float64))


def test_exact_sampling_frequencies(tiny_world, tiny_labeler):
    pi = PiStar(tiny_world, tiny_labeler, 1.0, 2)
    seqs = _all_sequences(tiny_world.vocab_size, 2)
    draws = pi.sample(torch.zeros(20_000, 1, dtype=torch.long), torch.Generator().manual_seed(3))
    freq = torch.stack([(draws == s).all(1).double().mean() for s in seqs])
    assert (freq - pi.log_prob(seqs).exp()).abs().max() < 0.015


def test_bad_beta_and_length(tiny_world, tiny_labeler):
    with pytest.raises(LabError, match="beta"):
        PiStar(tiny_world, tiny_labeler, 0.0, 3)
    pi = PiStar(tiny_world, tiny_labeler, 1.0, 3)
    with pytest.raises(LabError, match="covers 3 words"):
        pi.next_token_logprobs(
            torch.zeros(1, 6, dtype=torch.long) + torch.tensor([0, 1, 1, 1, 1, 1])
        )
