"""What a frontier measures, and on how much data (``FrontierConfig``); ``--quick``'s budget."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrontierConfig", "quick_frontier_config"]

_MATCH = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 50.0)
_BETAS = (0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0)


@dataclass(frozen=True)
class FrontierConfig:
    """What the frontier measures, and on how much data."""

    methods: tuple[str, ...] = ()  # names in probes.frontier.methods.METHODS (empty: all)
    betas: tuple[float, ...] = _BETAS  # KL coefficients of pi*, pi* of the RM and the sampler
    best_of: tuple[int, ...] = tuple(range(1, 65))  # n of best-of-n
    pool: int = 64  # base continuations per prompt for best-of-n and pi* of the RM
    texts: int = 1024  # held-out world sequences for ECE
    prompts: int = 512  # world prompts, one continuation each per point
    seed: int = 1_000_003  # seed of the data (EvalConfig's) and of every point's draws
    layer: int = 2  # residual layer of the sampler's Q head (the base's output layer)
    head_texts: int = 1024  # sequences per source the Q head is fit on (see .sampler)
    replay_rlhf: bool = True  # replay the RLHF run for its checkpoints when not cached
    match_grid: tuple[float, ...] = _MATCH  # betas of pi* for the matched-KL beta


def quick_frontier_config() -> FrontierConfig:
    """Fewer prompts, betas and n (``lab organism frontier --quick``); RLHF from the cache or the
    shipped checkpoints, never retrained."""
    return FrontierConfig(
        betas=(0.05, 0.1, 0.3, 1.0),
        best_of=(1, 2, 4, 8, 16, 32, 64),
        texts=256,
        prompts=128,
        head_texts=256,
        replay_rlhf=False,
        match_grid=(0.01, 0.03, 0.05, 0.1, 0.2, 0.5, 1, 5, 50),
    )
