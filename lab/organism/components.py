"""Components of a GPT-2 organism as weight slices: names, masks and relative weight change.

Names: ``L1H3`` for head 3 of block 1, ``L1 MLP`` for block 1's MLP (as
``probes.components`` writes them); ``canonical_component`` reads ``L1.mlp``, ``L1_mlp``,
``L1MLP`` and ``l01h3`` as the same, any case, surrounding spaces ignored. This is the one parser
of component names: higher layers import it.

Granularity. A head owns its query, key and value columns of the fused ``attn.c_attn`` weight
and bias (GPT-2's ``Conv1D`` stores ``(in, out)``; the out axis is ``[q | k | v]``, each split
into ``n_head`` contiguous slices of ``head_dim``) and its input rows of ``attn.c_proj.weight``.
An MLP owns all of ``mlp.c_fc`` and ``mlp.c_proj`` (weights and biases). The shared output bias
``attn.c_proj.bias``, the layer norms, the embeddings and the final norm belong to no component.

``constrain_change`` rescales components' change from a reference in place (the planted
organisms' drift ends each component at a drawn relative change; their RL stays inside a ball).
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Bool
from torch import Tensor
from transformers import GPT2LMHeadModel

from lab.errors import LabError

__all__ = [
    "canonical_component",
    "component_masks",
    "component_names",
    "component_shape",
    "constrain_change",
    "parse_components",
    "relative_change",
    "union_masks",
]

_NAME = re.compile(r"^\s*L(\d+)\s*(?:H(\d+)|[ ._]?MLP)\s*$", re.IGNORECASE)


def component_names(n_layer: int, n_head: int) -> list[str]:
    """Every component, in probes' order: a block's heads, then its MLP."""
    return [
        name
        for layer in range(n_layer)
        for name in [*(f"L{layer}H{h}" for h in range(n_head)), f"L{layer} MLP"]
    ]


def canonical_component(name: str) -> str | None:
    """``name`` as the lab writes it (``L1H3``, ``L1 MLP``), or None when it names no component."""
    m = _NAME.match(name)
    if m is None:
        return None
    return f"L{int(m[1])}H{int(m[2])}" if m[2] is not None else f"L{int(m[1])} MLP"


def component_shape(names: list[str]) -> tuple[int, int]:
    """``(n_layer, n_head)`` of a model whose components are exactly ``names`` (every block's
    heads and MLP, as ``component_names`` lists them)."""
    split = [_split(n) for n in names]
    layers = {layer for layer, _ in split}
    heads = sum(head is not None for _, head in split)
    return len(layers), heads // max(len(layers), 1)


def parse_components(spec: str | list[str], n_layer: int, n_head: int) -> list[str]:
    """Canonical names of a planted set (``"L2H5,L3.mlp"`` or a list), checked against the model.

    Refuses unknown names (listing the valid ones), an empty set and a set of every component.
    """
    items = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    valid = component_names(n_layer, n_head)
    names = [canonical_component(s) for s in items]
    bad = [s.strip() for s, n in zip(items, names, strict=True) if n is None or n not in valid]
    if bad:
        raise LabError(
            f"Unknown component(s) {', '.join(bad)} for a {n_layer}-layer, {n_head}-head model; "
            f"valid names: {', '.join(valid)}."
        )
    chosen = list(dict.fromkeys(names))
    if not chosen:
        raise LabError("The planted set is empty; name at least one component, e.g. L0H1.")
    if len(chosen) == len(valid):
        raise LabError(
            f"The planted set covers all {len(valid)} components, so nothing is left to tell "
            "it apart from; leave at least one out."
        )
    return chosen


def _split(name: str) -> tuple[int, int | None]:
    m = _NAME.match(name)
    if m is None:
        raise LabError(f"{name!r} is not a component name like L1H3 or L1 MLP.")
    return int(m[1]), None if m[2] is None else int(m[2])


def component_masks(model: GPT2LMHeadModel, name: str) -> dict[str, Bool[Tensor, "..."]]:
    """Parameter name -> boolean mask of the entries that ``name`` owns (only touched params)."""
    layer, head = _split(name)
    params = dict(model.named_parameters())
    prefix = f"transformer.h.{layer}."
    if f"{prefix}ln_1.weight" not in params:
        raise LabError(f"{name}: the model has {model.config.n_layer} layers.")
    if head is None:
        return {
            k: torch.ones_like(p, dtype=torch.bool)
            for k, p in params.items()
            if k.startswith(f"{prefix}mlp.")
        }
    d, n = model.config.n_embd, model.config.n_head
    if head >= n:
        raise LabError(f"{name}: the model has {n} heads per layer.")
    hd = d // n
    cols = torch.zeros(3 * d, dtype=torch.bool)
    for part in range(3):  # q, k, v
        cols[part * d + head * hd : part * d + (head + 1) * hd] = True
    rows = torch.zeros(d, dtype=torch.bool)
    rows[head * hd : (head + 1) * hd] = True
    return {
        f"{prefix}attn.c_attn.weight": cols[None, :].expand(d, -1).clone(),
        f"{prefix}attn.c_attn.bias": cols.clone(),
        f"{prefix}attn.c_proj.weight": rows[:, None].expand(-1, d).clone(),
    }


def union_masks(model: GPT2LMHeadModel, names: list[str]) -> dict[str, Tensor]:
    """The entries owned by any of ``names``, as one mask per touched parameter."""
    out: dict[str, Tensor] = {}
    for name in names:
        for k, m in component_masks(model, name).items():
            out[k] = out[k] | m if k in out else m
    return out


def relative_change(before: GPT2LMHeadModel, after: GPT2LMHeadModel) -> dict[str, float]:
    """Per component, ||W_after - W_before||_F / ||W_before||_F over the entries it owns."""
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    out = {}
    for name in component_names(before.config.n_layer, before.config.n_head):
        num = den = 0.0
        for k, m in component_masks(before, name).items():
            w0, w1 = a[k].detach().double()[m], b[k].detach().double()[m]
            num += (w1 - w0).square().sum().item()
            den += w0.square().sum().item()
        out[name] = (num / max(den, 1e-30)) ** 0.5
    return out


@torch.no_grad()
def constrain_change(
    params: dict[str, Tensor],
    reference: dict[str, Tensor],
    masks: dict[str, dict[str, Tensor]],
    radii: dict[str, float],
    *,
    exact: bool,
) -> None:
    """Rescale, in place, each component's change from ``reference`` (over the entries it owns,
    ``masks[name]``) so that its relative change (as ``relative_change`` measures it) is exactly
    ``radii[name]`` (``exact``) or at most that (a ball). Entries outside the masks keep their
    values bit for bit; a component that has not moved is left alone."""
    for name, radius in radii.items():
        owned = masks[name]
        num = sum(
            float(((params[k] - reference[k]) * m).double().square().sum())
            for k, m in owned.items()
        )
        den = sum(float((reference[k] * m).double().square().sum()) for k, m in owned.items())
        change = (num / max(den, 1e-30)) ** 0.5
        if change == 0 or (not exact and change <= radius):
            continue
        factor = radius / change
        for k, m in owned.items():
            moved = reference[k] + factor * (params[k] - reference[k])
            params[k].copy_(torch.where(m, moved, params[k]))
