"""The utility–KL frontier of issue 17: every way of steering the organism's base toward the
labeler, measured against the exact optimum on the same world prompts.

    org = lab.organism.load_organism("data/organism")    # or lab.organism.load()
    table = frontier(org, quick_frontier_config())      # one row per point of every method
    plot_frontier(table)                                # utility, RM score, ECE against KL
    calibration_contrast(table)                         # prediction ECE: kept base vs RLHF
    compare_with_rlhf(table)                            # practitioner sampler vs RLHF
    curve_costs(table)                                  # CPU seconds of each whole curve

Modules: ``config`` (what is measured), ``frontier`` (the one routine), ``methods`` (the
registry of methods), ``points`` (a point and how it is measured), ``sampler`` (the
value-guided sampler's curve), ``checkpoints`` (the RLHF run replayed with snapshots),
``summary`` and ``plots`` (readings of the table).
"""

from probes.frontier.checkpoints import has_checkpoints, rlhf_checkpoints
from probes.frontier.config import FrontierConfig, quick_frontier_config
from probes.frontier.frontier import frontier
from probes.frontier.methods import METHODS, Method
from probes.frontier.plots import plot_frontier
from probes.frontier.points import FrontierContext, Point, measure
from probes.frontier.summary import calibration_contrast, compare_with_rlhf, curve_costs

__all__ = [
    "METHODS",
    "FrontierConfig",
    "FrontierContext",
    "Method",
    "Point",
    "calibration_contrast",
    "compare_with_rlhf",
    "curve_costs",
    "frontier",
    "has_checkpoints",
    "measure",
    "plot_frontier",
    "quick_frontier_config",
    "rlhf_checkpoints",
]
