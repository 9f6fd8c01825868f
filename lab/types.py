"""Dimension names, fixed once for the whole lab.

Every public tensor signature uses these aliases (jaxtyping), so ``batch pos d_model`` means the
same thing everywhere: ``batch`` sequences, ``pos`` token positions, ``d_model`` residual width,
``head`` attention heads, ``d_head`` per-head width, ``layer`` transformer blocks, ``vocab``
vocabulary entries, ``token`` flattened (sequence, position) rows of a store.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "Logits",
    "Mask",
    "Resid",
    "Stacked",
    "TokenRows",
    "Tokens",
]

Tokens = Int[Tensor, "batch pos"]
Mask = Bool[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos vocab"]
Resid = Float[Tensor, "batch pos d_model"]
TokenRows = Float[Tensor, "token d_model"]
Stacked = Float[Tensor, "layer token d_model"]
