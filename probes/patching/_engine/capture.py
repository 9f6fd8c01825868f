"""The one unpatched run that every patched cone reuses.

``capture`` runs the target model once and keeps, per block, its input residual, the keyword
arguments the HF model passed it (masks, rotary tables, position ids) and the keys/values its
attention stored, with the activations at chosen hooks and the logits at the positions read.
When the metrics read no logits it stops after the last block they need; when they read few
positions, its last block runs those rows alone past the key/value update
(``probes.patching._engine.last_block``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lab.activations.hooks import StopForward, hook_point
from lab.errors import LabError
from lab.types import Tokens
from probes.patching._engine.last_block import (
    KV,
    attention_kv,
    hooked,
    keys_pass,
    query_pass,
    stopped_by,
    worth_splitting,
)
from probes.patching._engine.packing import KWARG_RULES, pack_lanes
from probes.patching.checks import check_eval

__all__ = ["TargetRun", "capture", "resid_pre", "unembed"]


# Block arguments with a batch axis first (masks, rotary tables, position ids).
BATCHED_KWARGS = frozenset({"attention_mask", "position_embeddings", "position_ids"})


@dataclass(frozen=True)
class TargetRun:
    """One unpatched run of the model that patches go into, with what its cones reuse."""

    model: Any  # the TransformerBridge that was run
    tokens: Tokens  # its input
    block_inputs: list[Float[Tensor, "batch pos d_model"]]  # residual into each block, to last
    block_kwargs: list[dict[str, Any]]  # named arguments the HF model passed each block
    keys: list[Tensor | None]  # per block: batch kv_head pos d_head (None: last, deferred)
    values: list[Tensor | None]  # per block: batch kv_head pos d_head
    logits: Float[Tensor, "batch read vocab"] | None  # the output at ``read`` (None: not run)
    read: tuple[int, ...]  # the positions whose logits are kept (or will be, when deferred)
    last: int  # the last block run (and kept): cones need no later one
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
                last=self.last,
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
                f"position range; add a rule for it to probes.patching._engine.packing.KWARG_RULES."
            )
    return named


def resid_pre(layer: int) -> str:
    """The hook of a block's input residual (what ``capture(defer=True)`` keeps at ``last``)."""
    return f"blocks.{layer}.hook_resid_pre"


def capture(
    model: Any,
    tokens: Tokens,
    hooks: Sequence[str] = (),
    read: Sequence[int] | None = None,
    last: int | None = None,
    defer: bool = False,
    attention_mask: Tensor | None = None,
) -> TargetRun:
    """Run ``model`` on ``tokens`` once, keeping what every downstream cone reuses up to block
    ``last`` (all), the activations at ``hooks`` (all positions; those past ``last`` are not
    run) and the logits at ``read`` (all positions; None: no logits, nothing past ``last``).

    ``defer``: stop at the last block's input, keeping it and the block's arguments, and run
    nothing of that block: no logits, and no keys or values for it (None). The caller runs it
    (``run_cone`` with the run as a baseline lane). Every hook asked for must come before it
    (the last block's own ``hook_resid_pre`` is its input). ``attention_mask``: padded
    prompts (``probes.patching.positions``); the blocks' arguments then carry it to every cone."""
    check_eval(model)
    n_layers, n_pos = int(model.cfg.n_layers), int(tokens.shape[1])
    last = n_layers - 1 if last is None or read is not None else last
    inputs: list[Tensor | None] = [None] * n_layers
    kwargs_by_block: list[dict | None] = [None] * n_layers
    deferred = StopForward("the caller runs the last block")  # raised at its input

    def recorder(i):
        def hook(module, args, kwargs):
            inputs[i] = args[0] if args else kwargs["hidden_states"]
            kwargs_by_block[i] = _named(module, args, kwargs)
            if defer and i == last:
                raise deferred

        return hook

    kv = KV()
    acts: dict[str, Tensor] = {}
    points = {h: hook_point(model, h) for h in hooks}

    def saver(name: str):
        def save(act, hook):
            acts[name] = act
            return act

        return save

    savers = [(h, saver(h)) for h in hooks]
    handles = [
        model.blocks[i].register_forward_pre_hook(recorder(i), with_kwargs=True)
        for i in range(last + 1)
    ]
    # With logits, the last block is run below; without, every block up to ``last`` here.
    stop = last if read is not None else last + 1 if last + 1 < n_layers else None
    ran = last if read is not None or defer else last + 1
    try:
        with (
            torch.inference_mode(),
            attention_kv(model, range(ran), kv),
            hooked(points, savers),
            stopped_by(deferred),
        ):
            masked = {} if attention_mask is None else {"attention_mask": attention_mask}
            model(tokens, stop_at_layer=None if defer else stop, **masked)
    finally:
        for h in handles:
            h.remove()
    if len(kv.seen) != ran or inputs[last] is None:
        raise LabError(
            f"Only {len(kv.seen)} of {ran} attentions handed over their keys and values; "
            "this model's attention does not support a key/value prefix, so cones cannot run."
        )
    logits, read = None, tuple(range(n_pos)) if read is None else tuple(read)
    if defer:
        if resid_pre(last) in points:
            acts[resid_pre(last)] = inputs[last]
        if missing := [h for h in hooks if h not in acts]:
            raise LabError(f"Hooks {missing} come after block {last}'s input; cannot defer it.")
    elif len(kv.seen) == last:
        with torch.inference_mode():
            saving = (points, savers, acts)
            resid = _last_block(model, inputs[last], kwargs_by_block[last], read, saving, kv)
            logits = unembed(model, resid)
    return TargetRun(
        model=model,
        tokens=tokens,
        block_inputs=inputs[: last + 1],
        block_kwargs=kwargs_by_block[: last + 1],
        keys=[kv.seen[i][0] if i in kv.seen else None for i in range(last + 1)],
        values=[kv.seen[i][1] if i in kv.seen else None for i in range(last + 1)],
        logits=logits,
        read=read if logits is not None or defer else (),
        acts=acts,
        points=points,
        last=last,
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
            query = whole.queries([(0, p) for p in read], x.shape[-1])
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
