"""Component swapping (function patching): run one model of a pair with one component computed by
the other's weights, on its own inputs, for many components; which components' *computation*
changed (locus), where cross-model activation patching says what the difference flows through
(mediation).

Granularity (``probes.patching.units``):

- a head (``L2H5``): its query, key and value slices (rows of W_Q, W_K, W_V and their biases for
  that head) and its output slice (the W_O columns that read it). The output projection's bias
  belongs to no head and is never swapped. Under grouped-query attention a head's key/value head
  is shared by its group, so a head swap takes the donor's query and output slices and keeps the
  receiver's keys and values; ``unit="kv_group"`` swaps a key/value head (``L1G0``) with every
  query head that reads it, whole;
- an MLP (``L3.mlp``): all of its weights (gate, in and out projections, and their biases);
- norms: never swapped. Each block's norms (pre-attention, pre-MLP and Gemma-2's post-norms) stay
  the receiver's, so a head or an MLP is the donor's on the receiver's own normalized inputs.

``into="tuned"`` gives the tuned model the base's component: ``share`` is the part of the tuned
model's departure (metric tuned minus base) the swap removes. ``into="base"`` gives the base the
tuned one's: the part it induces. The result equals, to float rounding, a normal forward of a
deep copy of the receiver with those parameter slices overwritten (tested on GPT-2, GQA Llama
and Gemma-2).

Speed: a swap at layer L changes nothing before block L. The receiver runs once
(``probes.patching._engine.capture``); each layer's swapped attention or MLP outputs come from two
small forwards
of that block alone (``probes.patching._engine.swap_block``); each swap is then an activation patch
of
``hook_attn_out`` or ``hook_mlp_out`` at L, recomputed from L on by the exact cone runner
(``probes.patching._engine.cone``), one unit of every layer per forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.runtime import device_of
from lab.types import Tokens
from probes.patching._engine.capture import capture
from probes.patching._engine.cone import run_cone
from probes.patching._engine.swap_block import donor_acts, input_hooks, swapped_outputs
from probes.patching.bound import BoundMetric
from probes.patching.checks import check_eval, check_prompts, hook_layer
from probes.patching.metrics import Metric, check_names
from probes.patching.positions import check_mask, mask_kwargs
from probes.patching.sites import Site
from probes.patching.table import result_table
from probes.patching.units import Component, all_components, parse_components

__all__ = ["SwapConfig", "check_swappable", "swap_components"]


@dataclass(frozen=True)
class SwapConfig:
    """How a swap sweep is run (never what it computes)."""

    units_per_pass: int = 16  # units of one layer whose swapped outputs are made in one forward
    progress: bool = True  # a tqdm bar over the cone runs


def check_swappable(receiver: Any, donor: Any) -> None:
    """Refuse models whose parameters differ in name or shape (a slice of one cannot replace
    the other's), before any forward."""
    if receiver is donor:
        return
    mine = {n: tuple(p.shape) for n, p in receiver.named_parameters()}
    theirs = {n: tuple(p.shape) for n, p in donor.named_parameters()}
    if mine == theirs:
        return
    names = sorted(set(mine) | set(theirs))
    bad = [n for n in names if mine.get(n) != theirs.get(n)]
    n = bad[0]
    raise LabError(
        f"The two models' shapes differ ({len(bad)} parameters, e.g. {n}: "
        f"{mine.get(n, 'absent')} vs {theirs.get(n, 'absent')}); component swapping moves "
        "parameter slices between models of one architecture and size, so pair checkpoints "
        "of the same shape."
    )


def swap_components(
    pair: Any,
    tokens: Tokens,
    metrics: Metric | Sequence[Metric],
    components: Iterable[str | Component] | None = None,
    *,
    into: str = "tuned",
    unit: str = "head",
    config: SwapConfig | None = None,
    attention_mask: Tensor | None = None,
) -> pd.DataFrame:
    """Swap each component's weights from the other model into model ``into``; one row per
    (component, metric), in ``probes.patching.table.COLUMNS`` (``to_grid``, the heatmaps and the
    sweep's plumbing read it as a patching table).

    ``pair``: a ``lab.ModelPair`` (``pair.models["base"|"tuned"]``, eval mode). ``tokens``:
    ``batch pos`` prompts, run through both models. ``metrics``: patching metrics
    (``probes.patching.metrics``; names must differ). ``components``: names (``"L2H5"``, ``"L1G0"``,
    ``"L3.mlp"``) or ``Component``s; None: every ``unit`` (``"head"`` or ``"kv_group"``) and
    every MLP. ``attention_mask``: padded prompts, as in ``probes.patching.patch.patch``.

    Rows: ``site`` is ``z`` (a head), ``kv_group`` (``head``: the group) or ``mlp_out``;
    ``value`` the swapped run's metric (batch mean), ``target`` the receiver's own, ``source``
    the donor's, ``share`` = (value - target) / (source - target).
    """
    if into not in pair.models:
        raise LabError(f"into must be one of {sorted(pair.models)}, not {into!r}.")
    receiver = pair.models[into]
    donor = pair.models["base" if into == "tuned" else "tuned"]
    config = config or SwapConfig()
    check_eval(receiver, donor)
    check_swappable(receiver, donor)
    comps = all_components(receiver, unit) if components is None else None
    if comps is None:
        comps = parse_components(receiver, components)
    if not comps:
        raise LabError("No components to swap; name some, e.g. ['L0H1', 'L1.mlp'], or pass None.")
    check_prompts(tokens, tokens)
    metrics = [metrics] if isinstance(metrics, Metric) else list(metrics)
    check_names(metrics)
    mask = check_mask(attention_mask, tokens)
    n_pos, n_layers = tokens.shape[1], int(receiver.cfg.n_layers)
    bound = [BoundMetric(m, n_pos, mask) for m in metrics]
    reads = {
        name: sorted({p for m in bound if m.reads == name for p in m.positions})
        for name in dict.fromkeys(m.reads for m in bound)
    }
    for m in bound:
        m.index(reads[m.reads])
    layers = {r: n_layers - 1 if r == "logits" else hook_layer(receiver, r) for r in reads}
    last = max(layers.values())
    reached = [c for c in comps if c.layer <= last]
    used = sorted({c.layer for c in reached})
    hooks = {c.hook for c in reached} | (set(reads) - {"logits"})
    hooks = sorted(hooks | {h for layer in used for h in input_hooks(layer)})
    logits = reads.get("logits")
    run = capture(receiver, tokens, hooks, logits, last, False, mask)
    device = run.tokens.device

    def unpatched(logits_, acts) -> list[float]:
        return [
            m(logits_ if m.reads == "logits" else acts[m.reads][:, reads[m.reads]]) for m in bound
        ]

    base_target = unpatched(run.logits, run.acts)
    source_hooks = set(reads) - {"logits"}
    with torch.inference_mode():
        src_logits, cache = donor.run_with_cache(
            tokens.to(device_of(donor)),
            names_filter=lambda n: n in source_hooks,
            **mask_kwargs(mask, device_of(donor)),
        )
    src_acts = {h: cache[h].to(device) for h in source_hooks}
    base_source = unpatched(src_logits[:, logits].to(device) if logits else None, src_acts)

    values = _swept(receiver, donor, run, reached, bound, reads, layers, config)
    for c in comps:
        values.setdefault(c.site, base_target)  # past what is read: changes nothing
    return result_table(
        [c.site for c in comps], [m.name for m in bound], values, base_target, base_source
    )


def _rounds(comps: Sequence[Component]) -> list[list[Component]]:
    """Components into cone runs holding at most one attention unit and one MLP of each layer
    (a run patches each hook with one source)."""
    by_hook: dict[str, list[Component]] = {}
    for c in comps:
        by_hook.setdefault(c.hook, []).append(c)
    n = max(len(v) for v in by_hook.values())
    return [[v[r] for v in by_hook.values() if r < len(v)] for r in range(n)]


def _swept(receiver, donor, run, comps, bound, reads, layers, config) -> dict:
    """Every component's metrics, from its swapped block outputs and one cone run per round."""
    values: dict = {}
    if not comps:
        return values
    rounds = _rounds(comps)
    donors = {layer: donor_acts(donor, run, layer) for layer in sorted({c.layer for c in comps})}
    step = max(1, config.units_per_pass)
    chunks = [rounds[i : i + step] for i in range(0, len(rounds), step)]
    bar = tqdm(total=len(rounds), desc="swapping", leave=False, disable=not config.progress)
    with torch.inference_mode():
        for chunk in chunks:
            outputs: dict[Component, Tensor] = {}
            by_layer: dict[int, list[Component]] = {}
            for c in (c for r in chunk for c in r):
                by_layer.setdefault(c.layer, []).append(c)
            for layer, units in by_layer.items():
                made = swapped_outputs(receiver, donor, run, layer, units, donors[layer])
                outputs.update(zip(units, made, strict=True))
            for group in chunk:
                sites = [c.site for c in group]
                cone_sites = [_cone_site(c) for c in group]
                sources = {c.hook: outputs[c] for c in group}
                got, _ = run_cone(run, cone_sites, sources, reads, layers)
                scores = [m.many(got[m.reads]) for m in bound]
                for g, site in enumerate(sites):
                    values[site] = [by_metric[g] for by_metric in scores]
                bar.update(1)
    bar.close()
    return values


def _cone_site(c: Component) -> Site:
    """The activation patch a swap is: its block's attention or MLP output, every position."""
    return Site("mlp_out" if c.kind == "mlp" else "attn_out", c.layer)
