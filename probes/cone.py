"""Exact recomputation of a patch's downstream cone from one cached run.

A patch at layer L and position p changes nothing before block L and nothing at positions before
p (causal attention). ``capture`` runs the target model once and keeps, per block, its input
residual, the keyword arguments the HF model passed it (masks, rotary tables, position ids) and
the keys/values its attention stored. ``run_cone`` then runs only blocks L.. on positions p..
(``cone_positions``; in the last block only the rows read and the patched row): the cached
run's keys and values enter as a prefix, as in cached generation, through the
``past_key_values.update`` call that every TransformerBridge attention makes, and a mask lets
each row see the cached keys its cone does not recompute. Many cones share one forward
(``probes.lanes``). In the last block, when few rows are read, the other rows stop once their
keys and values are made (``probes.tail``; the capture run does the same), and only the positions
a metric reads are unembedded. No per-architecture code:
block arguments are adapted by name (``probes.lanes.KWARG_RULES``), and the bridge's own blocks,
final norm and unembedding do the arithmetic.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lab.errors import LabError
from lab.types import Tokens
from probes.lanes import KWARG_RULES, Lanes, pack_lanes, patch_hook
from probes.sites import SITE_KINDS, Site
from probes.tail import KV, Adapter, attention_kv, hooked, keys_pass, query_pass, worth_splitting

__all__ = [
    "TargetRun",
    "capture",
    "check_eval",
    "cone_positions",
    "run_cone",
    "unembed",
]


def check_eval(*models: Any) -> None:
    """Refuse models in training mode: dropout would make every patch a different sample."""
    for model in models:
        if model.training:
            raise LabError(
                "Patching needs models in eval mode (dropout off), but one is in training mode. "
                "Call model.eval() first; lab.load_pair returns both models in eval mode."
            )


# Block arguments with a batch axis first (masks, rotary tables, position ids).
BATCHED_KWARGS = frozenset({"attention_mask", "position_embeddings", "position_ids"})


@dataclass(frozen=True)
class TargetRun:
    """One unpatched run of the model that patches go into, with what its cones reuse."""

    model: Any  # the TransformerBridge that was run
    tokens: Tokens  # its input
    block_inputs: list[Float[Tensor, "batch pos d_model"]]  # residual into each block
    block_kwargs: list[dict[str, Any]]  # named arguments the HF model passed each block
    keys: list[Tensor]  # per block: batch kv_head pos d_head, as its attention stored them
    values: list[Tensor]  # per block: batch kv_head pos d_head
    logits: Float[Tensor, "batch read vocab"]  # the unpatched output at the positions read
    read: tuple[int, ...]  # those positions
    acts: dict[str, Tensor]  # activations at the hooks asked for, all positions
    points: dict[str, Any]  # those hooks' HookPoints by name

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[1])

    def split(self, n: int) -> tuple[TargetRun, TargetRun]:
        """The runs of the first ``n`` prompts and of the rest (one forward, two runs)."""
        total = int(self.tokens.shape[0])

        def part(lo: int, hi: int) -> TargetRun:
            done: dict[int, Any] = {}  # blocks share arguments (one mask): cut each once

            def cut(x: Any) -> Any:
                if id(x) not in done:
                    if isinstance(x, tuple):
                        done[id(x)] = tuple(cut(t) for t in x)
                    else:
                        batched = isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == total
                        done[id(x)] = x[lo:hi] if batched else x
                return done[id(x)]

            return TargetRun(
                model=self.model,
                tokens=self.tokens[lo:hi],
                block_inputs=[cut(x) for x in self.block_inputs],
                block_kwargs=[
                    {k: cut(v) if k in BATCHED_KWARGS else v for k, v in kw.items()}
                    for kw in self.block_kwargs
                ],
                keys=[cut(x) for x in self.keys],
                values=[cut(x) for x in self.values],
                logits=cut(self.logits),
                read=self.read,
                acts={k: cut(v) for k, v in self.acts.items()},
                points=self.points,
            )

        return part(0, n), part(n, total)


@lru_cache(maxsize=64)
def _signature(forward: Any) -> inspect.Signature:
    return inspect.signature(forward)


def _named(block: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A block call's arguments by name (HF passes some positionally), minus the residual."""
    layer = block.original_component
    signature = _signature(type(layer).forward)  # unbound: (self, hidden_states, ...)
    bound = signature.bind(layer, *args, **kwargs).arguments
    for first in list(signature.parameters)[:2]:
        bound.pop(first, None)  # self and the residual
    named = {}
    for name, value in bound.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    for name, value in named.items():
        is_tensor = isinstance(value, Tensor) or (
            isinstance(value, tuple) and any(isinstance(t, Tensor) for t in value)
        )
        if is_tensor and name not in KWARG_RULES:
            raise LabError(
                f"Block argument {name!r} holds tensors that the cone runner cannot cut to a "
                f"position range; add a rule for it to probes.lanes.KWARG_RULES."
            )
    return named


