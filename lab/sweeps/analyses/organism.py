"""Sweep analyses of the shipped organism against its world's exact truth: the organism's metrics
table, reliability bins and the utility–KL frontier of every steering method (probes.frontier).
Each needs the organism pair (``SweepContext.required_organism``);
``lab.sweeps.analyses.registry`` registers them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import torch

from lab.calibration.reliability import reliability_bins
from lab.models.outputs import model_logprobs
from lab.organism.evaluate import EvalConfig, evaluate_organism
from lab.sweeps.context import SweepContext
from probes.frontier import FrontierConfig, frontier, quick_frontier_config

__all__ = [
    "FrontierParams",
    "OrganismEvalParams",
    "ReliabilityParams",
    "frontier_job",
    "organism_eval_job",
    "reliability_job",
]


@dataclass(frozen=True)
class OrganismEvalParams:
    """The organism's metrics for world, base, RLHF, pi* and the reward model (lab.organism)."""

    texts: int = 256  # held-out world texts for the prediction metrics
    prompts: int = 256  # world prompts for the generation metrics


def organism_eval_job(ctx: SweepContext, p: OrganismEvalParams) -> pd.DataFrame:
    """One row per model and numeric metric (lab.organism.evaluate.evaluate_organism)."""
    cfg = EvalConfig(texts=p.texts, prompts=p.prompts, seed=EvalConfig.seed + ctx.config.seed)
    rows = evaluate_organism(ctx.required_organism(), cfg)
    return pd.DataFrame(
        [
            {"model": m, "metric": k, "value": float(v)}
            for m, d in rows.items()
            for k, v in d.items()
            if isinstance(v, int | float)
        ]
    )


@dataclass(frozen=True)
class ReliabilityParams:
    """Reliability bins (top-1 confidence vs expected accuracy under the world) per model."""

    texts: int = 256  # world texts
    bins: int = 15  # equal-width confidence bins


def reliability_job(ctx: SweepContext, p: ReliabilityParams) -> pd.DataFrame:
    """Bins of base, tuned and pi*: the top token's probability vs the world's probability of it."""
    org = ctx.required_organism()
    gen = torch.Generator().manual_seed(ctx.config.seed)
    texts = org.world.draw(p.texts, org.length, gen)[0]
    truth = org.world.forward(texts).next_token_logprobs[:, 1:-1].exp()
    logprobs = {
        "base": model_logprobs(ctx.pair().base, texts)[:, 1:-1],
        "tuned": model_logprobs(ctx.pair().tuned, texts)[:, 1:-1],
        "pi_star": org.pi_star().next_token_logprobs(texts)[:, 1:-1],
    }
    parts = []
    for name, lp in logprobs.items():
        conf, top = lp.exp().max(-1)
        acc = truth.gather(-1, top[..., None])[..., 0]
        parts.append(reliability_bins(conf, acc, name, p.bins))
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class FrontierParams:
    """The utility–KL frontier of every method on the same world prompts (probes.frontier)."""

    quick: bool = True  # the quick budget; False: the full one (replays RLHF once, then cached)
    methods: list[str] | None = None  # names in probes.frontier.METHODS (default: every one)
    prompts: int | None = None  # world prompts per point (default: the budget's)


def frontier_job(ctx: SweepContext, p: FrontierParams) -> pd.DataFrame:
    """One row per point of every method's curve (probes.frontier.frontier)."""
    cfg = quick_frontier_config() if p.quick else FrontierConfig()
    cfg = replace(
        cfg,
        methods=tuple(p.methods or ()),
        prompts=p.prompts or cfg.prompts,
        seed=cfg.seed + ctx.config.seed,
    )
    return frontier(ctx.required_organism(), cfg, progress=False)
