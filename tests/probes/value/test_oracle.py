"""Oracle targets: Q* from pi*'s recursion, checked by enumeration and against pi* itself."""

import itertools
import math

import pytest
import torch

from lab.errors import LabError
from lab.organism import PiStar
from lab.organism.labeler import Labeler
from lab.organism.world import HMM
from probes.value import oracle_tokens, oracle_values


def _tiny() -> tuple[HMM, Labeler]:
    world = HMM(
        transition=torch.tensor([[0.9, 0.1], [0.0005, 0.9995]]),
        emission=torch.tensor([[0.6, 0.001, 0.399], [0.002, 0.5, 0.498]]),
        initial=torch.tensor([0.7, 0.3]),
    )
    labeler = Labeler.for_world(world, {"w2": 0.7}, penalty=3.0, exclusive_ratio=100)
    return world, labeler


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_soft_values_match_enumeration(beta):
    """Q*(h, x) = r(h, x) + beta log E_world[exp(U after x / beta) | h, x], every future listed."""
    world, labeler = _tiny()
    length, prefix = 4, torch.tensor([[0, 1]])
    q = oracle_values(world, labeler, prefix, [beta], length)[0, 1, 0]  # after one word
    for x in range(1, world.vocab_size):
        futures = list(itertools.product(range(1, world.vocab_size), repeat=length - 2))
        seqs = torch.tensor([[0, 1, x, *f] for f in futures])
        log_p = world.log_likelihood(seqs) - world.log_likelihood(seqs[:, :3])
        u_future = labeler.utility(seqs, start=3)
        r = labeler.token_utilities(seqs[:1])[0, 2]
        expected = r + beta * torch.logsumexp(log_p + u_future / beta, 0)
        assert math.isclose(float(q[x]), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    assert q[0] == -math.inf  # BOS is never emitted


def test_world_reweighted_by_q_star_is_pi_star(org):
    tokens = org.world.draw(16, org.length, torch.Generator().manual_seed(1))[0]
    q = oracle_values(org.world, org.labeler, tokens, [0.2], org.length)[:, :, 0]
    log_world = org.world.forward(tokens).next_token_logprobs[:, : org.length]
    rebuilt = (log_world + q / 0.2).log_softmax(-1)[..., 1:]
    star = PiStar(org.world, org.labeler, 0.2, org.length).next_token_logprobs(tokens)[..., 1:]
    torch.testing.assert_close(rebuilt, star, rtol=0, atol=1e-9)


def test_oracle_tokens_mix_world_and_pi_star(org):
    g = torch.Generator().manual_seed(2)
    tokens = oracle_tokens(org.world, org.labeler, 8, org.length, org.prompt_words, [0.3, 1.0], g)
    assert tokens.shape == (24, org.length + 1)
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] > 0).all()


def test_bad_beta_refused(org):
    with pytest.raises(LabError, match="beta must be"):
        oracle_values(org.world, org.labeler, torch.zeros(1, 2, dtype=torch.long), [0.0], 31)
