"""Where a checkpoint comes from and whether its weights may be loaded.

A name is one of: ``organism`` (the shipped pair, by role), ``organism/NAME`` (one shipped
checkpoint), a local HF checkpoint folder, or a hub id. Weights load from safetensors only unless
the caller opts in to pickle (``allow_pickle=True``, read with ``torch.load(weights_only=True)``),
and a local folder's safetensors files are checked from their headers before anything loads.

Every load of weights, config or tokenizer in the lab goes through ``load_model``,
``load_config`` and ``load_tokenizer`` here, so this one policy (safetensors only, custom code
only when asked, one-line errors that name the checkpoint) holds everywhere.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from lab.errors import LabError
from lab.models.weightfiles import read_header

__all__ = [
    "Checkpoint",
    "data_dir",
    "load_config",
    "load_model",
    "load_tokenizer",
    "local_checkpoint",
    "organism_dir",
    "resolve_checkpoint",
]

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
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


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
    safe = sorted(f for f in files if f.endswith(".safetensors"))
    for f in safe:
        read_header(folder / f)  # a damaged file is named here, before any load
    if safe:
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


def local_checkpoint(
    folder: str | Path, *, allow_pickle: bool = False, name: str | None = None
) -> Checkpoint:
    """A checkpoint folder on this machine, its weight files checked (see ``resolve_checkpoint``
    for names that may also be hub ids or shipped organisms)."""
    path = Path(folder).expanduser()
    if not path.is_dir() or not (path / "config.json").exists():
        raise LabError(
            f"{path} is not a checkpoint folder (it needs a config.json); "
            "give the folder that `save_pretrained` wrote."
        )
    return Checkpoint(name or str(path), str(path), True, _weights_kind(path, allow_pickle))


def resolve_checkpoint(name: str | Path, role: str, *, allow_pickle: bool = False) -> Checkpoint:
    """Resolve a user's checkpoint name for ``role`` (``base`` or ``tuned``)."""
    text = str(name)
    if text == ORGANISM or text.startswith(ORGANISM + "/"):
        folder = _organism(text, role)
        return Checkpoint(text, str(folder), True, _weights_kind(folder, allow_pickle))
    path = Path(text).expanduser()
    if path.exists():
        return local_checkpoint(path, allow_pickle=allow_pickle, name=text)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise LabError(f"No folder at {path}; check the path, or give a hub id like 'org/model'.")
    return Checkpoint(text, text, False, not allow_pickle)


# --- loading under the policy -------------------------------------------------------------------

REMOTE_CODE_HINT = (
    "It needs custom code from the checkpoint: if you trust its author, pass "
    "trust_remote_code=True (CLI: --trust-remote-code)."
)
# Files that hold a tokenizer's vocabulary, any one of which a checkpoint folder should have.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
PLAIN_TEXT = "the cat sat on the mat, and then it went to bed. 42"  # must not tokenize to nothing


def _where(ckpt: Checkpoint) -> str:
    return f"folder {ckpt.location}" if ckpt.is_local else f"hub id {ckpt.name!r}"


def load_config(ckpt: Checkpoint, *, trust_remote_code: bool = False) -> PretrainedConfig:
    """The checkpoint's (text) config; refused in one line when it cannot be read."""
    try:
        cfg = AutoConfig.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        hint = (
            " The hub is unreachable (offline, or HF_HUB_OFFLINE=1) and there is no cached copy:"
            " download it where the hub is reachable, or give a local folder."
            if not ckpt.is_local
            else ""
        )
        if "trust_remote_code" in str(e):
            raise LabError(f"Cannot read the config of {_where(ckpt)}. {REMOTE_CODE_HINT}") from e
        raise LabError(f"Cannot read the config of {_where(ckpt)}.{hint} ({e})") from e
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _no_tokenizer(ckpt: Checkpoint, role: str, why: str) -> LabError:
    files = ""
    if ckpt.is_local and not any((Path(ckpt.location) / f).exists() for f in TOKENIZER_FILES):
        files = f"; it has none of {', '.join(TOKENIZER_FILES)}"
    return LabError(
        f"The {role} checkpoint ({_where(ckpt)}) has no usable tokenizer ({why}{files}), so its "
        "text cannot be tokenized. Save the tokenizer it was trained with into it, e.g. "
        "`AutoTokenizer.from_pretrained(BASE).save_pretrained(FOLDER)` (tokenizer.json and "
        "tokenizer_config.json)."
    )


def load_tokenizer(
    ckpt: Checkpoint, role: str, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, refused unless it has a vocabulary and keeps plain text."""
    try:
        tok = AutoTokenizer.from_pretrained(ckpt.location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        if "trust_remote_code" in str(e):
            where = _where(ckpt)
            raise LabError(f"Cannot load the tokenizer of {where}. {REMOTE_CODE_HINT}") from e
        raise _no_tokenizer(ckpt, role, f"loading it fails: {str(e).splitlines()[0]}") from e
    special = set(tok.all_special_ids)
    if not any(i not in special for i in tok.get_vocab().values()):
        raise _no_tokenizer(ckpt, role, "its vocabulary holds only special tokens")
    if not tok(PLAIN_TEXT, add_special_tokens=False)["input_ids"]:
        raise _no_tokenizer(ckpt, role, f"it encodes {PLAIN_TEXT!r} as no tokens at all")
    return tok


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-checkpoint "Loading weights" bars (restored afterwards)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_model(
    cls: Any, ckpt: Checkpoint, *, trust_remote_code: bool = False, **kw: Any
) -> PreTrainedModel:
    """``cls.from_pretrained`` of a resolved checkpoint under the policy: safetensors unless the
    checkpoint was resolved with pickle allowed, custom code only when asked, one-line errors."""
    if trust_remote_code:
        kw["trust_remote_code"] = True
    try:
        with _quiet_loading():
            return cls.from_pretrained(ckpt.location, use_safetensors=ckpt.use_safetensors, **kw)
    except (SafetensorError, OverflowError, UnicodeDecodeError, MemoryError, struct.error) as e:
        raise LabError(
            f"The weights of {_where(ckpt)} are damaged or not safetensors "
            f"({type(e).__name__}: {e or 'no detail'}). Download the checkpoint again, or "
            "re-save it from a good copy with `model.save_pretrained(folder)`."
        ) from e
    except OSError as e:
        if ckpt.use_safetensors and "safetensors" in str(e).lower():
            raise LabError(
                f"{ckpt.name!r} has no safetensors weights; Steerlab loads pickle weights only "
                "when you opt in with allow_pickle=True (CLI: --allow-pickle), which reads them "
                "with torch.load(weights_only=True)."
            ) from e
        raise LabError(f"Cannot load the weights of {_where(ckpt)}: {e}") from e
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise LabError(f"Cannot load the model of {_where(ckpt)}. {REMOTE_CODE_HINT}") from e
        raise
