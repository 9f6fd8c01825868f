"""How many patched cones share one forward: segments packed into lanes.

A site's downstream cone covers positions ``start..n_pos`` of every prompt: one *segment* of
rows. Segments are packed end to end into *lanes* of at most ``n_pos`` rows (first fit,
longest first), and lanes are stacked along the batch: a forward then holds many sites with
almost no padding and attention stays ``n_pos`` wide. A lane holds cones that start at one
layer, and lanes are in order of it: a block runs only the lanes that start at or below it (a
prefix of the batch), and the others join at their own layer from the cached run. Each row sees
the cached run's keys before its segment's start and its own segment's keys, as the model's own
mask allows its position; the HF arguments that depend on position (rotary tables, position
ids, the mask) are gathered by name (``KWARG_RULES``), so no architecture needs code of its own.
A *query layout* (``Lanes.queries``) holds chosen rows of a layout in lanes of one width (chosen
by cost), each keeping all the keys of the lane its rows come from: the rows read in a last
block, run apart from the rows that only give keys (``probes.patching._engine.last_block``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
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
    segments: tuple[tuple[int, ...], ...]  # per site: the positions its rows hold
    batch: int  # prompts per lane
    n_pos: int  # prompt length
    starts: tuple[int, ...] = ()  # per lane, ascending: the layer its cones start at (none: 0)
    keys: tuple[Tensor, Tensor] | None = None  # query layouts: own keys' positions, segments
    cells: tuple[dict[int, tuple[int, int]], ...] = ()  # query layouts: site -> pos -> lane, row
    picked: Tensor | None = None  # query layouts: lane x row, the rows of the full layout held
    source: Tensor | None = None  # query layouts: per lane, the full layout's lane it reads
    cached: bool = True  # the keys start with the cached run's n_pos keys

    @property
    def n_lanes(self) -> int:
        return int(self.positions.shape[0])

    @property
    def width(self) -> int:
        return int(self.positions.shape[1])

    def live(self, layer: int) -> int:
        """How many lanes run at ``layer``: those starting at or below it, the first ones."""
        return sum(1 for s in self.starts if s <= layer) if self.starts else self.n_lanes

    def gather(self, x: Tensor, lanes: slice = slice(None)) -> Tensor:
        """``(1|batch) pos ...`` at the rows of ``lanes`` (all): ``(lane batch) row ...``."""
        picked = x[:, self.positions[lanes]].transpose(0, 1)  # lane (1|batch) row ...
        picked = picked.expand(picked.shape[0], self.batch, *picked.shape[2:])
        return picked.reshape(-1, *picked.shape[2:])

    def tile(self, x: Tensor, n_lanes: int | None = None) -> Tensor:
        """``batch ...`` repeated for ``n_lanes`` lanes (all): ``(lane batch) ...``."""
        return x.repeat(self.n_lanes if n_lanes is None else n_lanes, *([1] * (x.ndim - 1)))

    def locate(self, site: int, positions: Sequence[int]) -> tuple[list[int], list[int]]:
        """The lane and the row of each of ``positions`` in one site's segment."""
        if self.cells:
            found = [self.cells[site][p] for p in positions]
            return [lane for lane, _ in found], [row for _, row in found]
        lane, first, _ = self.where[site]
        row = {p: first + i for i, p in enumerate(self.segments[site])}
        return [lane] * len(positions), [row[p] for p in positions]

    def queries(self, cells: Sequence[tuple[int, int]], d_model: int) -> Lanes:
        """A query layout: the rows of ``cells`` ((lane, row), not padding) in lanes of their
        own, each keeping all of its source lane's rows as its own keys (``source``). A lane
        with many cells is split into query lanes of one width (``_query_width``), so that one
        crowded lane does not pad every other; a lane's last chunk repeats its first row,
        unread. Site g's segment there is the positions of its cells."""
        per_lane: dict[int, list[int]] = {}
        for lane, row in cells:
            per_lane.setdefault(lane, []).append(row)
        n_keys = self.width + (self.n_pos if self.cached else 0)
        width = _query_width([len(rows) for rows in per_lane.values()], d_model, n_keys)
        segment, positions = self.segment.tolist(), self.positions.tolist()
        found: list[dict[int, tuple[int, int]]] = [{} for _ in self.segments]
        source, picked = [], []
        for lane in sorted(per_lane):
            rows = per_lane[lane]
            for at in range(0, len(rows), width):
                chunk = rows[at : at + width]
                for j, r in enumerate(chunk):
                    found[segment[lane][r]][positions[lane][r]] = (len(source), j)
                source.append(lane)
                picked.append(chunk + [chunk[0]] * (width - len(chunk)))
        device = self.positions.device
        src = torch.tensor(source, dtype=torch.long, device=device)
        index = torch.tensor(picked, dtype=torch.long, device=device).view(len(source), width)
        return replace(
            self,
            positions=self.positions[src].gather(1, index),
            segment=self.segment[src].gather(1, index),
            where=(),
            segments=tuple(tuple(f) for f in found),
            starts=tuple(self.starts[lane] for lane in source) if self.starts else (),
            keys=(self.positions[src], self.segment[src]),
            cells=tuple(found),
            picked=index,
            source=src,
        )

    def by_lane(self, act: Tensor) -> Tensor:
        """A view of ``act`` (``(lane batch) row ...``, the first lanes or all) as ``lane batch
        row ...``: index it with (lanes, :, rows) to read or write cells."""
        return act.view(-1, self.batch, *act.shape[1:])

    def first(self, x: Any, n_lanes: int) -> Any:
        """An adapted block argument (``(lane batch) ...`` or a tuple of them) cut to the first
        ``n_lanes`` lanes; anything else as it is."""
        if isinstance(x, tuple):
            return tuple(self.first(t, n_lanes) for t in x)
        total = self.n_lanes * self.batch
        lane_rows = isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == total
        return x[: n_lanes * self.batch] if lane_rows and n_lanes < self.n_lanes else x

    def mask(self, mask: Tensor | None) -> Float[Tensor, "lb 1 row key"]:
        """The additive mask over [the cached run's ``n_pos`` keys, the lane's own rows]: a row
        sees the cached keys its segment does not recompute and its own segment's keys, each as
        the model's own mask (causal, sliding window, padding) allows its position. Without a
        cached run (``cached`` off) only the lane's own keys."""
        pos, low, n_pos = self.positions, _low(mask), self.n_pos
        key_pos, key_seg = self.keys or (pos, self.segment)
        if mask is None or mask.ndim == 2:  # none, or key padding only: add the causal part
            future = torch.ones(n_pos, n_pos, dtype=torch.bool, device=pos.device).triu(1)
            full = torch.zeros(n_pos, n_pos, device=pos.device).masked_fill(future, low)[None]
            if mask is not None:
                full = (full + (1.0 - mask.float())[:, None, :] * low).clamp_min(low)
            mask = full[:, None]
        elif mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, low)
        own = mask[:, :, pos[:, :, None], key_pos[:, None, :]].permute(2, 0, 1, 3, 4)
        same = self.segment[:, :, None] == key_seg[:, None, :]  # lane row key
        full = own.masked_fill(~same[:, None, None], low)
        if self.cached:
            rows = mask[:, :, pos].permute(2, 0, 1, 3, 4)  # lane b 1 row key
            cached = ~self.member[self.segment]  # lane row key
            full = torch.cat([rows.masked_fill(~cached[:, None, None], low), full], dim=-1)
        full = full.expand(self.n_lanes, self.batch, *full.shape[2:])
        return full.reshape(self.n_lanes * self.batch, *full.shape[2:])


