"""How many patched cones share one forward: segments packed into lanes.

A site's downstream cone covers positions ``start..n_pos`` of every prompt: one *segment* of
rows. Segments are packed end to end into *lanes* of at most ``n_pos`` rows (first fit,
longest first), and lanes are stacked along the batch: a forward then holds many sites with
almost no padding and attention stays ``n_pos`` wide. Each row sees the cached run's keys before
its segment's start and its own segment's keys, as the model's own mask allows its position; the
HF arguments that depend on position (rotary tables, position ids, the mask) are gathered by
name (``KWARG_RULES``), so no architecture needs code of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["KWARG_RULES", "Lanes", "pack_lanes"]


@dataclass(frozen=True)
class Lanes:
    """The layout of one cone run: which prompt position each (lane, row) holds."""

    positions: Int[Tensor, "lane row"]  # prompt position of each row (padding: the last)
    segment: Int[Tensor, "lane row"]  # the site each row belongs to (padding: n_segments)
    member: Bool[Tensor, "segment_pad pos"]  # which positions each segment recomputes
    where: tuple[tuple[int, int, int], ...]  # per site: (lane, first row, rows)
    batch: int  # prompts per lane
    n_pos: int  # prompt length

    @property
    def n_lanes(self) -> int:
        return int(self.positions.shape[0])

    @property
    def width(self) -> int:
        return int(self.positions.shape[1])

    def gather(self, x: Tensor) -> Tensor:
        """``(1|batch) pos ...`` at every lane's rows: ``(lane batch) row ...``."""
        picked = x[:, self.positions].transpose(0, 1)  # lane (1|batch) row ...
        picked = picked.expand(self.n_lanes, self.batch, *picked.shape[2:])
        return picked.reshape(self.n_lanes * self.batch, *picked.shape[2:])

    def tile(self, x: Tensor) -> Tensor:
        """``batch ...`` repeated for every lane: ``(lane batch) ...``."""
        return x.repeat(self.n_lanes, *([1] * (x.ndim - 1)))

    def rows(self, act: Tensor, site: int) -> Tensor:
        """A view of ``act`` (``(lane batch) row ...``) at one site's segment: ``batch seg ...``."""
        lane, first, n = self.where[site]
        by_lane = act.view(self.n_lanes, self.batch, *act.shape[1:])
        return by_lane[lane, :, first : first + n]

    def mask(self, mask: Tensor | None) -> Float[Tensor, "lb 1 row key"]:
        """The additive mask over [the cached run's ``n_pos`` keys, the lane's own rows]: a row
        sees the cached keys its segment does not recompute and its own segment's keys, each as
        the model's own mask (causal, sliding window, padding) allows its position."""
        pos, low, n_pos = self.positions, _low(mask), self.n_pos
        if mask is None or mask.ndim == 2:  # none, or key padding only: add the causal part
            future = torch.ones(n_pos, n_pos, dtype=torch.bool, device=pos.device).triu(1)
            full = torch.zeros(n_pos, n_pos, device=pos.device).masked_fill(future, low)[None]
            if mask is not None:
                full = (full + (1.0 - mask.float())[:, None, :] * low).clamp_min(low)
            mask = full[:, None]
        elif mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, low)
        rows = mask[:, :, pos].permute(2, 0, 1, 3, 4)  # lane b 1 row key
        own = mask[:, :, pos[:, :, None], pos[:, None, :]].permute(2, 0, 1, 3, 4)
        cached = ~self.member[self.segment]  # lane row key
        same = self.segment[:, :, None] == self.segment[:, None, :]
        full = torch.cat(
            [
                rows.masked_fill(~cached[:, None, None], low),
                own.masked_fill(~same[:, None, None], low),
            ],
            dim=-1,
        )
        full = full.expand(self.n_lanes, self.batch, *full.shape[2:])
        return full.reshape(self.n_lanes * self.batch, *full.shape[2:])


def _low(mask: Tensor | None) -> float:
    if mask is not None and mask.is_floating_point():
        return torch.finfo(mask.dtype).min
    return torch.finfo(torch.float32).min


def pack_lanes(
    segments: Sequence[Sequence[int]], n_pos: int, batch: int, device: Any = None
) -> Lanes:
    """Pack segments (the positions each site recomputes) into lanes of ``n_pos`` rows, first
    fit, longest first."""
    order = sorted(range(len(segments)), key=lambda g: -len(segments[g]))
    lanes: list[list[int]] = []
    free: list[int] = []
    for g in order:
        need = len(segments[g])
        lane = next((i for i, room in enumerate(free) if room >= need), None)
        if lane is None:
            lanes.append([])
            free.append(max(n_pos, need))
            lane = len(lanes) - 1
        lanes[lane].append(g)
        free[lane] -= need
    width = max(sum(len(segments[g]) for g in members) for members in lanes)
    pad_segment = len(segments)
    positions, segment = [], []
    where: dict[int, tuple[int, int, int]] = {}
    for i, members in enumerate(lanes):
        pos, seg = [], []
        for g in members:
            where[g] = (i, len(pos), len(segments[g]))
            pos += list(segments[g])
            seg += [g] * len(segments[g])
        pad = width - len(pos)  # padding rows: the last position, seeing only cached key 0
        positions.append(pos + [n_pos - 1] * pad)
        segment.append(seg + [pad_segment] * pad)
    member = [[False] * n_pos for _ in range(len(segments) + 1)]
    for g, seg_positions in enumerate(segments):
        for p in seg_positions:
            member[g][p] = True
    member[pad_segment][1:] = [True] * (n_pos - 1)
    return Lanes(
        positions=torch.tensor(positions, device=device),
        segment=torch.tensor(segment, device=device),
        member=torch.tensor(member, device=device),
        where=tuple(where[g] for g in range(len(segments))),
        batch=batch,
        n_pos=n_pos,
    )


def _positional(x: Any, lanes: Lanes) -> Any:
    """Position ids (``(1|batch) pos``) or rotary tables (a tuple of ``(1|batch) pos d``)."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(lanes.gather(t) for t in x)
    return lanes.gather(x)


# How to adapt one block keyword argument to a lane layout: name -> fn(value, lanes).
Rule = Callable[[Any, Lanes], Any]

KWARG_RULES: dict[str, Rule] = {
    "attention_mask": lambda x, lanes: lanes.mask(x),
    "position_embeddings": _positional,
    "position_ids": _positional,
    "cache_position": lambda x, lanes: None,  # only for HF's own caches, which are off
    "cache": lambda x, lanes: None,  # the cached run enters through past_key_values instead
    "past_key_values": lambda x, lanes: None,
    "layer_past": lambda x, lanes: None,
    "use_cache": lambda x, lanes: False,
}
