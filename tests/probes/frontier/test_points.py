"""A frontier point's measurement against the organism's own metrics and exact pi*."""

import pytest
import torch

from lab.models.outputs import model_logprobs
from lab.organism import EvalConfig, EvalData, PiStar, generation_metrics, load_organism
from probes.frontier import FrontierContext, Point, measure
from probes.frontier.points import continuations

KEYS = ("true_utility", "rm_score", "wedding_reach", "impossible_transition_rate")


@pytest.fixture(scope="module")
def ctx():
    org = load_organism("data/organism")
    data = EvalData.draw(org.world, org.length, org.prompt_words, EvalConfig(texts=64, prompts=256))
    return FrontierContext(org, data, (0.03, 0.1, 0.3, 1.0, 50.0))


@pytest.fixture(scope="module")
def base_samples(ctx):
    g = torch.Generator().manual_seed(0)
    return continuations(ctx.base, ctx.data.prompts, ctx.org.length, g)


def _uniform(n):
    return torch.full((n,), 1.0 / n, dtype=torch.float64)


def test_a_policy_point_measures_as_generation_metrics(ctx, base_samples):
    org, base = ctx.org, ctx.base
    policy = lambda t: model_logprobs(base, t)  # noqa: E731
    row = measure(ctx, Point(0, base_samples, _uniform(256), "base", beta=0.1, policy=policy))
    star = PiStar(org.world, org.labeler, 0.1, org.length)
    lp = model_logprobs(base, base_samples[:, :-1])
    rm = org.reward_model
    want = generation_metrics(
        base_samples, ctx.start, org.world, org.labeler, logprobs=lp, base_logprobs=lp,
        pi_star=star, reward_model=lambda t, s: rm(t, s),
    )  # fmt: skip
    for key in (*KEYS, "kl_to_base", "kl_to_pi_star"):
        assert row[key] == pytest.approx(want[key], abs=1e-6), key
    assert row["pi_star_beta"] == 0.1 and row["pi_star_match"] == "own beta"
    assert row["ece"] < 0.01 and row["ece"] == pytest.approx(row["policy_ece"])  # the base


def test_a_weighted_point_estimates_kl_to_pi_star_by_its_sequences(ctx, base_samples):
    """The base as a weighted sample set (KL to the base 0, stated): its sequence-level KL to pi*
    agrees with the exact per-position one within Monte Carlo noise."""
    policy = lambda t: model_logprobs(ctx.base, t)  # noqa: E731
    exact = measure(ctx, Point(0, base_samples, _uniform(256), "base", beta=0.3, policy=policy))
    weighted = measure(
        ctx, Point(0, base_samples, _uniform(256), "base", beta=0.3, kl_to_base=0.0, kl_how="given")
    )
    assert weighted["kl_to_base"] == 0.0 and weighted["kl_how"] == "given"
    assert exact["kl_to_pi_star"] > 0.05
    assert weighted["kl_to_pi_star"] == pytest.approx(exact["kl_to_pi_star"], rel=0.25)
    for key in KEYS:
        assert weighted[key] == pytest.approx(exact[key])


def test_zero_weights_leave_samples_out(ctx, base_samples):
    utility = ctx.org.labeler.utility(base_samples, ctx.start)
    best = torch.zeros(256, dtype=torch.float64)
    best[utility.argmax()] = 1.0
    row = measure(ctx, Point(1, base_samples, best, "base", kl_to_base=0.1))
    assert row["true_utility"] == pytest.approx(utility.max().item())
    assert row["pi_star_match"] == "matched KL"


def test_match_beta_inverts_pi_stars_kl(ctx):
    star = ctx.pi_star(0.3)
    samples = star.sample(ctx.data.prompts, torch.Generator().manual_seed(5))
    row = measure(ctx, Point(0.3, samples, _uniform(256), "world", policy=star.next_token_logprobs))
    assert row["pi_star_match"] == "matched KL"
    assert row["pi_star_beta"] == pytest.approx(0.3, rel=0.3)
    assert row["kl_to_pi_star"] < 0.02
