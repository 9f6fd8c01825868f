"""The frontier's methods, by name: each turns the shared context into its curve of points.

- ``pi_star``: the exact optimum of the true utility, pi* ∝ p_world exp(U / beta), across beta.
- ``pi_star_rm``: pi* of the reward model, pi_RM ∝ p_base exp(RM / beta). The RM is a neural
  network over whole continuations, so pi_RM has no closed form: it is estimated by
  self-normalised importance sampling of a pool of base continuations per prompt (weights
  ∝ exp(RM / beta) within each prompt). Its KL to the base is the SNIS estimate
  E_w[RM / beta] - log mean exp(RM / beta), which cannot exceed log(pool) per sequence.
- ``best_of_n``: the continuation of highest RM score among the first n of the same pool
  (Gao et al.). Its KL to the base is the analytic value log n - (n - 1) / n per sequence (exact
  for distinct rewards, an upper bound otherwise: Beirami et al.), divided by the continuation's
  tokens.
- ``sampler_oracle`` / ``sampler_practitioner``: the value-guided sampler of ``probes.value``
  (the base reweighted by a linear Q head, beta turned at decode time), with the head fit on
  exact soft values of the true utility (oracle) or on the reward model and base samples only
  (practitioner); prediction queries go to the untouched base.
- ``rlhf``: the RLHF policy at every logged step of its training (``checkpoints``); its cost is
  the training run's recorded time (the card), not measured here.

A method's curve costs the CPU seconds of its own code (sampling, fitting), measured by
``frontier``; shared pieces (the pool) are charged in full to each method using them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import GPT2LMHeadModel

from lab.models.outputs import model_logprobs
from lab.organism.bayes import PiStar
from probes.frontier.checkpoints import has_checkpoints, rlhf_checkpoints
from probes.frontier.config import FrontierConfig
from probes.frontier.points import FrontierContext, Point, continuations
from probes.frontier.sampler import sampler_points

__all__ = ["METHODS", "Method"]


@dataclass(frozen=True)
class Method:
    """One method of the frontier: how it makes its points, and what its curve costs."""

    points: Callable[[FrontierContext, FrontierConfig], Iterator[Point]]  # its curve
    knob: str  # what the points' ``knob`` is (beta, n, step)
    label: str  # legend label
    recorded_cpu_s: Callable[[FrontierContext], float] = lambda ctx: 0.0  # cost spent elsewhere


def _uniform(n: int) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=torch.float64)


def _gen(cfg: FrontierConfig) -> torch.Generator:
    """The same random stream for every point (common random numbers: smoother curves)."""
    return torch.Generator().manual_seed(cfg.seed)


def _pi_star(ctx: FrontierContext, cfg: FrontierConfig) -> Iterator[Point]:
    org = ctx.org
    for beta in cfg.betas:
        star = PiStar(org.world, org.labeler, beta, org.length)
        samples = star.sample(ctx.data.prompts, _gen(cfg))
        yield Point(
            beta,
            samples,
            _uniform(len(samples)),
            "world",
            beta=beta,
            policy=star.next_token_logprobs,
        )


def _pool(ctx: FrontierContext, cfg: FrontierConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool, rewards): ``cfg.pool`` base continuations per prompt, prompt-major, and their RM
    scores as (prompt, pool)."""

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        prompts, g = ctx.data.prompts.repeat_interleave(cfg.pool, 0), _gen(cfg)
        parts = [continuations(ctx.base, p, ctx.org.length, g) for p in prompts.split(4096)]
        pool = torch.cat(parts)
        return pool, ctx.reward(pool).view(-1, cfg.pool)

    return ctx.cached(("pool", cfg.pool, cfg.seed), make)


def _pi_star_rm(ctx: FrontierContext, cfg: FrontierConfig) -> Iterator[Point]:
    pool, reward = _pool(ctx, cfg)
    n_prompts, n_tokens = reward.shape[0], ctx.org.length + 1 - ctx.start
    for beta in cfg.betas:
        scaled = reward / beta
        w = scaled.softmax(-1)  # (prompt, pool): SNIS weights within each prompt
        log_z = scaled.logsumexp(-1) - math.log(cfg.pool)
        kl_seq = (w * scaled).sum(-1) - log_z
        yield Point(
            beta,
            pool,
            (w / n_prompts).reshape(-1),
            "base",
            beta=beta,
            kl_to_base=kl_seq.mean().item() / n_tokens,
            kl_how=f"SNIS estimate, {cfg.pool} base samples per prompt",
        )


def _best_of_n(ctx: FrontierContext, cfg: FrontierConfig) -> Iterator[Point]:
    pool, reward = _pool(ctx, cfg)
    n_prompts, n_tokens = reward.shape[0], ctx.org.length + 1 - ctx.start
    for n in cfg.best_of:
        best = reward[:, :n].argmax(-1)
        weights = torch.zeros_like(reward)
        weights[torch.arange(n_prompts), best] = 1.0 / n_prompts
        yield Point(
            n,
            pool,
            weights.reshape(-1),
            "base",
            kl_to_base=(math.log(n) - (n - 1) / n) / n_tokens,
            kl_how="analytic log n - (n-1)/n per sequence",
        )


def _policy(model: GPT2LMHeadModel) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: model_logprobs(model, t)


def _rlhf(ctx: FrontierContext, cfg: FrontierConfig) -> Iterator[Point]:
    org, beta = ctx.org, ctx.org.beta
    if cfg.replay_rlhf or has_checkpoints(org):
        checkpoints, source = rlhf_checkpoints(org, train=True), "replayed run, every logged step"
    else:
        peak = org.cards["peak"].get("peak_step", math.nan)
        final = org.cards["rlhf"]["config"]["rlhf"]["steps"]
        checkpoints = [(0, ctx.base), (peak, org.models["peak"]), (final, org.models["rlhf"])]
        source = "shipped checkpoints only (base, peak, final)"
    for step, model in checkpoints:
        samples = continuations(model, ctx.data.prompts, org.length, _gen(cfg))
        policy = _policy(model)
        yield Point(
            step,
            samples,
            _uniform(len(samples)),
            "base" if step == 0 else f"rlhf step {step}",
            predict=policy,
            beta=beta,
            policy=policy,
            extra={"source": source},
        )


def _rlhf_recorded(ctx: FrontierContext) -> float:
    """The shipped RLHF run's wall time on one thread (the card): one training run."""
    return float(ctx.org.cards["rlhf"]["wall_time_s"]["rlhf"])


METHODS: dict[str, Method] = {
    "pi_star": Method(_pi_star, "beta", "pi* of the true utility (exact)"),
    "pi_star_rm": Method(_pi_star_rm, "beta", "pi* of the reward model (SNIS estimate)"),
    "best_of_n": Method(_best_of_n, "n", "best-of-n against the RM"),
    "sampler_oracle": Method(sampler_points("oracle"), "beta", "value-guided sampler, oracle Q"),
    "sampler_practitioner": Method(
        sampler_points("practitioner"), "beta", "value-guided sampler, practitioner Q"
    ),
    "rlhf": Method(_rlhf, "step", "RLHF checkpoints", _rlhf_recorded),
}
