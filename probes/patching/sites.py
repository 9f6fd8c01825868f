"""Patching sites: where in a block an activation is replaced, by name.

A site kind (``resid_pre``, ``z``, ``k`` ...) names one TransformerLens hook per layer and says
whether it has a head axis. A ``Site`` is one concrete place: a kind at a layer, optionally one
head and one position (``None``: all of them). Every kind is patched by the same routine,
``patch_activation``: the activation is ``batch pos [head] d`` and a site writes the source's
values into its slice. Path patching (a sender's output into chosen receivers) fits as a further
kind whose hook is a receiver's input; nothing here assumes one hook per site.

A patch usually returns a new tensor from its hook. ``resid_mid`` cannot: on a TransformerBridge
its hook is the input of the sublayer after attention (``ln2.hook_in``; ``mlp.hook_in`` on
OLMo-2), and the block adds that sublayer's output to the tensor it already holds, so a returned
copy would change only the MLP's input. Kinds marked ``in_place`` write into the hook's own tensor
(the residual stream itself), and ``site_kind`` checks once per model that such a write reaches
the block's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Any
from weakref import WeakKeyDictionary

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from lab.activations.hooks import hook_point
from lab.errors import LabError, close_matches
from lab.runtime import device_of

__all__ = [
    "SITE_KINDS",
    "UNIT_SITES",
    "Site",
    "SiteKind",
    "enumerate_sites",
    "patch_activation",
    "patching_hooks",
    "site_kind",
]


@dataclass(frozen=True)
class SiteKind:
    """One kind of patchable activation: its hook and whether it is split by head."""

    name: str  # the registry key, e.g. "resid_pre"
    hook: str  # hook name template with {layer}, e.g. "blocks.{layer}.hook_resid_pre"
    heads: str | None = None  # "q" (query heads) or "kv" (key/value heads); None: no head axis
    spreads: bool = False  # a change at one position reaches later ones within its own block
    description: str = ""  # one line for error messages and docs
    in_place: bool = False  # the block keeps the hook's tensor: patches write into it, not a copy

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    def n_heads(self, model: Any) -> int:
        """Heads along this kind's head axis in ``model`` (0 when it has none)."""
        if self.heads is None:
            return 0
        cfg = model.cfg
        if self.heads == "kv":
            return int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        return int(cfg.n_heads)


def _kinds(*kinds: SiteKind) -> dict[str, SiteKind]:
    return {k.name: k for k in kinds}


SITE_KINDS: dict[str, SiteKind] = _kinds(
    SiteKind("resid_pre", "blocks.{layer}.hook_resid_pre", None, True, "residual into a block"),
    SiteKind(
        "resid_mid",
        "blocks.{layer}.hook_resid_mid",
        None,
        False,
        "residual stream between attention and MLP",
        in_place=True,
    ),
    SiteKind("resid_post", "blocks.{layer}.hook_resid_post", None, False, "residual out"),
    SiteKind("attn_out", "blocks.{layer}.hook_attn_out", None, False, "attention output"),
    SiteKind("mlp_out", "blocks.{layer}.hook_mlp_out", None, False, "MLP output"),
    SiteKind("z", "blocks.{layer}.attn.hook_z", "q", False, "each head's output"),
    SiteKind("q", "blocks.{layer}.attn.hook_q", "q", False, "each head's queries"),
    SiteKind("k", "blocks.{layer}.attn.hook_k", "kv", True, "each kv head's keys"),
    SiteKind("v", "blocks.{layer}.attn.hook_v", "kv", True, "each kv head's values"),
)


def site_kind(name: str, model: Any | None = None) -> SiteKind:
    """The site kind called ``name``; with ``model``, also check that its hook exists there."""
    if name not in SITE_KINDS:
        raise LabError(
            f"Unknown patching site {name!r}; known: {', '.join(SITE_KINDS)}."
            f"{close_matches(name, SITE_KINDS)}"
        )
    kind = SITE_KINDS[name]
    if model is not None:
        hook = kind.hook_name(0)
        if hook_point(model, hook) is None:
            arch = getattr(model.cfg, "architecture", None) or type(model).__name__
            raise LabError(
                f"Site {name!r} ({kind.description}) does not exist in {arch}: it has no hook "
                f"{hook!r}. Pick another site kind; this model's block 0 hooks are: "
                f"{', '.join(sorted(h for h in model.hook_dict if h.startswith('blocks.0.')))}."
            )
        if kind.in_place:
            _check_in_place(model, kind)
    return kind


_IN_PLACE_OK: WeakKeyDictionary[Any, set[str]] = WeakKeyDictionary()  # model -> kinds checked


def _check_in_place(model: Any, kind: SiteKind) -> None:
    """Refuse ``kind`` on ``model`` unless writing into its hook's tensor sets the residual
    stream: block 0 on two tokens with the residual there zeroed in place must output just its
    MLP's contribution (``hook_resid_post == hook_mlp_out``). Checked once per model."""
    if kind.name in _IN_PLACE_OK.get(model, set()):
        return
    seen: dict[str, Tensor] = {}

    def zero(act: Tensor, hook: Any) -> Tensor:
        act.zero_()
        return act

    def keep(name: str):
        return lambda act, hook: seen.setdefault(name, act.detach().clone())

    hooks = [(kind.hook_name(0), zero)]
    hooks += [(f"blocks.0.hook_{n}", keep(n)) for n in ("mlp_out", "resid_post")]
    tokens = torch.zeros(1, 2, dtype=torch.long, device=device_of(model))
    with torch.inference_mode():
        model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=1)
    if set(seen) != {"mlp_out", "resid_post"} or not torch.allclose(
        seen["resid_post"].float(), seen["mlp_out"].float(), atol=1e-5, rtol=1e-3
    ):
        arch = getattr(model.cfg, "architecture", None) or type(model).__name__
        raise LabError(
            f"Site {kind.name!r} ({kind.description}) cannot be patched in {arch}: writing into "
            f"its hook {kind.hook_name(0)!r} does not reach the block's residual stream. Patch "
            "attn_out instead (the residual there is the block's input plus attn_out)."
        )
    _IN_PLACE_OK.setdefault(model, set()).add(kind.name)


