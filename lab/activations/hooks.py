"""Choosing hook points by TransformerLens name or simple pattern, and probing what they hold.

A pattern is one of:
- an exact hook name: ``blocks.3.hook_resid_post`` (aliases and canonical names both work);
- a glob over hook names: ``blocks.*.hook_resid_post``, ``blocks.1?.attn.hook_z``;
- a name suffix, meaning that hook in every block: ``hook_resid_post``, ``resid_post``,
  ``attn.hook_z``, ``mlp_out``.
Several patterns are given as a list or one comma-separated string. An alias and the hook point
it names are one activation, so each hook point is kept once, under its TransformerLens alias.

``plan_hooks`` then runs two tiny probe forwards to learn the order in which the hooks fire (the
forward can stop after the last one) and each activation's per-token shape.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lab.errors import LabError, close_matches
from lab.runtime import device_of

if TYPE_CHECKING:  # for annotations only: importing transformer_lens takes seconds
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "HookPlan",
    "StopForward",
    "hook_point",
    "match_hooks",
    "plan_hooks",
    "split_patterns",
    "stopping",
]

_GLOB = frozenset("*?[")


class StopForward(Exception):
    """Raised inside a forward (by a hook) once the rest of it is not needed.

    ``stopping`` ends the forward cleanly where it was raised, as baukit's ``Trace(stop=True)``.
    """


@contextmanager
def stopping() -> Iterator[None]:
    """Run a forward that a hook may end early by raising ``StopForward``."""
    with suppress(StopForward):
        yield


def split_patterns(patterns: str | Sequence[str]) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (empty entries dropped)."""
    items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
    out = [p.strip() for p in items if p and p.strip()]
    if not out:
        raise LabError("No hooks given; name some, e.g. 'resid_post' or 'blocks.*.attn.hook_z'.")
    return out


def hook_point(model: TransformerBridge, name: str) -> HookPoint | None:
    """The hook point called ``name`` (a TransformerLens name or alias), or None if there is none.

    Follows the module path first (``blocks.3.hook_resid_pre`` is an attribute chain on a
    bridge), because ``model.hook_dict`` is rebuilt on every access; only names that are not a
    path to a hook point (aliases of other names) look there.
    """
    obj = model
    try:
        for part in name.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    except (AttributeError, IndexError, TypeError):
        obj = None
    if obj is not None and hasattr(obj, "add_hook") and hasattr(obj, "fwd_hooks"):
        return obj
    return model.hook_dict.get(name)


def _match_one(pattern: str, names: Sequence[str]) -> list[str]:
    if _GLOB & set(pattern):
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pattern in names:
        return [pattern]
    tail = pattern if pattern.startswith("hook_") or "." in pattern else f"hook_{pattern}"
    return [n for n in names if n.endswith("." + tail) or n == tail]


def match_hooks(patterns: str | Sequence[str], names: Sequence[str]) -> list[str]:
    """The names (in ``names`` order, no repeats) that ``patterns`` select; unknown ones raise."""
    chosen: set[str] = set()
    for pattern in split_patterns(patterns):
        found = _match_one(pattern, names)
        if not found:
            raise LabError(
                f"No hook matches {pattern!r}.{close_matches(pattern, names)} Give a "
                "TransformerLens hook name (blocks.0.hook_resid_post), a glob "
                "(blocks.*.attn.hook_z) or a suffix for every block (resid_post, attn.hook_z)."
            )
        chosen.update(found)
    return [n for n in names if n in chosen]


@dataclass(frozen=True)
class HookPlan:
    """Which hooks to capture, in firing order, and the per-token shape of each."""

    names: tuple[str, ...]  # hook names (TransformerLens spelling) in the order they fire
    shapes: dict[str, tuple[int, ...]]  # hook -> activation shape after (batch, pos)

    @property
    def last(self) -> str:
        """The hook after which the forward can stop."""
        return self.names[-1]

    def row_bytes(self, itemsize: int) -> int:
        """Bytes that one token row of every hook takes at ``itemsize`` bytes per value."""
        return sum(itemsize * _prod(s) for s in self.shapes.values())


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _resolve(model: TransformerBridge, patterns: str | Sequence[str]) -> list[str]:
    """Matched names, one per hook point (the alias where there is one), gated-off dropped."""
    hook_dict = model.hook_dict
    names = list(hook_dict)
    explicit = {p for p in split_patterns(patterns) if p in hook_dict}
    gated = getattr(model, "_gated_hook_reason", lambda _: None)
    by_point: dict[int, str] = {}
    for name in match_hooks(patterns, names):
        point = hook_dict[name]
        if name not in explicit and gated(point.name or name) is not None:
            continue  # a pattern skips hooks that never fire, as TransformerLens does
        kept = by_point.get(id(point))
        if kept is None or (kept == point.name and name != point.name):
            by_point[id(point)] = name  # prefer the alias (hook_resid_post over hook_out)
    if not by_point:
        raise LabError(f"The hooks {patterns!r} match only gated-off hook points; enable them.")
    return list(by_point.values())


_Fired = list[tuple[str, tuple[int, ...]]]  # (hook, activation shape) in firing order


def _probe(model: TransformerBridge, names: list[str], pos: int) -> _Fired:
    fired: _Fired = []

    def make(name: str):
        def record(act: Any, *, hook: Any) -> Any:
            t = act[0] if isinstance(act, tuple) else act
            fired.append((name, tuple(t.shape) if isinstance(t, torch.Tensor) else ()))
            if len({n for n, _ in fired}) == len(names):
                raise StopForward  # every hook seen: skip the rest of the forward
            return act

        return record

    tokens = torch.zeros(2, pos, dtype=torch.long, device=device_of(model))
    try:
        hooks = [(n, make(n)) for n in names]
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks), stopping():
            model(tokens, return_type=None)
    except ValueError as e:  # TransformerLens refuses gated-off hooks with a ValueError
        raise LabError(f"Cannot hook {names}: {e}") from e
    return fired


def plan_hooks(model: TransformerBridge, patterns: str | Sequence[str]) -> HookPlan:
    """Resolve ``patterns`` on ``model`` and probe their firing order and per-token shapes."""
    names = _resolve(model, patterns)
    runs = [_probe(model, names, pos) for pos in (3, 4)]
    order = [n for n, _ in runs[0]]
    missing = [n for n in names if n not in order]
    if missing:
        raise LabError(f"Hooks {missing} never fire in a forward; pick others.")
    twice = sorted({n for n in order if order.count(n) > 1})
    if twice:
        raise LabError(f"Hooks {twice} fire more than once per forward; pick others.")
    shapes: dict[str, tuple[int, ...]] = {}
    for (name, a), (_, b) in zip(runs[0], runs[1], strict=True):
        if a[:2] != (2, 3) or b[:2] != (2, 4) or a[2:] != b[2:]:
            raise LabError(
                f"Hook {name!r} is not one row per token (shape {a} for 2 x 3 tokens), e.g. "
                "an attention pattern; the store holds [token, ...] activations only."
            )
        shapes[name] = a[2:]
    return HookPlan(names=tuple(order), shapes=shapes)
