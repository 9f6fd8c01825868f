"""Input checks shared by probe fitting: every refusal says what is wrong and how to fix it."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from lab.errors import LabError

__all__ = ["as_stack", "as_values", "check_target"]


def as_stack(x: Tensor) -> Float[Tensor, "feat row d_model"]:
    """``x`` as ``[feat row d_model]``; refuses non-float features and names NaN / inf rows."""
    if x.dim() not in (2, 3):
        raise LabError(
            f"Features must be [row d_model] or [feat row d_model]; got shape {tuple(x.shape)}."
        )
    x3 = x[None] if x.dim() == 2 else x
    if not torch.is_floating_point(x3):
        raise LabError(f"Features must be floating point; got {x3.dtype}.")
    bad = ~torch.isfinite(x3).all(-1)
    if bool(bad.any()):
        feat, rows = bad.nonzero()[:, 0], bad.nonzero()[:, 1]
        raise LabError(
            f"Features hold NaN or inf in feature set {int(feat[0])}, rows {rows[:10].tolist()}"
            f"{' ...' if len(rows) > 10 else ''}; drop or repair those rows before probing."
        )
    return x3


def as_values(y: Tensor) -> Float[Tensor, "row out"]:
    """Real targets as ``[row out]``."""
    return y[:, None] if y.dim() == 1 else y


def check_target(y: Tensor, n_rows: int, name: str, *, kind: str, classification: bool) -> None:
    """Refuse targets of the wrong length, type or content for the probe kind named ``kind``
    (class labels when ``classification``, reals otherwise), naming the fix."""
    if y.shape[0] != n_rows:
        raise LabError(
            f"Target {name!r} has {y.shape[0]} rows but the features have {n_rows}; give one "
            "target per feature row (per stored token)."
        )
    if classification:
        if torch.is_floating_point(y):
            raise LabError(
                f"Target {name!r} is real-valued but kind {kind!r} needs class labels; use "
                "kind 'ridge' for continuous targets or pass integer labels."
            )
        if y.dim() != 1:
            raise LabError(
                f"Target {name!r} must be one label per row; got shape {tuple(y.shape)}."
            )
        if len(torch.unique(y)) < 2:
            raise LabError(
                f"Target {name!r} has a single class ({y[0].item()}); a classifier needs at least "
                "two."
            )
    elif not bool(torch.isfinite(y.to(torch.float64)).all()):
        raise LabError(f"Target {name!r} holds NaN or inf; drop those rows or fill them first.")
