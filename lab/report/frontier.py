"""The report's frontier section: a pure function of ``frontier.parquet`` (``probes.frontier``),
written by ``lab organism frontier --out RUN`` or a sweep's ``frontier`` analysis."""

from __future__ import annotations

from lab.report.html import CircuitsVisPage, figure_html, table_html
from lab.report.tables import Run
from probes.frontier.plots import plot_frontier
from probes.frontier.summary import calibration_contrast, compare_with_rlhf, curve_costs

__all__ = ["frontier_section"]


def frontier_section(run: Run, _: CircuitsVisPage) -> str:
    """The utility–KL frontier (probes.frontier): the plot, the calibration contrast, each
    curve's cost and, with the practitioner sampler and RLHF, their comparison."""
    table = run.table("frontier.parquet")
    parts = [
        "<p>True utility against KL(policy || base) per token on the same world prompts; "
        "points without an exact KL carry their estimate (column <code>kl_how</code>).</p>",
        figure_html(plot_frontier(table), "utility-KL frontier"),
        "<h3>Calibration contrast: ECE of prediction queries (answered by the model each method "
        "keeps) beside the ECE of the policy's own next-token distributions</h3>",
        table_html(calibration_contrast(table).to_dict("records")),
        "<h3>CPU seconds of each method's whole curve (recorded: spent outside this run, the "
        "RLHF training run of the organism's card)</h3>",
        table_html(curve_costs(table).to_dict("records")),
    ]
    if {"sampler_practitioner", "rlhf"} <= set(table.method):
        out = compare_with_rlhf(table)
        parts.append(
            "<p class='finding'>The practitioner's value-guided sampler at its best beta "
            f"({out['best_beta']:g}) reaches true utility {out['best_true_utility']:.3g} at KL "
            f"{out['best_kl_to_base']:.3g}; RLHF's best checkpoint (step "
            f"{out['rlhf_peak_step']:g}) reaches {out['rlhf_peak_true_utility']:.3g} at KL "
            f"{out['rlhf_peak_kl_to_base']:.3g}. Its whole curve cost "
            f"{out['sampler_curve_cpu_s']:.3g} CPU s; RLHF at as many betas, one training run "
            f"each, {out['rlhf_runs_for_the_same_betas_cpu_s']:.3g} s.</p>"
            "<h3>At equal KL: the sampler against the RLHF checkpoints' curve</h3>"
            + table_html(out["equal_kl"])
        )
    return "".join(parts)
