"""The value-guided sampler: p_base exp(Q / beta) through the one sampler, top-k, any pair."""

import warnings

import pytest
import torch

from lab.errors import LabError
from lab.models.outputs import kl_per_token, model_logprobs
from lab.organism import PiStar
from lab.organism.metrics import without_bos
from probes.value import (
    TopKMassWarning,
    base_samples,
    fit_practitioner_head,
    guided_logprobs,
    guided_policy,
    logprobs_and_residual,
    word_reward,
)


def test_reweights_the_untouched_base(org, oracle_head):
    base = org.pair.base
    tokens = org.world.draw(4, 12, torch.Generator().manual_seed(0))[0]
    got = guided_logprobs(base, oracle_head, tokens, 1.0)
    logp, resid = logprobs_and_residual(base, tokens, 2)
    expected = (without_bos(logp) + oracle_head.at(resid, 1.0).double() / 1.0).log_softmax(-1)
    torch.testing.assert_close(got, expected)
    assert (got[..., 0] == -torch.inf).all()  # BOS is never drawn
    # every token as a candidate is the exact sampler
    torch.testing.assert_close(guided_logprobs(base, oracle_head, tokens, 1.0, top_k=57), got)


def test_top_k_warns_with_the_mass_left_out(org, oracle_head):
    base = org.pair.base
    tokens = org.world.draw(4, 12, torch.Generator().manual_seed(0))[0]
    with pytest.warns(TopKMassWarning, match=r"top_k=3 leaves out up to 0\.\d+ of the base's"):
        got = guided_logprobs(base, oracle_head, tokens, 1.0, top_k=3)
    assert ((got > -torch.inf).sum(-1) == 3).all()
    top = model_logprobs(base, tokens).topk(3, -1).indices
    assert (got.gather(-1, top) > -torch.inf).all()  # the base's three most likely tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning under a looser stated threshold
        guided_logprobs(base, oracle_head, tokens, 1.0, top_k=3, mass_warning=1.0)
    with pytest.raises(LabError, match="top_k must be >= 1"):
        guided_logprobs(base, oracle_head, tokens, 1.0, top_k=0)


def test_oracle_sampler_close_to_pi_star(org, oracle_head):
    """At beta = 1 the oracle head's sampler is within 0.05 nats/token of pi* (issue 17)."""
    policy = guided_policy(org.pair.base, oracle_head, 1.0)
    prompts = org.world.draw(64, org.prompt_words, torch.Generator().manual_seed(4))[0]
    samples = policy.sample(prompts, org.length, torch.Generator().manual_seed(5))
    assert samples.shape == (64, org.length + 1) and (samples[:, 1:] > 0).all()
    start = org.prompt_words + 1
    own = policy.next_token_logprobs(samples[:, :-1])[:, start - 1 :]
    star = PiStar(org.world, org.labeler, 1.0, org.length).next_token_logprobs(samples[:, :-1])
    assert kl_per_token(own, star[:, start - 1 :]) < 0.05


def test_bad_beta_and_foreign_head_refused(org, oracle_head):
    with pytest.raises(LabError, match="beta must be a finite number > 0"):
        guided_policy(org.pair.base, oracle_head, 0.0)
    with pytest.raises(LabError, match="outside the Q head's grid"):
        guided_policy(org.pair.base, oracle_head, 10.0)
    with pytest.raises(LabError, match="This Q head was fitted on model"):
        guided_policy(org.pair.tuned, oracle_head, 1.0)
    with pytest.raises(LabError, match="reads layer 2; got layer 1"):
        guided_policy(org.pair.base, oracle_head, 1.0, layer=1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_any_pair_steered_by_a_reward_function(loaded_pair, arch):
    """A tiny real-architecture model, a toy reward (tokens 4..40 score one each): the guided
    sampler's continuations score more than the base's, from a practitioner head."""
    model = loaded_pair(arch).base
    reward = word_reward(list(range(4, 41)))
    prompts = torch.zeros(256, 2, dtype=torch.long)
    prompts[:, 1] = 100
    g = torch.Generator().manual_seed(0)
    plain = base_samples(model, prompts, 6, g)
    head = fit_practitioner_head(model, reward, plain, (0.3, 1.0), start=2)
    policy = guided_policy(model, head, 0.3)
    steered = policy.sample(prompts[:64], 7, torch.Generator().manual_seed(1))
    assert steered.shape == (64, 8)
    assert reward(steered, 2).mean() > reward(plain, 2).mean() + 1.0