def _query_width(counts: Sequence[int], d_model: int, n_keys: int) -> int:
    """The query lane width that costs least for lanes holding ``counts`` read rows: every row
    run, padding included, against a fixed cost per query lane, its attention over its own copy
    of ``n_keys`` keys in many tiny products, measured on a CPU at about 4 rows' worth at
    d_model 64 and 64 keys, and falling with the square of d_model (a row's weights)."""
    per_lane = 4.0 * (n_keys / 64) * (64 / d_model) ** 2

    def cost(width: int) -> float:
        lanes = sum(-(-n // width) for n in counts)
        return lanes * (width + per_lane)

    return min(range(1, max(counts, default=1) + 1), key=cost)


def _low(mask: Tensor | None) -> float:
    if mask is not None and mask.is_floating_point():
        return torch.finfo(mask.dtype).min
    return torch.finfo(torch.float32).min


def pack_lanes(
    segments: Sequence[Sequence[int]],
    n_pos: int,
    batch: int,
    device: Any = None,
    starts: Sequence[int] | None = None,
) -> Lanes:
    """Pack segments (the positions each site recomputes) into lanes of ``n_pos`` rows, first
    fit, longest first; with ``starts`` (each segment's first layer), a lane holds segments of
    one start, and lanes are in order of it."""
    start = list(starts) if starts is not None else [0] * len(segments)
    order = sorted(range(len(segments)), key=lambda g: (start[g], -len(segments[g])))
    lanes: list[list[int]] = []
    free: list[int] = []
    lane_start: list[int] = []
    for g in order:
        need = len(segments[g])
        fits = (i for i, room in enumerate(free) if room >= need and lane_start[i] == start[g])
        lane = next(fits, None)
        if lane is None:
            lanes.append([])
            free.append(max(n_pos, need))
            lane_start.append(start[g])
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
    member = np.zeros((len(segments) + 1, n_pos), dtype=bool)
    flat = [(g, p) for g, seg_positions in enumerate(segments) for p in seg_positions]
    if flat:
        member[tuple(np.array(flat).T)] = True
    member[pad_segment, 1:] = True
    return Lanes(
        positions=torch.from_numpy(np.array(positions, dtype=np.int64)).to(device),
        segment=torch.from_numpy(np.array(segment, dtype=np.int64)).to(device),
        member=torch.from_numpy(member).to(device),
        where=tuple(where[g] for g in range(len(segments))),
        segments=tuple(tuple(seg) for seg in segments),
        batch=batch,
        n_pos=n_pos,
        starts=tuple(lane_start),
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
