"""Hooks on a lane layout (``probes.patching._engine.packing``): one writes every site's source
activation into the cells of its cone, one reads activations at chosen positions out of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lab.errors import LabError
from probes.patching._engine.packing import Lanes
from probes.patching.sites import SITE_KINDS, Site

__all__ = ["patch_hook", "read_hook"]


def patch_hook(lanes: Lanes, sites: Mapping[int, Site], source: Tensor) -> Callable:
    """A TransformerLens hook that writes ``source`` (``batch pos [head] d``, all positions) at
    every site's cells of its segment (``sites``: lane site index -> site), with one indexed copy
    for the sites of each head (or of all heads): into a copy, or into the hook's own tensor for
    kinds ``in_place`` (the residual stream itself, ``probes.patching.sites``)."""
    plans: dict[int | None, list[list[int]]] = {}  # head -> [lanes, rows, positions]
    for g, s in sites.items():
        held = lanes.segments[g]  # a query layout holds only the rows read
        positions = list(held) if s.position is None else [s.position] if s.position in held else []
        plan = plans.setdefault(s.head, [[], [], []])
        for part, values in zip(plan, (*lanes.locate(g, positions), positions), strict=True):
            part += values
    index = [
        (h, *(torch.tensor(x, dtype=torch.long, device=source.device) for x in p))
        for h, p in plans.items()
        if p[0]
    ]

    in_place = any(SITE_KINDS[s.kind].in_place for s in sites.values())

    def hook(act: Tensor, hook: Any) -> Tensor:
        if not in_place:
            act = act.contiguous().clone()
        elif not act.is_contiguous():  # the residual itself must be written (probes.patching.sites)
            raise LabError(f"Hook {hook.name} holds a strided residual; cannot patch it in place.")
        for head, lane, row, pos in index:
            if head is None:
                lanes.by_lane(act)[lane, :, row] = source[:, pos].transpose(0, 1)
            else:
                lanes.by_lane(act)[lane, :, row, head] = source[:, pos, head].transpose(0, 1)
        return act

    return hook


def read_hook(lanes: Lanes, sites: Sequence[int], positions: Sequence[int], out: Tensor):
    """A TransformerLens hook that copies the activation at ``positions`` of each of ``sites``
    (lane site indices), where its segment holds them, into ``out[site, :, read index]``."""
    where: list[list[int]] = [[], [], [], []]  # site, read index, lane, row
    for g in sites:
        held = set(lanes.segments[g])
        js = [j for j, p in enumerate(positions) if p in held]
        at = lanes.locate(g, [positions[j] for j in js])
        for part, values in zip(where, ([g] * len(js), js, *at), strict=True):
            part += values
    site, j, lane, row = (torch.tensor(x, dtype=torch.long, device=out.device) for x in where)

    def hook(act: Tensor, hook: Any) -> Tensor:
        if len(site):
            out[site, :, j] = lanes.by_lane(act)[lane, :, row].to(out.dtype)
        return act

    return hook
