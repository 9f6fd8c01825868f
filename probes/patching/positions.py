"""The positions a metric reads: ``resolve_positions`` in prompts of one length, and in padded
prompt sets (an attention mask) ``read_positions``, each prompt's own.

Prompts of different lengths share one ``batch pos`` array, each padded on one side (left or
right) and marked by an attention mask (1: a real token, 0: padding). The model runs with the
mask, so padding is never attended to and left-padded prompts keep their own position ids. Sites
keep array positions (one column of every prompt); a metric's positions count within each
prompt's own tokens: -1 is each prompt's last real token, 0 its first, so one metric reads
different columns of different prompts.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from jaxtyping import Int
from torch import Tensor

from lab.errors import LabError

__all__ = ["Reader", "check_mask", "mask_kwargs", "read_positions", "resolve_positions"]

Mask = Int[Tensor, "batch pos"]


class Reader(Protocol):
    """What reads positions: a metric (``probes.patching.metrics.Metric``)."""

    positions: tuple[int, ...]  # positions read (negative: from the end)

    @property
    def name(self) -> str: ...


def resolve_positions(metric: Reader, n_pos: int) -> Int[Tensor, " read"]:
    """The absolute positions ``metric`` reads, checked against the sequence length."""
    pos = [p + n_pos if p < 0 else p for p in metric.positions]
    bad = [p for p, q in zip(metric.positions, pos, strict=True) if not 0 <= q < n_pos]
    if bad:
        raise LabError(f"Metric {metric.name} reads positions {bad}; the prompts have {n_pos}.")
    return torch.tensor(pos, dtype=torch.long)


def check_mask(mask: Any, tokens: Int[Tensor, "batch pos"]) -> Mask | None:
    """``mask`` as 0/1 integers on the tokens' device, refused unless it is one run of real
    tokens per prompt, padded on either side; None stays None (no padding)."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=tokens.device)
    if mask.shape != tokens.shape:
        raise LabError(
            f"attention_mask has shape {tuple(mask.shape)}, the prompts {tuple(tokens.shape)}; "
            "give one 0/1 entry per token (1: a real token), as a tokenizer returns it."
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise LabError("attention_mask must hold 0 (padding) and 1 (a real token) only.")
    mask = mask.long()
    real = mask.sum(1)
    if (real == 0).any():
        empty = (real == 0).nonzero().flatten().tolist()
        raise LabError(f"Prompts {empty} are all padding (attention_mask all 0); drop them.")
    first = mask.argmax(1)
    span = torch.arange(mask.shape[1], device=mask.device)
    one_run = (span >= first[:, None]) & (span < (first + real)[:, None])
    if not torch.equal(one_run.long(), mask):
        gaps = (one_run.long() != mask).any(1).nonzero().flatten().tolist()
        raise LabError(
            f"Prompts {gaps} have padding between real tokens; pad each prompt on one side "
            "only (left or right), so that its real tokens are one run."
        )
    return mask


def read_positions(metric: Reader, n_pos: int, mask: Mask | None) -> Int[Tensor, "rows read"]:
    """The array positions ``metric`` reads in each prompt (``batch read``), counted within
    each prompt's real tokens; without a mask, one row that every prompt shares."""
    if mask is None:
        return resolve_positions(metric, n_pos)[None]
    mask = mask.cpu()
    first, real = mask.argmax(1), mask.sum(1)
    wanted = torch.tensor(metric.positions, dtype=torch.long)
    at = torch.where(wanted < 0, real[:, None] + wanted, wanted[None].expand(len(real), -1))
    bad = (at < 0) | (at >= real[:, None])
    if bad.any():
        b = int(bad.any(1).nonzero()[0])
        raise LabError(
            f"Metric {metric.name} reads positions {list(metric.positions)}, but prompt {b} has "
            f"only {int(real[b])} real tokens; read positions count within each prompt."
        )
    return first[:, None] + at


def mask_kwargs(mask: Mask | None, device: Any) -> dict[str, Any]:
    """The forward's keyword for a padding mask (none without one)."""
    return {} if mask is None else {"attention_mask": mask.to(device)}
