"""The utility–KL frontier: every method of ``METHODS`` measured by one routine on the same prompts.

``frontier(org, cfg)`` returns one tidy row per point: the method, its knob (beta, n, step), true
utility, RM score, wedding reach, near-impossible-transition rate, KL to the base and to pi*
(with the beta used and how it was matched), the ECE of prediction queries and of the policy's
own next-token distributions, and the CPU seconds of the method's whole curve (``curve_cpu_s``,
measured here with ``time.process_time``, plus ``recorded_cpu_s``, a cost spent elsewhere: the
RLHF run's recorded training time). Write it with ``DataFrame.to_parquet``; plot it with
``probes.frontier.plots.plot_frontier``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.organism.evaluate import EvalConfig, EvalData, Organism
from probes.frontier.config import FrontierConfig, quick_frontier_config
from probes.frontier.methods import METHODS
from probes.frontier.points import FrontierContext, measure

__all__ = ["FrontierConfig", "frontier", "quick_frontier_config"]


def _check(cfg: FrontierConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise LabError(
            f"Unknown frontier method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}."
        )
    if any(b <= 0 for b in cfg.betas + cfg.match_grid):
        raise LabError(f"Every beta must be > 0; got betas={cfg.betas}.")
    if not cfg.best_of or min(cfg.best_of) < 1 or max(cfg.best_of) > cfg.pool:
        raise LabError(
            f"best_of must lie in 1..pool ({cfg.pool}); got {min(cfg.best_of, default=None)}.."
            f"{max(cfg.best_of, default=None)}. Raise pool or lower n."
        )


def frontier(
    org: Organism, cfg: FrontierConfig | None = None, *, progress: bool = True
) -> pd.DataFrame:
    """Measure every method of ``cfg.methods`` on the same world prompts (one row per point)."""
    cfg = cfg or FrontierConfig()
    _check(cfg)
    if org.reward_model is None or "base" not in org.models:
        raise LabError(
            "The frontier needs the organism's base and reward model: lab.organism.load()."
        )
    data_cfg = replace(EvalConfig(), texts=cfg.texts, prompts=cfg.prompts, seed=cfg.seed)
    data = EvalData.draw(org.world, org.length, org.prompt_words, data_cfg)
    ctx = FrontierContext(org, data, cfg.match_grid)
    rows: list[dict[str, Any]] = []
    bar = tqdm(cfg.methods or tuple(METHODS), desc="frontier", disable=not progress)
    for name in bar:
        method = METHODS[name]
        points, cpu, mine = method.points(ctx, cfg), 0.0, []
        while True:
            t0 = time.process_time()
            point = next(points, None)
            cpu += time.process_time() - t0  # the method's own work, not the measurement
            if point is None:
                break
            bar.set_postfix_str(f"{name} {method.knob}={point.knob:g}")
            mine.append({"method": name, "label": method.label, "knob_name": method.knob})
            mine[-1] |= measure(ctx, point)
        cpu += ctx.take_charges()
        recorded = method.recorded_cpu_s(ctx)
        for row in mine:
            row |= {"points": len(mine), "curve_cpu_s": cpu, "recorded_cpu_s": recorded}
        rows += mine
    return pd.DataFrame(rows)
