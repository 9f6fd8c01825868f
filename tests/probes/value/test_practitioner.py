"""Practitioner targets: fitted soft-Bellman iteration on base samples with a reward."""

import pytest
import torch

from lab.errors import LabError
from lab.organism.metrics import as_policy
from probes.value import fit_practitioner_head, fit_q_head, oracle_values, practitioner_values


@pytest.fixture(scope="module")
def samples(org):
    prompts = org.world.draw(256, org.prompt_words, torch.Generator().manual_seed(0))[0]
    return as_policy(org.pair.base).sample(prompts, org.length, torch.Generator().manual_seed(1))


def _utility(org):
    return lambda tokens, start: org.labeler.utility(tokens, start)


def test_values_at_the_drawn_tokens_of_the_continuation(org, samples):
    start = org.prompt_words + 1
    values, mask = practitioner_values(
        org.pair.base, org.reward_model, samples, (1.0,), start=start, iterations=2
    )
    assert values.shape == (256, org.length, 1, 57) and mask.shape == (256, org.length, 57)
    assert not mask[:, : start - 1].any() and (mask[:, start - 1 :].sum(-1) == 1).all()
    drawn = samples[:, start:]
    assert mask[:, start - 1 :].gather(-1, drawn[..., None]).all()
    assert torch.isfinite(values[:, :, 0][mask]).all() and values[:, :, 0][~mask].isnan().all()
    # the last word's target is the reward of the continuation minus that of all but it
    last = values[:, -1, 0].gather(-1, samples[:, -1:]).squeeze(-1)
    rm = org.reward_model
    expected = rm(samples, start) - rm(samples[:, :-1], start)
    torch.testing.assert_close(last, expected.double(), atol=1e-5, rtol=0)


def test_true_utility_as_reward_tracks_the_exact_soft_values(org, samples):
    """With the labeler's own utility as the reward, the soft-Bellman targets follow the exact
    Q* of the drawn tokens (the base is not the world, and the head is linear: not equal)."""
    start = org.prompt_words + 1
    values, mask = practitioner_values(org.pair.base, _utility(org), samples, (1.0,), start=start)
    exact = oracle_values(org.world, org.labeler, samples, (1.0,), org.length)
    got, truth = values[:, :, 0][mask], exact[:, :, 0][mask]
    assert torch.corrcoef(torch.stack([got, truth]))[0, 1] > 0.8


def test_head_from_values_equals_the_direct_fit(org, samples):
    start, opts = org.prompt_words + 1, {"start": org.prompt_words + 1, "iterations": 2}
    values, mask = practitioner_values(org.pair.base, _utility(org), samples, (1.0,), **opts)
    head = fit_q_head(org.pair.base, samples, values, 2, betas=(1.0,), mask=mask)
    same = fit_practitioner_head(org.pair.base, _utility(org), samples, (1.0,), **opts)
    torch.testing.assert_close(head.weight, same.weight, atol=1e-4, rtol=1e-4)
    assert same.bounds is not None and start == 8


def test_start_required_and_checked(org, samples):
    with pytest.raises(LabError, match="Pass start="):
        practitioner_values(org.pair.base, org.reward_model, samples, (1.0,))
    with pytest.raises(LabError, match=r"start must be in 1\.\.31"):
        practitioner_values(org.pair.base, org.reward_model, samples, (1.0,), start=40)
