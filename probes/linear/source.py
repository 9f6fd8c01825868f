"""Where probes read activations: the ``ActivationStore`` protocol, and an in-memory stand-in.

Probes never touch a model: they read ``[layer token d_model]`` stacks, the sequence each stored
token came from, and per-token targets. ``TensorSource`` offers the same protocol over tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError, close_matches
from lab.types import Stacked

__all__ = ["ActivationSource", "TensorSource", "read_target"]

_Device = str | torch.device | None  # where the stacked features go (None: where they are)
_DType = torch.dtype | None  # their dtype (None: as stored)


@runtime_checkable
class ActivationSource(Protocol):
    """What probes need from ``lab.activations.store.ActivationStore``."""

    @property
    def models(self) -> Sequence[str]: ...  # e.g. ["base", "tuned"]

    @property
    def hooks(self) -> Sequence[str]: ...  # TransformerLens hook names, in layer order

    @property
    def target_names(self) -> Sequence[str]: ...  # per-token targets the store holds

    def stacked(
        self, model: str, hooks: Sequence[str], *, device: _Device = None, dtype: _DType = None
    ) -> Stacked: ...

    def sequence_ids(self) -> Int[Tensor, " token"]: ...

    def targets(self, name: str) -> Tensor: ...


@dataclass(frozen=True)
class TensorSource:
    """The store protocol over in-memory tensors (tests, benchmarks, notebooks)."""

    features: Mapping[str, Float[Tensor, "layer token d_model"]]  # model -> stacked activations
    hooks: tuple[str, ...]  # hook name of each stacked layer
    seq_ids: Int[Tensor, " token"]  # which sequence each token row came from
    target_table: Mapping[str, Tensor] = field(default_factory=dict)  # name -> per-token target

    @property
    def models(self) -> list[str]:
        return list(self.features)

    @property
    def target_names(self) -> list[str]:
        return list(self.target_table)

    def stacked(
        self, model: str, hooks: Sequence[str], *, device: _Device = None, dtype: _DType = None
    ) -> Stacked:
        """The features of ``model`` at ``hooks``, stacked ``[layer token d_model]``."""
        if model not in self.features:
            raise LabError(
                f"No model {model!r}; the source holds {', '.join(self.features)}."
                + close_matches(model, self.features)
            )
        idx = [self._hook_index(h) for h in hooks]
        x = self.features[model]
        x = x if idx == list(range(len(self.hooks))) else x[idx]
        return x.to(device=device or x.device, dtype=dtype or x.dtype)

    def sequence_ids(self) -> Int[Tensor, " token"]:
        return self.seq_ids

    def targets(self, name: str) -> Tensor:
        return read_target(self, name)

    def _hook_index(self, hook: str) -> int:
        if hook not in self.hooks:
            raise LabError(
                f"No hook {hook!r}; the source holds {', '.join(self.hooks)}."
                + close_matches(hook, self.hooks)
            )
        return self.hooks.index(hook)


def read_target(source: ActivationSource | TensorSource, name: str) -> Tensor:
    """``source``'s per-token target ``name``; a missing one raises a LabError listing the rest."""
    names = list(source.target_names)
    if name not in names:
        raise LabError(
            f"No target {name!r} in the store; available: {', '.join(names) or '(none)'}."
            + close_matches(name, names)
            + " Collect it with the activations or pass it as a tensor."
        )
    if isinstance(source, TensorSource):
        return source.target_table[name]
    return source.targets(name)
