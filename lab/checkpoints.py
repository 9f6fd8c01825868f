"""Where a checkpoint comes from and whether its weights may be loaded.

A name is one of: ``organism`` (the shipped pair, by role), ``organism/NAME`` (one shipped
checkpoint), a local HF checkpoint folder, or a hub id. Weights load from safetensors only unless
the caller opts in to pickle (``allow_pickle=True``, read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

__all__ = ["Checkpoint", "data_dir", "organism_dir", "resolve_checkpoint"]

ORGANISM = "organism"
ORGANISM_ROLES = {"base": "base", "tuned": "rlhf"}  # which shipped checkpoint plays each role
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: what to hand to ``from_pretrained`` and how it was named."""

    name: str  # what the user typed
    location: str  # a folder path or a hub id
    is_local: bool  # a folder on this machine (else a hub id)
    use_safetensors: bool  # False only when the user allowed pickle weights and there are no others


def data_dir() -> Path:
    """The lab's data folder: $STEERLAB_DATA, else ``data/`` at the top of the repository."""
    env = os.environ.get("STEERLAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def organism_dir(name: str = "base") -> Path:
    """The folder of one shipped organism checkpoint (``base``, ``rlhf``, ``peak`` ...)."""
    return data_dir() / ORGANISM / name


def _organism(name: str, role: str) -> Path:
    sub = ORGANISM_ROLES[role] if name == ORGANISM else name.split("/", 1)[1]
    folder = organism_dir(sub)
    if not (folder / "config.json").exists():
        shipped = sorted(p.name for p in organism_dir("").glob("*") if (p / "config.json").exists())
        raise LabError(
            f"The organism checkpoint {sub!r} is not at {folder}. "
            + (f"Shipped: {', '.join(shipped)}. " if shipped else "")
            + "Train it with `lab organism train` "
            "(or set STEERLAB_DATA to a data folder that has it)."
        )
    return folder


def _weights_kind(folder: Path, allow_pickle: bool) -> bool:
    """True for safetensors weights; False for allowed pickle weights; refuse otherwise."""
    files = [p.name for p in folder.iterdir()]
    if any(f.endswith(".safetensors") for f in files):
        return True
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickled and allow_pickle:
        return False
    if pickled:
        raise LabError(
            f"{folder} has only pickle weights ({', '.join(sorted(pickled))}); pickle can run "
            "arbitrary code, so Steerlab loads safetensors only. Convert them "
            "(`AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder)` writes "
            "model.safetensors) or opt in with allow_pickle=True (`--allow-pickle` on the CLI), "
            "which reads them with torch.load(weights_only=True)."
        )
    raise LabError(f"{folder} has no weights (no *.safetensors file); is it a checkpoint folder?")


def resolve_checkpoint(name: str | Path, role: str, *, allow_pickle: bool = False) -> Checkpoint:
    """Resolve a user's checkpoint name for ``role`` (``base`` or ``tuned``)."""
    text = str(name)
    if text == ORGANISM or text.startswith(ORGANISM + "/"):
        folder = _organism(text, role)
        return Checkpoint(text, str(folder), True, _weights_kind(folder, allow_pickle))
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise LabError(
                f"{path} is not a checkpoint folder (it needs a config.json); "
                "give the folder that `save_pretrained` wrote."
            )
        return Checkpoint(text, str(path), True, _weights_kind(path, allow_pickle))
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise LabError(f"No folder at {path}; check the path, or give a hub id like 'org/model'.")
    return Checkpoint(text, text, False, not allow_pickle)
