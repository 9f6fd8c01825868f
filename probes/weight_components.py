"""A GPT-2 checkpoint's weights by component: each head's and each MLP's slices, a physical swap
of components between two models, and the relative weight change of each component.

Slices of an HF ``GPT2LMHeadModel`` (``Conv1D`` weights are ``in x out``):

- head ``LlHh``: its query, key and value columns of ``attn.c_attn`` (weight and bias; columns
  ``h*d_head:(h+1)*d_head`` of each third) and its input rows of ``attn.c_proj.weight``. The
  output bias ``attn.c_proj.bias`` is added once per block after the heads are summed, so it
  belongs to no head and is never swapped with one;
- MLP ``Ll MLP``: every weight and bias of ``mlp.c_fc`` and ``mlp.c_proj``.

Layer norms, embeddings and the unembedding belong to no component. The physical swap is the
brute-force reference for component swapping: a deep copy with the slices overwritten.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import torch

from lab.errors import LabError

__all__ = [
    "component_names",
    "component_slices",
    "parse_component",
    "swap_components",
    "weight_change",
]

Slices = list[tuple[str, tuple[slice, ...]]]  # (parameter name, index into it)


def _check_gpt2(model: Any) -> None:
    if not hasattr(model, "transformer") or not hasattr(model.transformer, "h"):
        raise LabError(
            f"Weight slices are defined for HF GPT-2 models (GPT2LMHeadModel); got "
            f"{type(model).__name__}. Load the checkpoint with lab.checkpoints.load_model."
        )


def component_names(model: Any) -> list[str]:
    """Every component in block order: ``L0H0``..``L0H{n-1}``, ``L0 MLP``, ``L1H0``, ..."""
    _check_gpt2(model)
    n_layers, n_heads = model.config.n_layer, model.config.n_head
    return [
        name
        for layer in range(n_layers)
        for name in [*(f"L{layer}H{h}" for h in range(n_heads)), f"L{layer} MLP"]
    ]


def parse_component(name: str, valid: Iterable[str]) -> str:
    """``L2H5`` / ``L3 MLP`` (also ``L3.mlp``, ``L3MLP``) as the lab writes it; an unknown name
    is refused with the valid ones listed."""
    valid = list(valid)
    m = re.fullmatch(r"\s*L(\d+)\s*(?:H(\d+)|[ ._]?mlp)\s*", name, flags=re.IGNORECASE)
    canon = None
    if m:
        canon = f"L{m[1]}H{m[2]}" if m[2] is not None else f"L{m[1]} MLP"
    if canon not in valid:
        raise LabError(f"No component {name!r} in this model; valid names: {', '.join(valid)}.")
    return canon


def component_slices(model: Any) -> dict[str, Slices]:
    """Each component's (parameter name, index) slices, by component name."""
    _check_gpt2(model)
    d_model, n_heads = model.config.n_embd, model.config.n_head
    d_head = d_model // n_heads
    out: dict[str, Slices] = {}
    every = (slice(None),)
    for layer in range(model.config.n_layer):
        pre = f"transformer.h.{layer}"
        for h in range(n_heads):
            cols = [
                slice(i * d_model + h * d_head, i * d_model + (h + 1) * d_head) for i in range(3)
            ]
            out[f"L{layer}H{h}"] = [
                *((f"{pre}.attn.c_attn.weight", (slice(None), c)) for c in cols),
                *((f"{pre}.attn.c_attn.bias", (c,)) for c in cols),
                (f"{pre}.attn.c_proj.weight", (slice(h * d_head, (h + 1) * d_head),)),
            ]
        out[f"L{layer} MLP"] = [
            (f"{pre}.mlp.{part}.{kind}", every)
            for part in ("c_fc", "c_proj")
            for kind in ("weight", "bias")
        ]
    return out


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
    """A deep copy of ``target`` whose named components carry ``source``'s weights."""
    _check_shapes(target, source)
    slices = component_slices(target)
    names = [parse_component(c, slices) for c in components]
    out = copy.deepcopy(target)
    params = dict(out.named_parameters())
    src = dict(source.named_parameters())
    for name in names:
        for pname, index in slices[name]:
            params[pname][index] = src[pname][index].to(params[pname].device)
    return out


@torch.no_grad()
def weight_change(base: Any, tuned: Any) -> dict[str, float]:
    """``||W_tuned - W_base|| / ||W_base||`` over each component's slices (Frobenius norm of
    all its slices together), by component name."""
    _check_shapes(base, tuned)
    pb, pt = dict(base.named_parameters()), dict(tuned.named_parameters())
    out = {}
    for name, parts in component_slices(base).items():
        diff = sum(float((pt[p][i].double() - pb[p][i].double()).pow(2).sum()) for p, i in parts)
        norm = sum(float(pb[p][i].double().pow(2).sum()) for p, i in parts)
        out[name] = (diff / norm) ** 0.5 if norm else float("inf")
    return out
