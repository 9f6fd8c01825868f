"""Exact recomputation of a patch's downstream cone from one cached run.

A patch at layer L and position p changes nothing before block L and nothing at positions before
p (causal attention). ``probes.patching._engine.capture`` runs the target model once and keeps, per
block, its
input residual, the keyword arguments the HF model passed it (masks, rotary tables, position
ids) and the keys/values its attention stored. ``run_cone`` then runs only blocks L.. on
positions p.. (``cone_positions``; in the last block only the rows read and the patched row):
the cached run's keys and values enter as a prefix, as in cached generation, through the
``past_key_values.update`` call that every TransformerBridge attention makes, and a mask lets
each row see the cached keys its cone does not recompute. Many cones share one forward
(``probes.patching._engine.packing``), ending at the last block that a metric reads (hook metrics:
their hook's
block). In the last block, when few rows are read, the other rows stop once their keys and
values are made (``probes.patching._engine.last_block``), and only the positions a metric reads are
unembedded. When
the capture deferred its last block, the unpatched runs join that block as lanes of every
position (``baseline``), and the cached run's keys there come from its own lane. No
per-architecture code: block arguments are adapted by name
(``probes.patching._engine.packing.KWARG_RULES``), and
the bridge's own blocks, final norm and unembedding do the arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lab.errors import LabError
from probes.patching._engine.capture import TargetRun, unembed
from probes.patching._engine.lane_hooks import patch_hook, read_hook
from probes.patching._engine.last_block import (
    KV,
    Adapter,
    KeysValues,
    attention_kv,
    hooked,
    keys_pass,
    query_pass,
    worth_splitting,
)
from probes.patching._engine.packing import Lanes, pack_lanes
from probes.patching.sites import SITE_KINDS, Site

__all__ = ["cone_positions", "run_cone"]


def cone_positions(site: Site, n_layers: int, n_pos: int, read: Sequence[int]) -> list[int]:
    """The positions whose rows a patch at ``site`` must recompute, from its layer on.

    Below the last block that is every position from the site's on. In the last block only the
    rows the metrics read matter, plus the patched row when its keys and values change (sites
    that spread within their block); [] when the patch cannot reach what is read.
    """
    if site.layer < n_layers - 1:
        return list(range(site.first_position, n_pos))
    spreads = SITE_KINDS[site.kind].spreads
    later = {r for r in read if r >= site.first_position}
    if site.position is None:
        return list(range(n_pos)) if spreads else sorted(later)
    if spreads:
        return sorted(later | {site.position})
    return [site.position] if site.position in later else []


def run_cone(
    run: TargetRun,
    sites: Sequence[Site],
    sources: Mapping[str, Tensor],
    reads: Mapping[str, Sequence[int]],
    layers: Mapping[str, int],
    baseline: Sequence[Tensor | None] = (),
) -> tuple[dict[str, Tensor], KeysValues | None]:
    """Every site's patched values of what is read, from one run of their cones: per name of
    ``reads`` (``"logits"``, or a hook at block ``layers[hook]``), ``site batch read ...`` at
    its positions.

    Each site must reach what is read (``cone_positions`` not empty). Site g's cone is one
    segment of rows in a lane (``probes.patching._engine.packing``) that joins the forward at the
    site's layer,
    from the cached run's input to that block, and ends at ``run.last``; ``sources[hook]``
    holds the source run's activation (all positions) at each site's hook. Hooks read before a
    site's layer, or at positions before its cone, keep the cached run's values.

    ``baseline``: unpatched runs of the last block in the same forward, a lane of every position
    each, their values after the sites': None for the cached run itself, or a last-block input
    to run in its place (the source run's). A run whose last block was deferred (``capture``)
    needs the cached run first: its keys there, made in this forward, are every cone's prefix.
    Also returns those keys and values (``batch kv_head pos d_head`` each; None without).
    """
    model, (batch, n_pos), last = run.model, run.tokens.shape, run.last
    n_sites = len(sites)
    sites = [*sites, *[Site("resid_pre", last)] * len(baseline)]
    own = {n_sites + j: b for j, b in enumerate(baseline)}  # baseline lanes' own inputs

    def source_of(g: int) -> Tensor | None:
        return own[g] if g in own else sources[sites[g].hook]

    deferred = run.keys[last] is None
    if deferred and (not baseline or baseline[0] is not None):
        raise LabError("The last block was deferred: pass the cached run as baseline[0] (None).")
    layer = min(s.layer for s in sites)
    final = sorted({p for name, ps in reads.items() if layers[name] == last for p in ps})
    segments = [cone_positions(s, last + 1, n_pos, final) for s in sites]
    lanes = pack_lanes(segments, n_pos, batch, run.tokens.device, [s.layer for s in sites])
    live = {i: lanes.live(i) for i in range(layer, last + 1)}  # lanes run by block i
    cells = [  # (lane, row) of every position read in the last block that a cone recomputes
        (lane, row)
        for g, seg in enumerate(segments)
        for lane, row in zip(*lanes.locate(g, _read_in(seg, final)), strict=True)
    ]
    d_model = run.block_inputs[last].shape[-1]
    rows, kept = lanes.n_lanes * batch * lanes.width, len(cells) * batch
    split = bool(cells) and worth_splitting(rows, kept, d_model)
    query = lanes.queries(cells, d_model) if split else lanes
    out = {name: _cached(run, name, ps, len(sites)) for name, ps in reads.items()}
    early = [g for g, s in enumerate(sites) if s.layer < last or not split]
    prefix: dict[int, Any] = {
        i: (lanes.tile(run.keys[i], live[i]), lanes.tile(run.values[i], live[i]))
        for i in range(layer, last + (0 if deferred else 1))
    }
    cached_lane = lanes.where[n_sites][0] if deferred else None

    def cached_kv(k: Tensor, v: Tensor) -> KeysValues:  # the cached run's lane, in order
        return lanes.by_lane(k)[cached_lane], lanes.by_lane(v)[cached_lane]

    if deferred:
        prefix[last] = lambda k, v: tuple(lanes.tile(x, live[last]) for x in cached_kv(k, v))
    kv = KV(prefix)
    adapt = Adapter(lanes)
    hidden = lanes.gather(run.block_inputs[layer], slice(0, live[layer]))
    hooks = _patches(lanes, sites, early, source_of) + _readers(
        lanes, sites, reads, layers, out, last if split else last + 1
    )
    with hooked(run.points, hooks):
        with attention_kv(model, range(layer, last if split else last + 1), kv):
            for i in range(layer, last + 1):
                running = hidden.shape[0] // batch
                if live[i] > running:  # lanes whose cones start here join from the cached run
                    joining = lanes.gather(run.block_inputs[i], slice(running, live[i]))
                    hidden = torch.cat([hidden, joining])
                if i == last and split:
                    break
                block = model.blocks[i](hidden, **adapt(run.block_kwargs[i], live[i]))
                hidden = block[0] if isinstance(block, tuple) else block
        if split:  # the last block: keys and values for every row, then the read rows alone
            final_sites = [g for g, s in enumerate(sites) if s.layer == last]
            with hooked(run.points, _patches(lanes, sites, final_sites, source_of)):
                keys = keys_pass(model, last, hidden, adapt(run.block_kwargs[last]), None)
            if deferred:
                kv.prefix[last] = prefix[last](*keys)
            late = _patches(query, sites, final_sites, source_of)
            late += _readers(query, sites, reads, layers, out, last + 1, since=last)
            with hooked(run.points, late):
                hidden = query_pass(
                    model, last, hidden, query, run.block_kwargs[last], keys, kv.prefix[last]
                )
    if "logits" in reads:
        out["logits"] = _read(run, hidden, query, out["logits"], n_sites if deferred else None)
    made = None if not deferred else cached_kv(*(keys if split else kv.seen[last]))
    return out, made


def _cached(run: TargetRun, name: str, positions: Sequence[int], n_sites: int) -> Tensor | None:
    """The unpatched values read, once per site: the start of every site's result (None:
    logits of a run whose last block was deferred)."""
    if name == "logits" and run.logits is None:
        return None
    x = run.logits if name == "logits" else run.acts[name][:, list(positions)]
    return x.unsqueeze(0).repeat(n_sites, *([1] * x.ndim))


def _read_in(segment: Sequence[int], reads: Sequence[int]) -> list[int]:
    """The positions read that a segment holds, in the order read."""
    held = set(segment)
    return [r for r in reads if r in held]


def _patches(lanes: Lanes, sites: Sequence[Site], which: Sequence[int], source_of) -> list:
    """Patch hooks in a layout for the sites ``which`` (indices), one per hook point and
    source (``source_of(g)``; None: no patch)."""
    by_hook: dict[tuple[str, int], tuple[Tensor, list[int]]] = {}
    for g in which:
        if (source := source_of(g)) is not None:
            by_hook.setdefault((sites[g].hook, id(source)), (source, []))[1].append(g)
    return [
        (name, patch_hook(lanes, {g: sites[g] for g in members}, source))
        for (name, _), (source, members) in by_hook.items()
    ]


def _readers(lanes, sites, reads, layers, out, before: int, since: int = 0) -> list:
    """Hooks that copy each site's values at the hooks read in blocks ``since..before-1`` into
    ``out`` (sites whose cone has begun there), after the patches."""
    return [
        (name, read_hook(lanes, [g for g, s in enumerate(sites) if s.layer <= at], ps, out[name]))
        for name, ps in reads.items()
        if name != "logits" and since <= (at := layers[name]) < before
    ]


def _read(run: TargetRun, hidden: Tensor, lanes: Lanes, out: Tensor | None, fill: int | None):
    """Logits at ``run.read`` into ``out`` (``site batch read vocab``) where a cone reaches;
    ``out`` None: a new one, whose cells no cone reaches hold site ``fill``'s (the cached run's
    lane, which reaches all)."""
    reads = list(run.read)
    where: list[list[int]] = [[], [], [], []]  # site, read index, lane, row
    for g, seg in enumerate(lanes.segments):
        held = set(seg)
        js = [j for j, r in enumerate(reads) if r in held]
        at = lanes.locate(g, [reads[j] for j in js])
        for part, values in zip(where, ([g] * len(js), js, *at), strict=True):
            part += values
    if where[0]:
        site, j, lane, row = (torch.tensor(x, device=hidden.device) for x in where)
        logits = unembed(run.model, lanes.by_lane(hidden)[lane, :, row].transpose(0, 1))
        if out is None:
            shape = (len(lanes.segments), logits.shape[0], len(reads), logits.shape[-1])
            out, held = logits.new_empty(shape), torch.zeros(shape[0], shape[2], dtype=torch.bool)
            held[site.cpu(), j.cpu()] = True
            out[site, :, j] = logits.transpose(0, 1)
            return torch.where(held.to(out.device)[:, None, :, None], out, out[fill])
        out[site, :, j] = logits.transpose(0, 1)  # logits: batch pair vocab
    return out
