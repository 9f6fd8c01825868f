"""Train / validation / test splits that keep whole sequences together, and feature standardisation.

Positions of one sequence share their prefix, so a split by row would leak: every split here assigns
whole sequences (by the store's ``sequence_ids``) to exactly one part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError

__all__ = ["Scaling", "Split", "split_by_sequence", "standardize"]


@dataclass(frozen=True)
class Split:
    """Row indices of each part; no sequence has rows in two parts."""

    train: Int[Tensor, " row"]  # rows the probes are fitted on
    val: Int[Tensor, " row"]  # rows the regularisation is chosen on
    test: Int[Tensor, " row"]  # rows the reported scores come from


def split_by_sequence(
    sequence_ids: Int[Tensor, " token"],
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> Split:
    """Shuffle the distinct sequences with ``seed``; cut them by ``fractions`` (train/val/test)."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise LabError(
            f"Split fractions {fractions} must be three positive shares (train, val, test)."
        )
    seqs = torch.unique(sequence_ids.cpu())
    if len(seqs) < 3:
        raise LabError(
            f"Only {len(seqs)} distinct sequence(s): a split needs at least 3 (one each for train, "
            "validation and test) so that no sequence is split across parts. Collect more "
            "sequences."
        )
    order = seqs[torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed))]
    total = sum(fractions)
    n_val = max(1, round(len(seqs) * fractions[1] / total))
    n_test = max(1, round(len(seqs) * fractions[2] / total))
    n_train = len(seqs) - n_val - n_test
    if n_train < 1:
        raise LabError(
            f"{len(seqs)} sequences leave none for training at fractions {fractions}; collect more "
            "sequences or give training a larger share."
        )
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    ids = sequence_ids.cpu()
    rows = [torch.isin(ids, part).nonzero().flatten().to(sequence_ids.device) for part in parts]
    return Split(*rows)


@dataclass(frozen=True)
class Scaling:
    """Per-feature statistics of a feature stack, and standardised copies of parts of it."""

    mean: Float[Tensor, "feat d_model"]  # per feature set and feature, over its rows
    scale: Float[Tensor, "feat d_model"]  # the (biased) std; 1 where a feature is constant

    @classmethod
    def of(cls, x: Float[Tensor, "feat row d_model"]) -> Scaling:
        """The statistics of ``x``'s rows, one feature set at a time: no copy of the stack."""
        mean = x.mean(1)
        scale = torch.empty_like(mean)
        centred = None
        for f in range(x.shape[0]):  # one set's centred rows in one reused buffer
            centred = torch.sub(x[f], mean[f], out=centred)
            # The norm of the centred rows: the (biased) std, a few times faster than Tensor.std.
            scale[f] = torch.linalg.vector_norm(centred, dim=0) / x.shape[1] ** 0.5
        tiny = 1e-12 * scale.amax(-1, keepdim=True).clamp_min(1e-30)
        return cls(mean, torch.where(scale > tiny, scale, 1.0))

    def apply(
        self,
        x: Float[Tensor, "feat row d_model"],
        sets: slice = slice(None),
        out: Tensor | None = None,
    ) -> Float[Tensor, "feat row d_model"]:
        """``x`` (feature sets ``sets`` of the stack) standardised, written into ``out`` if given
        (a buffer reused from set to set costs no new memory)."""
        out = torch.sub(x, self.mean[sets, None], out=out)
        return out.div_(self.scale[sets, None])


def standardize(
    x: Float[Tensor, "feat row d_model"],
) -> tuple[
    Float[Tensor, "feat row d_model"], Float[Tensor, "feat d_model"], Float[Tensor, "feat d_model"]
]:
    """Zero mean, unit variance per feature (statistics of these rows); constant features kept at 0.

    Returns the standardised copy, the means and the scales (1 where a feature is constant).
    """
    scaling = Scaling.of(x)
    return scaling.apply(x), scaling.mean, scaling.scale
