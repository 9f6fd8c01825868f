"""The KL objective of fit_q_head: a head whose sampler is closer to pi* than the ridge head's."""

import pytest
import torch

from lab.errors import LabError
from lab.models.outputs import kl_per_token
from lab.organism import PiStar
from probes.value import fit_q_head, guided_logprobs, oracle_tokens


def _star(org, tokens, betas):
    return torch.stack(
        [PiStar(org.world, org.labeler, b, org.length).next_token_logprobs(tokens) for b in betas],
        2,
    )


def test_kl_fit_lowers_held_out_kl_to_pi_star(org, oracle_data, oracle_head, betas):
    tokens, values = oracle_data
    head = fit_q_head(
        org.pair.base,
        tokens,
        values,
        2,
        betas=betas,
        objective="kl",
        target_logprobs=_star(org, tokens, betas),
    )
    assert torch.equal(head.bias.isinf(), oracle_head.bias.isinf())  # BOS stays excluded
    g = torch.Generator().manual_seed(1)
    test = oracle_tokens(org.world, org.labeler, 16, org.length, org.prompt_words, betas, g)
    prefixes, start = test[:, :-1], org.prompt_words
    for beta, factor in ((0.3, 0.7), (1.0, 0.95)):
        star = PiStar(org.world, org.labeler, beta, org.length).next_token_logprobs(prefixes)
        kls = [
            kl_per_token(
                guided_logprobs(org.pair.base, h, prefixes, beta)[:, start:], star[:, start:]
            )
            for h in (oracle_head, head)
        ]
        assert kls[1] < factor * kls[0], (beta, kls)


def test_kl_objective_needs_pi_star_and_dense_targets(org, oracle_data, betas):
    tokens, values = oracle_data
    with pytest.raises(LabError, match="target_logprobs"):
        fit_q_head(org.pair.base, tokens, values, 2, betas=betas, objective="kl")
    with pytest.raises(LabError, match="Unknown Q-head objective"):
        fit_q_head(org.pair.base, tokens, values, 2, betas=betas, objective="mse")