def capture(
    model: Any, tokens: Tokens, hooks: Sequence[str] = (), read: Sequence[int] | None = None
) -> TargetRun:
    """Run ``model`` on ``tokens`` once, keeping what every downstream cone reuses, the
    activations at ``hooks`` (all positions) and the logits at ``read`` (all positions)."""
    check_eval(model)
    n_layers, n_pos = int(model.cfg.n_layers), int(tokens.shape[1])
    last, read = n_layers - 1, tuple(range(n_pos)) if read is None else tuple(read)
    inputs: list[Tensor | None] = [None] * n_layers
    kwargs_by_block: list[dict | None] = [None] * n_layers

    def recorder(i):
        def hook(module, args, kwargs):
            inputs[i] = args[0] if args else kwargs["hidden_states"]
            kwargs_by_block[i] = _named(module, args, kwargs)

        return hook

    kv = KV()
    acts: dict[str, Tensor] = {}
    hook_dict = model.hook_dict
    points = {h: hook_dict[h] for h in hooks}

    def saver(name: str):
        def save(act, hook):
            acts[name] = act
            return act

        return save

    savers = [(h, saver(h)) for h in hooks]
    handles = [
        model.blocks[i].register_forward_pre_hook(recorder(i), with_kwargs=True)
        for i in range(n_layers)
    ]
    try:
        with torch.inference_mode(), attention_kv(model, range(last), kv), hooked(points, savers):
            model(tokens, stop_at_layer=last)  # the blocks before the last
    finally:
        for h in handles:
            h.remove()
    if len(kv.seen) != last or inputs[last] is None:
        raise LabError(
            f"Only {len(kv.seen)} of {n_layers} attentions handed over their keys and values; "
            "this model's attention does not support a key/value prefix, so cones cannot run."
        )
    with torch.inference_mode():
        saving = (points, savers, acts)
        resid = _last_block(model, inputs[last], kwargs_by_block[last], read, saving, kv)
        logits = unembed(model, resid)
    return TargetRun(
        model=model,
        tokens=tokens,
        block_inputs=inputs,
        block_kwargs=kwargs_by_block,
        keys=[kv.seen[i][0] for i in range(n_layers)],
        values=[kv.seen[i][1] for i in range(n_layers)],
        logits=logits,
        read=read,
        acts=acts,
        points=points,
    )


