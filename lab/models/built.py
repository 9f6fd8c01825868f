"""Checkpoint folders that the lab builds itself (converted, fine-tuned), cached with a card.

A build writes into a ``.partial`` sibling and is renamed into place only when complete, with a
``card.json`` that records what was built from what and a SHA-256 of every file. A folder whose
card is missing, unreadable, made from other inputs, or whose files do not match their checksums
is rebuilt, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.errors import LabError

__all__ = ["CARD", "build_folder", "check_space", "intact", "read_card", "sha256"]

CARD = "card.json"


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**24), b""):
            h.update(block)
    return h.hexdigest()


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of a built folder (empty when there is none or it does not parse)."""
    try:
        card = json.loads((Path(folder) / CARD).read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def intact(folder: str | Path, recipe: dict[str, Any] | None = None) -> bool:
    """Whether ``folder`` holds a complete build (of ``recipe``, when given): a card whose
    checksums all match."""
    card = read_card(folder)
    files = card.get("sha256")
    as_read = json.loads(json.dumps(recipe))  # what the card holds (tuples read as lists)
    if not files or (recipe is not None and card.get("recipe") != as_read):
        return False
    return all(
        (Path(folder) / f).is_file() and sha256(Path(folder) / f) == h for f, h in files.items()
    )


def check_space(folder: Path, need: int) -> None:
    """Refuse, before any work, when the disk holding ``folder`` has less than ``need`` bytes."""
    parent = next(p for p in [folder, *folder.parents] if p.exists())
    free = shutil.disk_usage(parent).free
    if free < need:
        raise LabError(
            f"Building {folder.name} needs about {need / 2**30:.1f} GiB free at {parent}; "
            f"{free / 2**30:.1f} GiB is. Free some space or pass --out on another disk."
        )


def build_folder(
    folder: Path, recipe: dict[str, Any], build: Callable[[Path], dict[str, Any]]
) -> Path:
    """Run ``build(partial)`` (it writes the files and returns the card's other facts), then
    checksum, card and rename into ``folder``."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    facts = build(partial)
    files = {p.name: sha256(p) for p in sorted(partial.iterdir()) if p.is_file()}
    card = {"recipe": recipe, **facts, "sha256": files}
    (partial / CARD).write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