# A component's unit kind -> the site of its row in a result table (a key/value group has no
# activation of its own: its rows say ``kv_group``, with the group in ``head``).
UNIT_SITES: dict[str, str] = {"head": "z", "mlp": "mlp_out", "kv_group": "kv_group"}


def _field(row: Any, name: str) -> Any:
    """A row's ``name`` field, None when it has none: a Series or dict by key (a Series' ``head``
    attribute is its method), a namedtuple by attribute."""
    if isinstance(row, pd.Series | Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _optional(x: Any) -> int | None:
    """None for a missing value (None, NaN or pandas' <NA>), else the int."""
    return None if x is None or pd.isna(x) else int(x)


@dataclass(frozen=True)
class Site:
    """One place to patch: a kind at a layer, one head or all, one position or all."""

    kind: str  # a key of SITE_KINDS
    layer: int  # block index
    head: int | None = None  # head index (kinds with heads); None: all heads / no head axis
    position: int | None = None  # token position; None: every position

    @classmethod
    def from_row(cls, row: Any) -> Site:
        """The site of a table row (a namedtuple from ``itertuples`` or a Series): its ``site``
        (or a component table's ``kind``: head, mlp, kv_group), ``layer``, ``head`` and, when
        present, ``position``; a missing head or position (None, NaN, <NA>) is None."""
        site = _field(row, "site")
        if site is None:
            site = UNIT_SITES[_field(row, "kind")]
        layer, head, position = (_field(row, k) for k in ("layer", "head", "position"))
        return cls(str(site), int(layer), _optional(head), _optional(position))

    @cached_property
    def hook(self) -> str:
        return SITE_KINDS[self.kind].hook_name(self.layer)

    @property
    def first_position(self) -> int:
        """The earliest position the patch can change (the start of its downstream cone)."""
        return 0 if self.position is None else self.position


def _axis(name: str, chosen: Iterable[int] | None, size: int, all_value: bool) -> list[int | None]:
    if not all_value:
        return [None]
    values = list(range(size)) if chosen is None else list(chosen)
    bad = [v for v in values if not 0 <= v < size]
    if bad:
        raise LabError(f"{name} {bad} out of range: this sweep has {size} {name}s (0..{size - 1}).")
    return values


def enumerate_sites(
    kind: str,
    model: Any,
    n_pos: int,
    *,
    by_position: bool,
    by_head: bool = True,
    layers: Iterable[int] | None = None,
    heads: Iterable[int] | None = None,
    positions: Iterable[int] | None = None,
) -> Iterator[Site]:
    """Every site of a sweep: layers x heads (kinds with heads, unless ``by_head`` is off) x
    positions (when ``by_position``), in layer-major order."""
    k = site_kind(kind, model)
    n_heads = k.n_heads(model)
    layer_list = _axis("layer", layers, int(model.cfg.n_layers), True)
    head_list = _axis("head", heads, n_heads, bool(n_heads) and by_head)
    pos_list = _axis("position", positions, n_pos, by_position)
    for layer, head, pos in product(layer_list, head_list, pos_list):
        yield Site(kind, int(layer), head, pos)


def patch_activation(
    act: Float[Tensor, "batch pos ..."],
    source: Float[Tensor, "batch src_pos ..."],
    site: Site,
    offset: int = 0,
    *,
    positions: Sequence[int] | None = None,
) -> None:
    """Write ``source``'s values at ``site`` into ``act`` in place.

    ``act`` holds positions ``offset..`` of the run (or the listed ``positions``: the rows of a
    downstream cone), ``source`` all positions; both are ``batch pos d`` or ``batch pos head d``.
    """
    head = slice(None) if site.head is None else site.head
    rows = list(range(offset, offset + act.shape[1]) if positions is None else positions)
    if site.position is None:
        act[:, :, head] = source[:, rows, head]
    else:
        act[:, rows.index(site.position), head] = source[:, site.position, head]


def patching_hooks(sites: Iterable[Site], cache: Any) -> list[tuple[str, Any]]:
    """``fwd_hooks`` for ``run_with_hooks`` that write ``cache``'s activations (a full run of
    the source, all positions) at every site; one hook per hook point."""
    sites = list(sites)

    def make(name: str):
        here = [s for s in sites if s.hook == name]
        in_place = any(SITE_KINDS[s.kind].in_place for s in here)  # decided once, not per call

        def hook(act: Tensor, hook: Any) -> Tensor:
            if not in_place:
                act = act.clone()  # else the residual itself: see the module docstring
            for s in here:
                patch_activation(act, cache[name].to(act.device), s, 0)
            return act

        return hook

    return [(h, make(h)) for h in sorted({s.hook for s in sites})]