def _last_block(model: Any, x: Tensor, kwargs: dict, read: Sequence[int], saving, kv: KV) -> Tensor:
    """The capture's last block: its keys and values into ``kv``, its output at ``read`` (batch
    read d_model); split in two passes when few positions are read and no hook asked for fires
    after the attention's key/value update."""
    (points, savers, acts), last = saving, int(model.cfg.n_layers) - 1
    batch, n_pos = x.shape[:2]
    if worth_splitting(batch * n_pos, batch * len(read), x.shape[-1]):
        with hooked(points, savers):
            kv.seen[last] = keys_pass(model, last, x, kwargs, None)
        if all(name in acts for name, _ in savers):
            whole = replace(pack_lanes([range(n_pos)], n_pos, batch, x.device), cached=False)
            query = whole.queries([(0, p) for p in read])
            return query_pass(model, last, x, query, kwargs, kv.seen[last], None)
    with hooked(points, savers), attention_kv(model, [last], kv):
        out = model.blocks[last](x, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    return out[:, list(read)]


def unembed(
    model: Any, resid: Float[Tensor, "batch pos d_model"]
) -> Float[Tensor, "batch pos vocab"]:
    """Final norm and unembedding (with the model's final logit soft cap, if it has one)."""
    logits = model.unembed(model.ln_final(resid))
    cap = getattr(model.original_model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


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
    run: TargetRun, sites: Sequence[Site], sources: Mapping[str, Tensor]
) -> Float[Tensor, "site batch read vocab"]:
    """Every site's patched logits at the positions ``run.read``, from one run of their cones.

    Each site must reach what is read (``cone_positions`` not empty). Site g's cone is one
    segment of rows in a lane (``probes.lanes``) that joins the forward at the site's layer,
    from the cached run's input to that block; ``sources[hook]`` holds the source run's
    activation (all positions) at each site's hook.
    """
    model, (batch, n_pos) = run.model, run.tokens.shape
    layer, n_layers, reads = min(s.layer for s in sites), len(run.block_inputs), list(run.read)
    last = n_layers - 1
    segments = [cone_positions(s, n_layers, n_pos, reads) for s in sites]
    lanes = pack_lanes(segments, n_pos, batch, run.tokens.device, [s.layer for s in sites])
    live = {i: lanes.live(i) for i in range(layer, n_layers)}  # lanes run by block i
    cells = [  # (lane, row) of every position read that a cone recomputes
        (lane, row)
        for g, seg in enumerate(segments)
        for lane, row in zip(*lanes.locate(g, _read_in(seg, reads)), strict=True)
    ]
    query = lanes.queries(cells)
    d_model = run.block_inputs[last].shape[-1]
    split = worth_splitting(
        lanes.n_lanes * batch * lanes.width, lanes.n_lanes * batch * query.width, d_model
    )
    query = query if split else lanes
    early = [g for g, s in enumerate(sites) if s.layer < last or not split]
    kv = KV(
        {
            i: (lanes.tile(run.keys[i], live[i]), lanes.tile(run.values[i], live[i]))
            for i in range(layer, n_layers)
        }
    )
    adapt = Adapter(lanes)
    hidden = lanes.gather(run.block_inputs[layer], slice(0, live[layer]))
    with hooked(run.points, _patches(lanes, sites, early, sources)):
        with attention_kv(model, range(layer, n_layers if not split else last), kv):
            for i in range(layer, n_layers):
                running = hidden.shape[0] // batch
                if live[i] > running:  # lanes whose cones start here join from the cached run
                    joining = lanes.gather(run.block_inputs[i], slice(running, live[i]))
                    hidden = torch.cat([hidden, joining])
                if i == last and split:
                    break
                out = model.blocks[i](hidden, **adapt(run.block_kwargs[i], live[i]))
                hidden = out[0] if isinstance(out, tuple) else out
        if split:  # the last block: keys and values for every row, then the read rows alone
            final = [g for g, s in enumerate(sites) if s.layer == last]
            with hooked(run.points, _patches(lanes, sites, final, sources)):
                keys = keys_pass(
                    model, last, hidden, adapt(run.block_kwargs[last]), kv.prefix[last]
                )
            with hooked(run.points, _patches(query, sites, final, sources)):
                hidden = query_pass(
                    model, last, hidden, query, run.block_kwargs[last], keys, kv.prefix[last]
                )
    return _read(run, hidden, query)


def _read_in(segment: Sequence[int], reads: Sequence[int]) -> list[int]:
    """The positions read that a segment holds, in the order read."""
    held = set(segment)
    return [r for r in reads if r in held]


def _patches(lanes: Lanes, sites: Sequence[Site], which: Sequence[int], sources) -> list:
    """Patch hooks in a layout for the sites ``which`` (indices), one per hook point."""
    by_hook: dict[str, list[int]] = {}
    for g in which:
        by_hook.setdefault(sites[g].hook, []).append(g)
    return [
        (name, patch_hook(lanes, {g: sites[g] for g in members}, sources[name]))
        for name, members in by_hook.items()
    ]


def _read(run: TargetRun, hidden: Tensor, lanes: Lanes) -> Tensor:
    """Logits at ``run.read`` per site: unembedded where the cone reaches, cached elsewhere."""
    n_sites, reads = len(lanes.segments), list(run.read)
    out = run.logits.unsqueeze(0).repeat(n_sites, 1, 1, 1)
    where: list[list[int]] = [[], [], [], []]  # site, read index, lane, row
    for g, seg in enumerate(lanes.segments):
        held = set(seg)
        js = [j for j, r in enumerate(reads) if r in held]
        at = lanes.locate(g, [reads[j] for j in js])
        for part, values in zip(where, ([g] * len(js), js, *at), strict=True):
            part += values
    if where[0]:
        site, j, lane, row = (torch.tensor(x, device=out.device) for x in where)
        logits = unembed(run.model, lanes.by_lane(hidden)[lane, :, row].transpose(0, 1))
        out[site, :, j] = logits.transpose(0, 1)  # logits: batch pair vocab
    return out
