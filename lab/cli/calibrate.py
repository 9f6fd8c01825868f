"""``lab calibrate``: both models of a pair on prompts whose true answer distribution is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from lab.cli.pair import load_cli_pair
from lab.datasets.prompts import find_chat_template

__all__ = ["calibrate"]


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def calibrate(
    base: str = typer.Argument(..., help="Base checkpoint: folder, hub id, or 'organism'."),
    tuned: str = typer.Argument(..., help="Tuned checkpoint: folder, hub id, or 'organism'."),
    prompts: list[str] = typer.Option(
        None,
        "--prompts",
        "-p",
        help="Prompt set: a shipped name or a .jsonl path, optionally NAME:MODE with MODE one of "
        "records (each record's 'chat' flag), chat (all through the chat template), plain "
        "(none). Repeatable. Default: calibration, plus calibration_chat when the pair has a "
        "chat template.",
    ),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    dtype: str = typer.Option(None, help="float32 (default), bfloat16 or float16."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle weights (weights_only load)."),
    trust_remote_code: bool = typer.Option(
        False, help="Run the checkpoints' own model code (only for authors you trust)."
    ),
    batch_tokens: int = typer.Option(1024, help="Most tokens in one forward."),
    plot: Path = typer.Option(None, help="Write the plot here (e.g. calibration.png)."),
    out: Path = typer.Option(
        None, help="Write the per-record results here (calibration.parquet) for the report."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print summary and run facts as JSON."),
) -> None:
    """Probability mass on the valid outcomes, KL(true || model) over them, entropy, top-outcome
    share and (on the controls) ECE, for the base and the tuned model."""
    # start-up cost (measured, see lab.cli): lab.calibration imports matplotlib
    from lab.calibration.calibrate import CalibrationConfig
    from lab.calibration.calibrate import calibrate as run_calibration
    from lab.calibration.summary import format_summary, plot_calibration, summarize

    pair = load_cli_pair(base, tuned, device, dtype, allow_pickle, trust_remote_code)
    if not prompts:
        prompts = ["calibration"]
        if find_chat_template(pair)[0] is not None:
            prompts.append("calibration_chat")
    results = run_calibration(pair, prompts, CalibrationConfig(batch_tokens=batch_tokens))
    summary = summarize(results)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        results.to_parquet(out)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_calibration(results).savefig(plot, dpi=120)
    facts = dict(results.attrs)
    if as_json:
        rows = [{k: _clean(v) for k, v in r.items()} for r in summary.to_dict("records")]
        typer.echo(json.dumps({"run": facts, "summary": rows}, indent=2))
        return
    typer.echo(format_summary(summary))
    secs = sum(facts["seconds"].values())
    typer.echo(
        f"{facts['n_records']} records, {facts['n_sequences']} sequences, {facts['n_tokens']} "
        f"tokens per model, {secs:.2f} s for both models; chat template: "
        f"{facts['template_source'] or 'not used'}; BOS before plain prompts: "
        f"{'yes' if facts['bos_prepend'] else 'no'} ({facts['bos_rule']})"
    )
