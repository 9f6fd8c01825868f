"""Prompt sets: JSONL files of prompts, and how each prompt is rendered for a pair (chat or plain).

A prompt set is a JSONL file, one record per line; ``data/prompts/NAME.jsonl`` is the set
``NAME``. Fields (only ``text`` is required):

- ``text``: the prompt, or for a chat record the user's message.
- ``id``: a name unique within the set (default: ``NAME-LINE``).
- ``kind``: a group that results are summarised by (``coin``, ``die``, ``story`` ...).
- ``chat``: true when the record is meant to go through the tokenizer's chat template as one
  user turn, with the generation prompt after it (default false).
- ``outcomes``, ``probs``: calibration records only: the valid answers (strings) and their true
  probabilities (summing to 1), scored by ``lab.calibration.calibrate``.
- ``answer``: a calibration record with one correct outcome (a control, for ECE) names it here.
- any other field is kept in ``meta``.

Rendering is chosen per prompt set by a mode (``RENDER_MODES``): ``records`` (as each record's
``chat`` says), ``chat`` (every record through the template) or ``plain`` (none: a chat record
becomes ``PLAIN_CHAT`` text). The template is the tuned checkpoint's if it has one, else the base's;
both models read the same rendered tokens.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lab.errors import LabError, close_matches
from lab.models.checkpoints import Checkpoint, data_dir, load_tokenizer, resolve_checkpoint
from lab.models.pair import ModelPair

__all__ = [
    "PLAIN_CHAT",
    "RENDER_MODES",
    "PromptRecord",
    "RenderedPrompt",
    "find_chat_template",
    "list_prompt_sets",
    "parse_set_spec",
    "prompt_set_path",
    "read_prompts",
    "render",
    "render_set",
    "write_prompts",
]

# How a chat record reads without a template (mode ``plain``).
PLAIN_CHAT = "Question: {text}\nAnswer:"
_FIELDS = ("id", "text", "kind", "chat", "outcomes", "probs", "answer")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a prompt set."""

    id: str  # unique within its set
    text: str  # the prompt, or the user's message of a chat record
    kind: str = "prompt"  # group for summaries (coin, die, story ...)
    chat: bool = False  # meant to go through the chat template as one user turn
    outcomes: tuple[str, ...] = ()  # calibration: the valid answers
    probs: tuple[float, ...] = ()  # calibration: their true probabilities (sum 1)
    answer: str | None = None  # calibration control: the one correct outcome
    meta: dict[str, Any] = field(default_factory=dict)  # any other fields of the JSON line

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "kind": self.kind, "text": self.text}
        row["chat"] = self.chat
        if self.outcomes:
            row["outcomes"], row["probs"] = list(self.outcomes), list(self.probs)
        if self.answer is not None:
            row["answer"] = self.answer
        return {**row, **self.meta}


def list_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped in ``data/prompts/``."""
    return sorted(p.stem for p in (data_dir() / "prompts").glob("*.jsonl"))


def prompt_set_path(name: str | Path) -> Path:
    """The file of a prompt set: a path to a ``.jsonl`` file, or a shipped set's name."""
    path = Path(name).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise LabError(f"No prompt file at {path}.")
        return path
    shipped = data_dir() / "prompts" / f"{name}.jsonl"
    if not shipped.is_file():
        sets = list_prompt_sets()
        raise LabError(
            f"No prompt set {str(name)!r} (looked for {shipped})."
            + close_matches(str(name), sets)
            + (f" Shipped: {', '.join(sets)}." if sets else "")
            + " Give a shipped name or a path to a .jsonl file."
        )
    return shipped


def _check(rec: PromptRecord, where: str) -> None:
    if not rec.text:
        raise LabError(f"{where}: the record has no text.")
    if len(rec.outcomes) != len(rec.probs):
        raise LabError(
            f"{where}: {len(rec.outcomes)} outcomes but {len(rec.probs)} probs; give one "
            "probability per outcome."
        )
    if rec.probs and (min(rec.probs) < 0 or not math.isclose(sum(rec.probs), 1, abs_tol=1e-6)):
        raise LabError(f"{where}: probs must be non-negative and sum to 1, got {list(rec.probs)}.")
    if len(set(rec.outcomes)) != len(rec.outcomes):
        raise LabError(f"{where}: an outcome is listed twice: {list(rec.outcomes)}.")
    if rec.answer is not None and rec.answer not in rec.outcomes:
        raise LabError(f"{where}: the answer {rec.answer!r} is not one of the outcomes.")


def _record(row: Any, default_id: str, where: str) -> PromptRecord:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise LabError(f"{where}: each line must be a JSON object with a 'text' string.")
    answer = row.get("answer")
    rec = PromptRecord(
        id=str(row.get("id", default_id)),
        text=row["text"],
        kind=str(row.get("kind", "prompt")),
        chat=bool(row.get("chat", False)),
        outcomes=tuple(str(o) for o in row.get("outcomes", ())),
        probs=tuple(float(p) for p in row.get("probs", ())),
        answer=None if answer is None else str(answer),
        meta={k: v for k, v in row.items() if k not in _FIELDS},
    )
    _check(rec, where)
    return rec


