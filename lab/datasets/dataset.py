"""Datasets: token sequences with per-position targets, per-sequence labels, and padded batches.

A ``Dataset`` holds its sequences right-padded in one tensor with their lengths, a ``select``
mask of the positions that matter (every real token by default), per-position ``targets``
(``[batch, pos, ...]`` tensors: belief states, next-token distributions ...) and per-sequence
``labels`` (one value per sequence, from JSONL fields). ``batches`` cuts it into padded
``lab.datasets.batch.Batch`` es, left or right padded, whose ``keep`` mask is where real,
selected tokens are: only those rows ever reach a store or a metric.

Sources: token lists (``from_tokens``), strings (``from_texts``), JSONL prompt files
(``from_jsonl``), plain text chunked into windows (``from_text_file``), and organism samples
(``from_organism``), which carry the world's exact per-position quantities as targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lab.datasets.batch import Batch, Padding
from lab.errors import LabError
from lab.types import Tokens

__all__ = ["Dataset"]


def _read_text(path: Path) -> str:
    """A data file's text; a LabError naming the file, line and byte when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise LabError(
            f"{path}:{line} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start}); save the file as UTF-8 (e.g. iconv -t UTF-8)."
        ) from e


def _as_labels(labels: dict[str, Sequence[Any]] | None, n: int) -> dict[str, list]:
    out = {k: list(v) for k, v in (labels or {}).items()}
    for k, v in out.items():
        if len(v) != n:
            raise LabError(f"Label {k!r} has {len(v)} values for {n} sequences; give one each.")
    return out


