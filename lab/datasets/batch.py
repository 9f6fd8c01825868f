"""A padded batch of a dataset, ready for a forward, and the token rows that count.

``lab.datasets.dataset.Dataset.batch`` builds it: sequences padded to the longest on one side
(``Padding``), an attention mask, and a ``keep`` mask of the real tokens the dataset selects; only
kept rows ever reach a store or a metric, in sequence order, then position order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jaxtyping import Int
from torch import Tensor

from lab.types import Mask, Tokens

__all__ = ["Batch", "Padding"]

Padding = Literal["left", "right"]  # the side that padding goes on


@dataclass(frozen=True)
class Batch:
    """Padded sequences of a dataset, ready for a forward, and the rows that count."""

    tokens: Tokens  # token ids, padded to the longest sequence of the batch
    attention_mask: Mask  # True at real tokens, False at padding
    keep: Mask  # True at the rows to store: real tokens that the dataset selects
    index: Int[Tensor, " batch"]  # each row's sequence index in the dataset
    positions: Int[Tensor, "batch pos"]  # position within its sequence; -1 at padding
    targets: dict[str, Tensor] = field(default_factory=dict)  # name -> [row, ...] at kept rows

    @property
    def n_rows(self) -> int:
        """How many token rows the batch contributes."""
        return int(self.keep.sum())

    def row_sequences(self) -> Int[Tensor, " token"]:
        """Sequence index of each kept row (rows in sequence order, then position order)."""
        return self.index[:, None].expand_as(self.keep)[self.keep]

    def row_positions(self) -> Int[Tensor, " token"]:
        """Position within its sequence of each kept row."""
        return self.positions[self.keep]

    def forward_kwargs(self) -> dict[str, Tensor]:
        """Keyword arguments for the forward: the attention mask, only when there is padding."""
        return {} if bool(self.attention_mask.all()) else {"attention_mask": self.attention_mask}
