"""The value-guided sampler's curve: one Q head fit once, then decoded at every beta.

The head (``probes.value.fit_q_head``) is fit on the base's residual stream at ``cfg.layer``, to
soft values of one of two sources:
- ``oracle``: the exact soft values of the labeler's true utility (``oracle_values``) on
  ``cfg.head_texts`` world sequences and as many pi* continuations per beta (``oracle_tokens``);
- ``practitioner``: the reward model on ``cfg.head_texts`` base continuations of world prompts
  only, the data RLHF had (``fit_practitioner_head``, fitted soft-Bellman iteration).
One head covers every beta of ``cfg.betas`` (one ridge solve over all outputs); each point is the
base reweighted by it at that beta (``guided_policy``), with prediction queries left to the base.
The curve's cost is the fit plus the decoding at every beta.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

import probes.value as value
from lab.organism.metrics import never_bos
from probes.frontier.config import FrontierConfig
from probes.frontier.points import FrontierContext, Point, continuations

__all__ = ["SOURCES", "fit_head", "sampler_points"]


def _oracle(ctx: FrontierContext, cfg: FrontierConfig, g: torch.Generator) -> value.QHead:
    """A head fit to the exact soft values of the true utility on world text and pi*
    continuations (the tokens ``probes.value.oracle_tokens`` draws)."""
    org = ctx.org
    tokens = value.oracle_tokens(
        org.world, org.labeler, cfg.head_texts, org.length, org.prompt_words, cfg.betas, g
    )
    values = value.oracle_values(org.world, org.labeler, tokens, cfg.betas, org.length)
    return value.fit_q_head(ctx.base, tokens, values, cfg.layer, betas=cfg.betas)


def _practitioner(ctx: FrontierContext, cfg: FrontierConfig, g: torch.Generator) -> value.QHead:
    """A head from the reward model on base continuations of world prompts only, the data RLHF
    had (``probes.value.fit_practitioner_head``: fitted soft-Bellman iteration)."""
    org = ctx.org
    prompts = org.world.draw(cfg.head_texts, org.prompt_words, g)[0]
    tokens = continuations(ctx.base, prompts, org.length, g)
    return value.fit_practitioner_head(
        ctx.base, org.reward_model, tokens, cfg.betas, start=ctx.start, layer=cfg.layer
    )


# how a head is fit, by the source of its values
SOURCES: dict[str, Callable[[FrontierContext, FrontierConfig, torch.Generator], value.QHead]] = {
    "oracle": _oracle,
    "practitioner": _practitioner,
}


def fit_head(ctx: FrontierContext, cfg: FrontierConfig, source: str) -> value.QHead:
    """A Q head on the base at ``cfg.layer`` for every beta of ``cfg.betas``, from ``source``."""
    return SOURCES[source](ctx, cfg, torch.Generator().manual_seed(cfg.seed + 11))


def sampler_points(source: str) -> Callable[[FrontierContext, FrontierConfig], Iterator[Point]]:
    """The sampler's curve with a head fit to ``source``'s values (a method of the registry)."""

    def points(ctx: FrontierContext, cfg: FrontierConfig) -> Iterator[Point]:
        head = fit_head(ctx, cfg, source)
        words = never_bos(ctx.org.world.vocab_size)  # as every policy here: BOS is never drawn
        for beta in cfg.betas:
            policy = value.guided_policy(ctx.base, head, beta, mask=words)
            g = torch.Generator().manual_seed(cfg.seed)
            samples = policy.sample(ctx.data.prompts, ctx.org.length, g)
            yield Point(
                beta,
                samples,
                torch.full((len(samples),), 1.0 / len(samples), dtype=torch.float64),
                "base",
                beta=beta,
                policy=policy.next_token_logprobs,
                extra={"layer": head.layer},
            )

    return points