def read_prompts(name: str | Path) -> list[PromptRecord]:
    """The records of a prompt set (a shipped name or a ``.jsonl`` path), checked."""
    path = prompt_set_path(name)
    records: list[PromptRecord] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabError(f"{where} is not valid JSON: {e.msg}.") from e
        records.append(_record(row, f"{path.stem}-{i}", where))
    if not records:
        raise LabError(f"The prompt set {path} has no records.")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise LabError(f"{path.name}: the id {dup!r} is used twice; ids must be unique.")
    return records


def write_prompts(path: str | Path, records: list[PromptRecord]) -> Path:
    """Write records as a JSONL prompt set (checked as ``read_prompts`` checks them)."""
    path = Path(path)
    for rec in records:
        _check(rec, f"record {rec.id!r}")
    lines = [json.dumps(r.to_json(), ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def parse_set_spec(spec: str) -> tuple[str, str]:
    """``NAME`` or ``NAME:MODE`` (a ``RENDER_MODES`` key) -> (name, mode); mode ``records``."""
    name, sep, mode = spec.rpartition(":")
    if sep and mode in RENDER_MODES:
        return name, mode
    return spec, "records"


def _template_of(tokenizer: PreTrainedTokenizerBase) -> str | None:
    tmpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tmpl, dict):  # named templates: the default one
        tmpl = tmpl.get("default")
    return tmpl or None


def find_chat_template(pair: ModelPair) -> tuple[str | None, str | None]:
    """(template, role it came from): the tuned checkpoint's, else the base's, else (None, None).

    The pair shares the base's tokenizer, so the tuned checkpoint's tokenizer config is read again
    here for its template (an instruct model often has one where its base has none).
    """
    tuned = pair.sources.get("tuned")
    if tuned is not None and tuned != pair.sources.get("base"):
        tmpl = _template_at(resolve_checkpoint(tuned, "tuned", allow_pickle=True))
        if tmpl:
            return tmpl, "tuned"
    tmpl = _template_of(pair.tokenizer)
    return (tmpl, "base") if tmpl else (None, None)


@functools.lru_cache(maxsize=8)
def _template_at(ckpt: Checkpoint) -> str | None:
    return _template_of(load_tokenizer(ckpt, "tuned"))


def _no_template(rec: PromptRecord, set_name: str) -> LabError:
    return LabError(
        f"The prompt set {set_name!r} asks for a chat template (record {rec.id!r}), but neither "
        "tokenizer of the pair has one (no chat_template in tokenizer_config.json). Run the set "
        f"without it ({set_name}:plain, or mode 'plain'), or use a pair whose tokenizer has one."
    )


def _apply(tokenizer: PreTrainedTokenizerBase, template: str, text: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}],
        chat_template=template,
        tokenize=False,
        add_generation_prompt=True,
    )


def _as_records(rec: PromptRecord) -> bool:
    return rec.chat


# mode -> whether a record goes through the chat template
RENDER_MODES: dict[str, Callable[[PromptRecord], bool]] = {
    "records": _as_records,
    "chat": lambda rec: True,
    "plain": lambda rec: False,
}


def render(
    rec: PromptRecord,
    tokenizer: PreTrainedTokenizerBase,
    template: str | None,
    mode: str = "records",
    set_name: str = "",
) -> tuple[str, bool]:
    """(text the models read, whether the chat template was applied) for one record."""
    if mode not in RENDER_MODES:
        raise LabError(f"Unknown chat mode {mode!r}; use one of {', '.join(RENDER_MODES)}.")
    if RENDER_MODES[mode](rec):
        if template is None:
            raise _no_template(rec, set_name or "?")
        return _apply(tokenizer, template, rec.text), True
    return (PLAIN_CHAT.format(text=rec.text) if rec.chat else rec.text), False


@dataclass(frozen=True)
class RenderedPrompt:
    """A record as the models read it."""

    record: PromptRecord  # the record as read
    set_name: str  # the prompt set it came from
    text: str  # the text the models read
    templated: bool  # whether the chat template was applied
    template_source: str | None  # the role whose template it was ("tuned", "base"), or None


def render_set(
    pair: ModelPair, spec: str, template: tuple[str | None, str | None] | None = None
) -> list[RenderedPrompt]:
    """Every record of a set (``NAME`` or ``NAME:MODE``) rendered for ``pair``.

    ``template`` is ``find_chat_template(pair)`` when the caller has it; else it is looked up
    only if a record needs it.
    """
    name, mode = parse_set_spec(spec)
    records = read_prompts(name)
    if mode not in RENDER_MODES:
        raise LabError(f"Unknown chat mode {mode!r}; use one of {', '.join(RENDER_MODES)}.")
    if template is None and any(RENDER_MODES[mode](r) for r in records):
        template = find_chat_template(pair)
    tmpl, source = template or (None, None)
    out = []
    for rec in records:
        text, templated = render(rec, pair.tokenizer, tmpl, mode, name)
        out.append(RenderedPrompt(rec, name, text, templated, source if templated else None))
    return out
