"""The last block of a patched run: keys and values for every row, the rest only where read.

Below the last block a row feeds later blocks; in the last one a row that no metric reads
matters only through the keys and values that the read rows attend to. The block then runs
twice: ``keys_pass`` on every row, stopped as soon as its attention hands over its keys and
values (the ``past_key_values.update`` call that every TransformerBridge attention makes), and
``query_pass`` on the read rows alone, each a lane of one row (``Lanes.queries``) whose keys are
the cached run's and its own lane's from the first pass. The bridge's own block does the
arithmetic in both passes; nothing here depends on the architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lab.activations.hooks import StopForward
from lab.errors import LabError
from probes.patching._engine.packing import KWARG_RULES, Lanes

__all__ = [
    "KV",
    "Adapter",
    "attention_kv",
    "hooked",
    "keys_pass",
    "query_pass",
    "stopped_by",
    "worth_splitting",
]

KeysValues = tuple[Tensor, Tensor]  # (keys, values): (lane batch) kv_head key d_head each


@contextmanager
def stopped_by(stop: StopForward) -> Iterator[None]:
    """Run a forward that ``stop`` may end (raised by one of its hooks), as
    ``lab.activations.hooks.stopping`` does, but only that one: another ``StopForward`` (an
    outer forward's, whose hook fired inside this one) goes on to its own ``with``."""
    try:
        yield
    except StopForward as e:
        if e is not stop:
            raise


class KV:
    """What bridge attentions call ``update(k, v, layer)`` on: it records what it is handed and
    returns the keys to attend to: ``own`` (keys computed earlier) in place of the new ones if
    given, after ``prefix`` (the cached run's) if given. A prefix may also be a function of the
    keys and values handed over (the cached run's made in the same call, as one of its lanes).
    ``stop``: end the block right there (``KV.stop``, a ``StopForward``)."""

    def __init__(
        self,
        prefix: Mapping[int, KeysValues | Callable[[Tensor, Tensor], KeysValues]] | None = None,
        own: Mapping[int, KeysValues] | None = None,
        stop: bool = False,
    ):
        self.prefix, self.own = prefix, own
        self.stop = StopForward("keys and values handed over") if stop else None
        self.seen: dict[int, KeysValues] = {}

    def update(self, k: Tensor, v: Tensor, layer: int, *args, **kwargs) -> KeysValues:
        self.seen[layer] = (k, v)
        if self.stop is not None:
            raise self.stop
        if self.own is not None:
            k, v = self.own[layer]
        if self.prefix is not None:
            pre = self.prefix[layer]
            pk, pv = pre(k, v) if callable(pre) else pre
            k, v = torch.cat([pk, k], dim=-2), torch.cat([pv, v], dim=-2)
        return k, v


@contextmanager
def attention_kv(model: Any, layers: Sequence[int], kv: KV) -> Iterator[None]:
    """Hand ``kv`` to the attentions of ``layers`` as their past_key_values."""

    def inject(module, args, kwargs):
        return args, {**kwargs, "past_key_values": kv}

    handles = [
        model.blocks[i].attn.register_forward_pre_hook(inject, with_kwargs=True) for i in layers
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def hooked(points: Mapping[str, Any], fwd_hooks: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """TransformerLens forward hooks (name, fn) on resolved hook points, removed on exit.

    Like ``model.hooks`` without resolving names again on every call (a cone run is short).
    """
    added = []
    try:
        for name, fn in fwd_hooks:
            point = points[name]
            added.append((point, point.add_hook(fn, dir="fwd")))
        yield
    finally:
        for point, handle in added:
            handle.hook.remove()
            point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]


class Adapter:
    """Block keyword arguments adapted to one layout (``KWARG_RULES``), each value once: blocks
    often share one mask."""

    def __init__(self, lanes: Lanes):
        self.lanes = lanes
        self._done: dict[tuple[str, int], Any] = {}

    def __call__(self, kwargs: Mapping[str, Any], n_lanes: int | None = None) -> dict[str, Any]:
        """``kwargs`` for the first ``n_lanes`` lanes (all)."""
        n_lanes = self.lanes.n_lanes if n_lanes is None else n_lanes
        out = {}
        for name, value in kwargs.items():
            key = (name, id(value))
            if key not in self._done:
                rule = KWARG_RULES.get(name)
                self._done[key] = rule(value, self.lanes) if rule else value
            out[name] = self.lanes.first(self._done[key], n_lanes)
        return out


def worth_splitting(rows: int, kept: int, d_model: int) -> bool:
    """Whether two passes over a last block beat one: the keys pass costs about a quarter of a
    block per row and the second block call a fixed overhead (about 16k row-units of d_model)."""
    return 2 * kept <= rows and (rows - kept) * d_model >= 2**14


def keys_pass(
    model: Any, i: int, hidden: Tensor, kwargs: Mapping[str, Any], prefix: KeysValues | None
) -> KeysValues:
    """Block ``i`` on ``hidden`` (with ``kwargs`` as given) up to its attention's key/value
    update: the keys and values of every row. Hooks before that point fire, later ones do not."""
    kv = KV(None if prefix is None else {i: prefix}, stop=True)
    with attention_kv(model, [i], kv), stopped_by(kv.stop):
        model.blocks[i](hidden, **kwargs)
    if i in kv.seen:
        return kv.seen[i]
    raise LabError(
        f"Block {i}'s attention never handed over its keys and values; this model's attention "
        "does not support a key/value prefix, so its last block cannot be split."
    )


def query_pass(
    model: Any,
    i: int,
    hidden: Float[Tensor, "lb row d_model"],
    query: Lanes,
    kwargs: Mapping[str, Any],
    keys: KeysValues,
    prefix: KeysValues | None,
) -> Float[Tensor, "lb picked d_model"]:
    """Block ``i`` on the rows of ``hidden`` that the query layout ``query`` picks (hooks must
    be built for it), attending to ``keys`` (every row's, from ``keys_pass``) after ``prefix``
    (the cached run's, tiled per lane, when the layout has them)."""
    batch, (n_lanes, width) = query.batch, query.picked.shape
    by_lane = hidden.view(-1, batch, *hidden.shape[1:])
    rows = by_lane[query.source[:, None], :, query.picked].transpose(1, 2)  # lane batch row d
    rows = rows.reshape(n_lanes * batch, width, hidden.shape[-1])

    def per_query_lane(x: Tensor) -> Tensor:  # (full lane, batch) ... -> (query lane, batch) ...
        return x.view(-1, batch, *x.shape[1:])[query.source].reshape(-1, *x.shape[1:])

    own = tuple(per_query_lane(x) for x in keys)
    kv = KV(None if prefix is None else {i: tuple(map(per_query_lane, prefix))}, own={i: own})
    with attention_kv(model, [i], kv):
        out = model.blocks[i](rows, **Adapter(query)(kwargs))
    return out[0] if isinstance(out, tuple) else out
