"""``lab info``: load a pair and show what it is."""

from __future__ import annotations

import json

import typer

from lab.models.pair import ModelPair, load_pair
from lab.models.summary import pair_summary

__all__ = ["info", "load_cli_pair", "print_summary"]


def load_cli_pair(
    base: str,
    tuned: str,
    device: str | None,
    dtype: str | None,
    allow_pickle: bool,
    trust_remote_code: bool,
    compat: bool = False,
) -> ModelPair:
    """The pair a command names, loaded with the checkpoint options every command takes."""
    return load_pair(
        base,
        tuned,
        device=device,
        dtype=dtype,
        compat=compat,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )


def print_summary(summary: dict) -> None:
    """The pair summary as an aligned table, weight change per layer last."""
    change = summary["relative_weight_change"]
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if key != "relative_weight_change":
            typer.echo(f"{key:<{width}}  {value}")
    typer.echo("relative weight change ||W_tuned - W_base|| / ||W_base||:")
    for group, value in change.items():
        bar = "#" * min(40, round(value * 200))
        typer.echo(f"  {group:<10} {value:9.5f}  {bar}")


def info(
    base: str = typer.Argument(..., help="Base checkpoint: folder, hub id, or 'organism'."),
    tuned: str = typer.Argument(..., help="Tuned checkpoint: folder, hub id, or 'organism'."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    dtype: str = typer.Option(None, help="float32 (default), bfloat16 or float16."),
    compat: bool = typer.Option(False, help="TransformerLens compatibility mode on both."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle weights (weights_only load)."),
    trust_remote_code: bool = typer.Option(
        False, help="Run the checkpoints' own model code (only for authors you trust)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Print a pair's summary: architecture, sizes, parameters, hooks, weight change by layer."""
    pair = load_cli_pair(base, tuned, device, dtype, allow_pickle, trust_remote_code, compat)
    summary = pair_summary(pair)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
