"""The units of component swapping: a head, a key/value group or an MLP, named like ``L2H5``,
``L1G0`` and ``L3.mlp``; parsed from names, enumerated for a model, and checked against it.

A unit is which parameter slices move between the models (``probes.patching.swap`` for the
granularity):

- ``head`` (``L2H5``): head 5's query slice and its output-projection slice; without grouped-query
  attention also its own key and value slices (its key/value head is its own). With GQA the shared
  key/value head stays the receiving model's own.
- ``kv_group`` (``L1G0``): key/value head 0 with every query head that reads it: their query,
  key, value and output slices. Without GQA a group is one head, so ``L1G0`` equals ``L1H0``.
- ``mlp`` (``L3.mlp``; ``L3 MLP``, the organism's and ``probes.components.classify``'s
  spelling, is read too): all its weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError, close_matches
from probes.patching.sites import UNIT_SITES, Site

__all__ = [
    "SITE_UNITS",
    "UNITS",
    "Component",
    "all_components",
    "component_name",
    "parse_components",
]

UNITS = ("head", "kv_group")  # the attention units a sweep can use (MLPs are always whole)

_NAME = re.compile(r"^L(\d+)(?:H(\d+)|G(\d+)|[. ]mlp)$", re.IGNORECASE)

# A result table's site -> the unit kind of its component (z: head, mlp_out: mlp, kv_group).
SITE_UNITS: dict[str, str] = {site: unit for unit, site in UNIT_SITES.items()}


def component_name(kind: str, layer: int, head: int | None = None) -> str:
    """A component's name: ``L2H5`` (head 5 of block 2), ``L1G0`` (key/value group 0 of block 1)
    or ``L3.mlp``. ``kind`` is a unit kind (``head``, ``kv_group``, ``mlp``) or the ``site`` of a
    result table's row (``z``, ``kv_group``, ``mlp_out``)."""
    unit = SITE_UNITS.get(kind, kind)
    if unit == "mlp":
        return f"L{int(layer)}.mlp"
    if unit not in UNITS:
        known = ", ".join(dict.fromkeys([*UNIT_SITES, *SITE_UNITS]))
        raise LabError(f"No component kind {kind!r}; known: {known}.")
    return f"L{int(layer)}{'H' if unit == 'head' else 'G'}{int(head)}"


@dataclass(frozen=True)
class Component:
    """One unit whose parameters are swapped: a head, a key/value group or an MLP of a layer."""

    kind: str  # "head", "kv_group" or "mlp"
    layer: int  # block index
    index: int | None = None  # head or key/value head index; None for an MLP

    @property
    def name(self) -> str:
        """``L2H5``, ``L1G0`` or ``L3.mlp`` (``component_name``)."""
        return component_name(self.kind, self.layer, self.index)

    @property
    def site(self) -> Site:
        """Its row in a result table: ``z`` for a head and ``mlp_out`` for an MLP (as
        ``Site.from_row`` of a classify row), ``kv_group`` (head: the group) for a
        group."""
        return Site(UNIT_SITES[self.kind], self.layer, self.index)

    @property
    def hook(self) -> str:
        """The block hook whose value the swap changes (attention's or the MLP's output)."""
        return f"blocks.{self.layer}.hook_{'mlp' if self.kind == 'mlp' else 'attn'}_out"

    def query_heads(self, n_heads: int, n_kv: int) -> list[int]:
        """The query heads whose query and output slices move (none for an MLP)."""
        if self.kind == "mlp":
            return []
        if self.kind == "head":
            return [int(self.index)]
        per = n_heads // n_kv
        return list(range(self.index * per, (self.index + 1) * per))

    def kv_heads(self, n_heads: int, n_kv: int) -> list[int]:
        """The key/value heads whose key and value slices move (none for an MLP, and none for a
        head under grouped-query attention, whose key/value head is shared)."""
        if self.kind == "mlp" or (self.kind == "head" and n_kv != n_heads):
            return []
        return [int(self.index)]

    def __str__(self) -> str:
        return self.name


def _shape(model: Any) -> tuple[int, int, int]:
    cfg = model.cfg
    n_heads = int(cfg.n_heads)
    return int(cfg.n_layers), n_heads, int(getattr(cfg, "n_key_value_heads", None) or n_heads)


def all_components(model: Any, unit: str = "head") -> list[Component]:
    """Every attention unit of kind ``unit`` and every MLP, layer by layer (units, then MLP)."""
    if unit not in UNITS:
        raise LabError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}.")
    n_layers, n_heads, n_kv = _shape(model)
    count = n_heads if unit == "head" else n_kv
    return [
        c
        for layer in range(n_layers)
        for c in [*(Component(unit, layer, i) for i in range(count)), Component("mlp", layer)]
    ]


def _valid_names(model: Any) -> str:
    """The valid names, all of them when few, else as ranges."""
    n_layers, n_heads, n_kv = _shape(model)
    names = [c.name for c in all_components(model, "head")]
    names += [c.name for c in all_components(model, "kv_group") if c.kind != "mlp"]
    if len(names) <= 60:
        return ", ".join(names)
    last = n_layers - 1
    return (
        f"L0H0..L{last}H{n_heads - 1}, L0G0..L{last}G{n_kv - 1} and L0.mlp..L{last}.mlp "
        f"({n_layers} layers, {n_heads} heads, {n_kv} key/value heads per layer)"
    )


def parse_components(model: Any, components: Iterable[str | Component]) -> list[Component]:
    """Components from names or ``Component``s, checked to exist in ``model``; an unknown one
    is refused with the valid names."""
    n_layers, n_heads, n_kv = _shape(model)
    out = []
    for c in components:
        comp = c if isinstance(c, Component) else _parse(str(c).strip())
        limit = {"head": n_heads, "kv_group": n_kv, "mlp": 1}.get(comp.kind if comp else "")
        ok = comp is not None and limit is not None and 0 <= comp.layer < n_layers
        if ok and comp.kind != "mlp":
            ok = comp.index is not None and 0 <= comp.index < limit
        if not ok:
            raise LabError(
                f"No component {str(c)!r} in this model.{close_matches(str(c), _all(model))} "
                f"Valid names: {_valid_names(model)}."
            )
        out.append(comp)
    if len(set(out)) != len(out):
        raise LabError(f"A component is named twice in {[x.name for x in out]}; name each once.")
    return out


def _all(model: Any) -> Sequence[str]:
    return [c.name for u in UNITS for c in all_components(model, u)]


def _parse(name: str) -> Component | None:
    found = _NAME.match(name)
    if found is None:
        return None
    layer, head, group = found.groups()
    if head is not None:
        return Component("head", int(layer), int(head))
    if group is not None:
        return Component("kv_group", int(layer), int(group))
    return Component("mlp", int(layer))