@dataclass(frozen=True)
class Dataset:
    """Token sequences plus per-position targets and per-sequence labels (see module doc)."""

    tokens: Tokens  # sequences, right-padded to the longest
    lengths: Int[Tensor, " batch"]  # real tokens per sequence
    select: Bool[Tensor, "batch pos"]  # positions that matter (never beyond a sequence's length)
    targets: dict[str, Tensor] = field(default_factory=dict)  # name -> [batch, pos, ...]
    labels: dict[str, list] = field(default_factory=dict)  # name -> one value per sequence
    name: str = "dataset"  # where it came from, for manifests and messages
    pad_id: int = 0  # token id written at padding (never read: the attention mask hides it)

    def __post_init__(self) -> None:
        n, pos = self.tokens.shape
        if self.lengths.shape != (n,) or self.select.shape != (n, pos):
            raise LabError("Dataset lengths must be [batch] and select [batch, pos].")
        if n and (int(self.lengths.min()) < 1 or int(self.lengths.max()) > pos):
            raise LabError("Every sequence needs at least one token; drop the empty ones.")
        real = torch.arange(pos)[None] < self.lengths[:, None]
        object.__setattr__(self, "select", self.select & real)
        for k, t in self.targets.items():
            if tuple(t.shape[:2]) != (n, pos):
                raise LabError(
                    f"Target {k!r} has shape {tuple(t.shape)}; per-position targets must start "
                    f"with [batch={n}, pos={pos}] like the tokens."
                )
        clash = set(self.targets) & set(self.labels)
        if clash:
            raise LabError(f"{sorted(clash)} are both targets and labels; rename one.")

    # ---- constructors --------------------------------------------------------------------
    @classmethod
    def from_tokens(
        cls,
        tokens: Tensor | Sequence[Sequence[int]],
        *,
        targets: dict[str, Tensor] | None = None,
        labels: dict[str, Sequence[Any]] | None = None,
        select: Tensor | None = None,
        name: str = "tokens",
        pad_id: int = 0,
    ) -> Dataset:
        """From token ids: a ``[batch, pos]`` tensor (all full length) or ragged lists."""
        if isinstance(tokens, Tensor):
            if tokens.ndim != 2:
                raise LabError(f"tokens must be [batch, pos]; got shape {tuple(tokens.shape)}.")
            padded = tokens.long()
            lengths = torch.full((len(padded),), padded.shape[1], dtype=torch.long)
        else:
            seqs = [list(map(int, s)) for s in tokens]
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            padded = torch.full((len(seqs), max(map(len, seqs), default=0)), pad_id)
            for i, s in enumerate(seqs):
                padded[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return cls(
            tokens=padded,
            lengths=lengths,
            select=torch.ones_like(padded, dtype=torch.bool) if select is None else select.bool(),
            targets=dict(targets or {}),
            labels=_as_labels(labels, len(padded)),
            name=name,
            pad_id=pad_id,
        )

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        *,
        labels: dict[str, Sequence[Any]] | None = None,
        prepend_bos: bool = True,
        name: str = "texts",
    ) -> Dataset:
        """Tokenize each string (BOS first when the tokenizer has one and ``prepend_bos``)."""
        bos = [tokenizer.bos_token_id] if prepend_bos and tokenizer.bos_token_id is not None else []
        ids = [bos + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls.from_tokens(ids, labels=labels, name=name, pad_id=pad)

    @classmethod
    def from_jsonl(
        cls,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        *,
        text_field: str = "text",
        prepend_bos: bool = True,
    ) -> Dataset:
        """A JSONL prompt file, one object a line: ``text_field`` tokenized, other fields labels."""
        path = Path(path)
        if not path.is_file():
            raise LabError(f"No prompt file at {path}; give a .jsonl file with one object a line.")
        rows = []
        for i, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LabError(f"{path}:{i} is not JSON ({e}); one object per line.") from e
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise LabError(f"{path}:{i} has no string field {text_field!r}; add one.")
            rows.append(row)
        if not rows:
            raise LabError(f"{path} holds no prompts.")
        keys = [k for k in rows[0] if k != text_field]
        labels = {k: [r.get(k) for r in rows] for k in keys}
        texts = [r[text_field] for r in rows]
        return cls.from_texts(
            texts, tokenizer, labels=labels, prepend_bos=prepend_bos, name=path.name
        )

    @classmethod
    def from_text_file(
        cls,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        *,
        seq_len: int = 128,
        prepend_bos: bool = True,
    ) -> Dataset:
        """Plain text tokenized as one stream and cut into windows of ``seq_len`` tokens."""
        path = Path(path)
        if not path.is_file():
            raise LabError(f"No text file at {path}.")
        ids = tokenizer(_read_text(path), add_special_tokens=False)["input_ids"]
        bos = [tokenizer.bos_token_id] if prepend_bos and tokenizer.bos_token_id is not None else []
        step = seq_len - len(bos)
        if step < 1 or not ids:
            raise LabError(f"{path} is empty or seq_len={seq_len} leaves no room for text.")
        chunks = [bos + ids[i : i + step] for i in range(0, len(ids), step)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls.from_tokens(chunks, name=path.name, pad_id=pad)

    @classmethod
    def from_organism(cls, sample: Any, labeler: Any = None, *, name: str = "organism") -> Dataset:
        """Organism samples (``lab.organism.world.WorldSample``) with exact per-position targets.

        Targets: ``belief`` (P(scene of the next word | prefix)), ``filtered`` (P(scene of this
        word | prefix)), ``next_token_probs`` and ``next_token_entropy`` (the world's exact
        predictive distribution), ``scene`` (hidden scene; -1 at BOS) and, given a ``labeler``,
        ``utility`` (the labeler's per-token utility).
        """
        fw = sample.forward
        probs = fw.next_token_logprobs.exp()
        logp = fw.next_token_logprobs.clamp_min(-1e30)
        targets = {
            "belief": fw.beliefs,
            "filtered": fw.filtered,
            "next_token_probs": probs,
            "next_token_entropy": -(probs * logp).sum(-1),
            "scene": sample.scenes,
        }
        if labeler is not None:
            targets["utility"] = labeler.token_utilities(sample.tokens)
        return cls.from_tokens(sample.tokens, targets=targets, name=name)

    # ---- views ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_tokens(self) -> int:
        """Token rows that a cache of this dataset holds (selected real tokens)."""
        return int(self.select.sum())

    @property
    def max_len(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    def numeric_labels(self) -> dict[str, Tensor]:
        """Labels whose values are all numbers or booleans, as ``[batch]`` tensors."""
        out = {}
        for k, v in self.labels.items():
            if v and all(isinstance(x, (bool, int, float)) for x in v):
                out[k] = torch.tensor(v)
        return out

    def last_token_only(self) -> Dataset:
        """The same sequences with only each one's last token selected."""
        last = torch.zeros_like(self.select)
        last[torch.arange(len(self)), self.lengths - 1] = True
        return replace(self, select=last)

    def check_context(self, n_ctx: int) -> None:
        """Refuse sequences longer than the model's context, naming the longest."""
        if self.max_len > n_ctx:
            worst = int(self.lengths.argmax())
            raise LabError(
                f"Sequence {worst} of {self.name!r} has {self.max_len} tokens but the model's "
                f"context is {n_ctx}; truncate or re-chunk it (from_text_file(seq_len={n_ctx}))."
            )

    def fingerprint(self) -> str:
        """A hash of everything a cache depends on: tokens, selection, targets, labels."""
        h = hashlib.sha256()
        for t in (self.lengths, self.tokens, self.select):
            h.update(t.contiguous().numpy().tobytes())
        for k in sorted(self.targets):
            t = self.targets[k]
            h.update(k.encode() + str(t.dtype).encode())
            h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
        h.update(json.dumps(self.labels, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    # ---- batching ------------------------------------------------------------------------
    def batch(self, start: int, stop: int, padding_side: Padding = "right") -> Batch:
        """Sequences ``start:stop`` padded to their longest, on the chosen side."""
        if padding_side not in ("left", "right"):
            raise LabError(f"padding_side must be 'left' or 'right'; got {padding_side!r}.")
        index = torch.arange(start, min(stop, len(self)))
        lengths = self.lengths[index]
        width = int(lengths.max())
        col = torch.arange(width)[None]
        shift = (width - lengths if padding_side == "left" else torch.zeros_like(lengths))[:, None]
        src = (col - shift).clamp(0, self.tokens.shape[1] - 1)  # padded col -> sequence position
        real = (col >= shift) & (col - shift < lengths[:, None])
        rows = index[:, None]
        tokens = torch.where(real, self.tokens[rows, src], self.pad_id)
        keep = real & self.select[rows, src]
        flat = (rows.expand_as(src)[keep], src[keep])
        targets = {k: t[flat] for k, t in self.targets.items()}
        for k, v in self.numeric_labels().items():
            targets[k] = v[flat[0]]
        return Batch(
            tokens=tokens,
            attention_mask=real,
            keep=keep,
            index=index,
            positions=torch.where(real, src, -1),
            targets=targets,
        )

    def batches(self, batch_size: int, padding_side: Padding = "right") -> Iterator[Batch]:
        """Consecutive batches of ``batch_size`` sequences, in dataset order."""
        if batch_size < 1:
            raise LabError(f"batch_size must be at least 1; got {batch_size}.")
        for start in range(0, len(self), batch_size):
            yield self.batch(start, start + batch_size, padding_side)
