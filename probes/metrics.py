"""Patching metrics: small callables from patched logits to one number per prompt.

A metric reads the logits at a few positions (``positions``, negative counts from the end; the
cone runner unembeds only those) and returns a ``[batch]`` tensor. Anything with that shape and a
``positions`` and ``name`` attribute works, so a reward model's score is ``FnMetric`` around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError

__all__ = [
    "FnMetric",
    "KLMetric",
    "LogProb",
    "LogitDiff",
    "Metric",
    "TokenSetProb",
    "read_logits",
    "resolve_positions",
]

ReadLogits = Float[Tensor, "batch read vocab"]


@dataclass(frozen=True)
class Metric:
    """Base of the metrics: which positions it reads; subclasses define ``__call__``."""

    positions: tuple[int, ...] = (-1,)  # positions read (negative: from the end)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        raise NotImplementedError

    def tile(self, copies: int) -> Metric | None:
        """This metric for ``copies`` stacked copies of the batch (None: score copies one by
        one). Per-prompt fields repeat, so one call scores many patched runs."""
        return None


@dataclass(frozen=True)
class LogitDiff(Metric):
    """Logit of ``correct`` minus logit of ``wrong`` (token id per prompt), mean over positions."""

    correct: Int[Tensor, " batch"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    wrong: Int[Tensor, " batch"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        rows = torch.arange(logits.shape[0], device=logits.device)
        diff = (
            logits[rows, :, self.correct.to(logits.device)]
            - logits[rows, :, self.wrong.to(logits.device)]
        )
        return diff.mean(-1)

    def tile(self, copies: int) -> Metric:
        return replace(self, correct=self.correct.repeat(copies), wrong=self.wrong.repeat(copies))


@dataclass(frozen=True)
class LogProb(Metric):
    """Log-probability of ``targets`` (``batch`` or ``batch read`` token ids), mean over reads."""

    targets: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # ids

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        lp = logits.log_softmax(-1)
        ids = self.targets.to(logits.device)
        ids = ids[:, None].expand(lp.shape[:2]) if ids.ndim == 1 else ids
        return lp.gather(-1, ids[..., None])[..., 0].mean(-1)

    def tile(self, copies: int) -> Metric:
        reps = (copies,) + (1,) * (self.targets.ndim - 1)
        return replace(self, targets=self.targets.repeat(*reps))


@dataclass(frozen=True)
class TokenSetProb(Metric):
    """Total probability of a token set (an attractor, e.g. the wedding words), mean over reads."""

    tokens: tuple[int, ...] = ()  # token ids of the set

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        ids = torch.tensor(self.tokens, device=logits.device, dtype=torch.long)
        return logits.softmax(-1)[..., ids].sum(-1).mean(-1)

    def tile(self, copies: int) -> Metric:
        return self


@dataclass(frozen=True)
class KLMetric(Metric):
    """KL between the patched distribution and a reference's, in nats, mean over reads.

    ``reference`` holds the reference's log-probabilities at the positions read: another model's
    (base or tuned), or the world's exact next-token distribution for the organism.
    ``patched_first``: KL(patched || reference), else KL(reference || patched).
    """

    reference: Float[Tensor, "batch read vocab"] = field(default_factory=lambda: torch.zeros(0))
    patched_first: bool = True  # the direction of the divergence

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        lp = logits.log_softmax(-1)
        ref = self.reference.to(lp.device, lp.dtype)
        p, q = (lp, ref) if self.patched_first else (ref, lp)
        return (p.exp() * (p - q)).sum(-1).mean(-1)

    def tile(self, copies: int) -> Metric:
        return replace(self, reference=self.reference.repeat(copies, 1, 1))


@dataclass(frozen=True)
class FnMetric(Metric):
    """Any function of the read logits to ``[batch]``: a reward model's score, an entropy ..."""

    fn: Callable[[ReadLogits], Tensor] | None = None  # read logits -> one value per prompt
    label: str = "fn"  # its name in result tables

    @property
    def name(self) -> str:
        return self.label

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        if self.fn is None:
            raise LabError("FnMetric needs fn: read logits to one value per prompt.")
        return self.fn(logits)


def resolve_positions(metric: Metric, n_pos: int) -> Tensor:
    """The absolute positions ``metric`` reads, checked against the sequence length."""
    pos = [p + n_pos if p < 0 else p for p in metric.positions]
    bad = [p for p, q in zip(metric.positions, pos, strict=True) if not 0 <= q < n_pos]
    if bad:
        raise LabError(f"Metric {metric.name} reads positions {bad}; the prompts have {n_pos}.")
    return torch.tensor(pos, dtype=torch.long)


def read_logits(logits: Float[Tensor, "batch pos vocab"], metric: Metric) -> ReadLogits:
    """The positions of full logits that ``metric`` reads."""
    return logits[:, resolve_positions(metric, logits.shape[1]).to(logits.device)]
