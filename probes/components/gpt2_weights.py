"""A GPT-2 checkpoint's weights by component: each head's and each MLP's slices, a physical swap
of components between two models, and the relative weight change of each component.

Slices of an HF ``GPT2LMHeadModel`` (``Conv1D`` weights are ``in x out``):

- head ``LlHh``: its query, key and value columns of ``attn.c_attn`` (weight and bias; columns
  ``h*d_head:(h+1)*d_head`` of each third) and its input rows of ``attn.c_proj.weight``. The
  output bias ``attn.c_proj.bias`` is added once per block after the heads are summed, so it
  belongs to no head and is never swapped with one;
- MLP ``Ll MLP``: every weight and bias of ``mlp.c_fc`` and ``mlp.c_proj``.

Layer norms, embeddings and the unembedding belong to no component. The physical swap is the
brute-force reference for component swapping: a deep copy with the slices overwritten. The
slices are the planted organisms' own (``lab.organism.components.component_masks``), so the
benchmark swaps exactly what planting trained.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

from lab.errors import LabError
from lab.organism.components import component_masks, parse_components, relative_change
from lab.organism.components import component_names as organism_component_names

__all__ = ["component_names", "swap_components", "weight_change"]


def _check_gpt2(model: Any) -> None:
    if not hasattr(model, "transformer") or not hasattr(model.transformer, "h"):
        raise LabError(
            f"Weight slices are defined for HF GPT-2 models (GPT2LMHeadModel); got "
            f"{type(model).__name__}. Load the checkpoint with lab.models.checkpoints.load_model."
        )


def component_names(model: Any) -> list[str]:
    """Every component in block order: ``L0H0``..``L0H{n-1}``, ``L0 MLP``, ``L1H0``, ..."""
    _check_gpt2(model)
    return organism_component_names(model.config.n_layer, model.config.n_head)


def _check_shapes(a: Any, b: Any) -> None:
    sa = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    sb = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    if sa != sb:
        diff = sorted(k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k))[:3]
        raise LabError(
            f"The two models' weights differ in shape ({', '.join(diff)}, ...); components can "
            "only be swapped between checkpoints of one architecture and size."
        )


@torch.no_grad()
def swap_components(target: Any, source: Any, components: Iterable[str]) -> Any:
    """A deep copy of ``target`` whose named components carry ``source``'s weights; names as
    the organism reads them (``L2H5``, ``L3 MLP``, ``L3.mlp``; ``lab.organism.components``)."""
    _check_shapes(target, source)
    _check_gpt2(target)
    shape = target.config.n_layer, target.config.n_head
    names = [parse_components([c], *shape)[0] for c in components]  # one at a time: all may go
    out = copy.deepcopy(target)
    params = dict(out.named_parameters())
    src = dict(source.named_parameters())
    for name in names:
        for pname, owned in component_masks(target, name).items():
            p = params[pname]
            p[owned] = src[pname].to(p.device)[owned]
    return out


@torch.no_grad()
def weight_change(base: Any, tuned: Any) -> dict[str, float]:
    """``||W_tuned - W_base|| / ||W_base||`` over each component's slices (Frobenius norm of
    all its slices together), by component name: the planted organisms' own measure
    (``lab.organism.components.relative_change``), after a shape check."""
    _check_shapes(base, tuned)
    return relative_change(base, tuned)
