"""Activation patching within one model and across the two models of a pair: exact and batched.

One routine, ``patch``: run the *target* model on its prompts with one site's activation replaced
by the *source* run's, for many sites, and score each patched run with metrics. Within a model,
``denoise`` patches clean activations into the corrupted run and ``noise`` the reverse; across a
pair, ``cross_model`` patches the base model's activation into the tuned model on the same prompt
(what the tuned model loses without it) or the tuned one's into the base (what it induces).

Speed comes from exactness, not approximation (``probes.patching._engine.cone``,
``probes.patching._engine.packing``): the target
(and, within one model, the source) runs once; a patch at layer L and position p is recomputed
only in blocks L.. and at positions p.. (in the last block only where the metrics read), many
sites' cones packed into one forward (``rows_per_forward``); only the positions the metrics read
are unembedded, and a patch that writes exactly what is already there is not run at all. When
every site's activation is known before the last block and the metrics read logits, the capture
stops there and the unpatched runs' last block joins the first cone forward as lanes of its own.
Results equal a full forward per site (as ``transformer_lens.patching`` does) to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.runtime import device_of
from lab.types import Tokens
from probes.patching._engine.capture import capture, resid_pre
from probes.patching._engine.cone import cone_positions, run_cone
from probes.patching.bound import BoundMetric, read_values
from probes.patching.checks import as_sites, check_eval, check_prompts, hook_layer
from probes.patching.metrics import Metric, check_names
from probes.patching.positions import check_mask, mask_kwargs
from probes.patching.sites import Site, patching_hooks
from probes.patching.table import result_table

__all__ = ["PatchConfig", "cross_model", "denoise", "noise", "patch", "patch_jointly"]


@dataclass(frozen=True)
class PatchConfig:
    """How a sweep is run (never what it computes)."""

    rows_per_forward: int = 1024  # cone rows (prompt positions summed over sites) per forward
    skip_unchanged: bool = True  # a patch that writes the target's own values is not run
    progress: bool = True  # a tqdm bar over the cone runs


def _unchanged(
    sites: Sequence[Site], target: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
) -> set[Site]:
    """The sites whose patch writes exactly what is already there (it changes nothing)."""
    same = {  # per hook, pos [head]: whether target and source agree on every prompt and unit
        h: (target[h] == source[h]).all(0).all(-1).cpu().numpy() for h in {s.hook for s in sites}
    }
    out = set()
    for s in sites:
        cell = same[s.hook] if s.position is None else same[s.hook][s.position]
        if (cell if s.head is None else cell[..., s.head]).all():
            out.add(s)
    return out


def _groups(todo: list[tuple[Site, int]], rows_per_forward: int) -> list[list[Site]]:
    """Sites (in layer order, with their cone rows) into forwards of at most ``rows_per_forward``
    rows: all in one when they fit (overhead-bound), else by layer (compute-bound)."""
    if sum(rows for _, rows in todo) <= rows_per_forward:
        return [[s for s, _ in todo]] if todo else []
    groups: list[list[Site]] = []
    total = 0
    for s, rows in todo:
        if not groups or total + rows > rows_per_forward or groups[-1][0].layer != s.layer:
            groups.append([])
            total = 0
        groups[-1].append(s)
        total += rows
    return groups


def patch(
    target_model: Any,
    target_tokens: Tokens,
    source_model: Any,
    source_tokens: Tokens,
    sites: str | Iterable[Site],
    metrics: Metric | Sequence[Metric],
    *,
    by_position: bool = True,
    config: PatchConfig | None = None,
    attention_mask: Tensor | None = None,
) -> pd.DataFrame:
    """Patch each site's source activation into the target run; one table row per site, metric.

    ``sites`` is a list of ``Site`` or a site kind name (every layer, every head for kinds with
    heads, and every position when ``by_position``). ``value`` is the patched metric (batch mean),
    ``target`` and ``source`` the unpatched runs' values, ``share`` the part of the gap from
    target to source that the patch closes: (value - target) / (source - target). ``metric`` is
    each metric's ``name`` (its ``label``; names must differ). ``to_grid`` lays a table out as
    ``transformer_lens.patching`` does (layer x position, layer x head ...).

    ``attention_mask`` (``batch pos``, 1: a real token): prompts of different lengths padded on
    one side, the same for both prompt sets (``probes.patching.positions``). Site positions are
    array columns; metric positions count within each prompt (-1: its last real token).
    """
    config = config or PatchConfig()
    check_eval(target_model, source_model)
    check_prompts(target_tokens, source_tokens)
    metrics = [metrics] if isinstance(metrics, Metric) else list(metrics)
    check_names(metrics)
    mask = check_mask(attention_mask, target_tokens)
    n_pos = target_tokens.shape[1]
    bound = [BoundMetric(m, n_pos, mask) for m in metrics]
    reads = {
        name: sorted({p for m in bound if m.reads == name for p in m.positions})
        for name in dict.fromkeys(m.reads for m in bound)
    }  # what is read: positions
    for m in bound:
        m.index(reads[m.reads])
    n_layers = int(target_model.cfg.n_layers)
    layers = {r: n_layers - 1 if r == "logits" else hook_layer(target_model, r) for r in reads}
    last = max(layers.values())  # no block after it can change what is read
    site_list = as_sites(sites, target_model, n_pos, by_position)

    reached = [s for s in site_list if s.layer <= last]
    # Logits only, and every site's activation known before the last block: that block runs
    # once, in the first cone forward, with the unpatched runs as lanes of their own.
    defer = set(reads) == {"logits"} and all(
        s.layer < last or s.kind == "resid_pre" for s in reached
    )
    within = source_model is target_model
    hooks = {s.hook for s in reached} | (set(reads) - {"logits"})
    hooks = sorted(hooks | ({resid_pre(last)} if defer and within else set()))
    logits = reads.get("logits")
    if within:  # one forward for both runs
        both = torch.cat([target_tokens, source_tokens.to(target_tokens.device)])
        masks = None if mask is None else torch.cat([mask, mask])
        run, src = capture(target_model, both, hooks, logits, last, defer, masks).split(
            len(target_tokens)
        )
        src_logits, acts = src.logits, src.acts
    else:
        run = capture(target_model, target_tokens, hooks, logits, last, defer, mask)
        with torch.inference_mode():
            src_logits, src_cache = source_model.run_with_cache(
                source_tokens.to(device_of(source_model)),
                names_filter=lambda n: n in hooks,
                **mask_kwargs(mask, device_of(source_model)),
            )
        device = run.tokens.device
        acts = {h: src_cache[h].to(device) for h in hooks}
        src_logits = src_logits[:, logits].to(device) if logits else None
    baseline = ([None] + ([acts[resid_pre(last)]] if within else [])) if defer else []

    def unpatched(logits, run_acts) -> list[float]:
        return [m(read_values(logits, run_acts, reads, m.reads)) for m in bound]

    base_target = None if defer else unpatched(run.logits, run.acts)  # deferred: from the cones
    base_source = None if defer and within else unpatched(src_logits, acts)

    values: dict[Site, list[float]] = {}
    todo, skipped = [], []
    final = sorted({p for r, ps in reads.items() if layers[r] == last for p in ps})
    unchanged = _unchanged(reached, run.acts, acts) if config.skip_unchanged else set()
    for s in sorted(site_list, key=lambda s: (s.layer, s.first_position)):
        rows = len(cone_positions(s, last + 1, n_pos, final)) if s.layer <= last else 0
        if not rows or s in unchanged:
            skipped.append(s)  # the patch cannot change what the metrics read
        else:
            todo.append((s, rows))
    groups = _groups(todo, config.rows_per_forward) or ([[]] if defer else [])

    with torch.inference_mode():
        bar = tqdm(groups, desc="patching", leave=False) if config.progress else groups
        for k, group in enumerate(bar):
            extra = baseline if k == 0 else []
            got, made = run_cone(run, group, acts, reads, layers, extra)
            scores = [m.many(got[m.reads]) for m in bound]
            for g, s in enumerate(group):
                values[s] = [by_metric[g] for by_metric in scores]
            if extra:  # the unpatched runs' values; later forwards start from its last block
                base_target = [by_metric[len(group)] for by_metric in scores]
                if within:
                    base_source = [by_metric[len(group) + 1] for by_metric in scores]
                run = replace(
                    run,
                    keys=[*run.keys[:-1], made[0]],
                    values=[*run.values[:-1], made[1]],
                    logits=got["logits"][len(group)],
                )
    for s in skipped:
        values[s] = base_target

    return result_table(site_list, [m.name for m in bound], values, base_target, base_source)


def denoise(model: Any, clean: Tokens, corrupted: Tokens, sites, metrics, **kw) -> pd.DataFrame:
    """Clean activations into the corrupted run: which sites restore the clean behaviour."""
    return patch(model, corrupted, model, clean, sites, metrics, **kw)


def noise(model: Any, clean: Tokens, corrupted: Tokens, sites, metrics, **kw) -> pd.DataFrame:
    """Corrupted activations into the clean run: which sites the clean behaviour needs."""
    return patch(model, clean, model, corrupted, sites, metrics, **kw)


def cross_model(pair: Any, tokens: Tokens, sites, metrics, *, into: str = "tuned", **kw):
    """Across the pair on the same prompts: the other model's activation into model ``into``.

    ``into="tuned"``: the base activation into the tuned model; ``share`` is the part of the
    tuned model's departure (its metric minus the base's) that the site removes. ``into="base"``:
    the tuned activation into the base; ``share`` is the part of the departure it induces.
    """
    if into not in pair.models:
        raise LabError(f"into must be one of {sorted(pair.models)}, not {into!r}.")
    other = "base" if into == "tuned" else "tuned"
    return patch(pair.models[into], tokens, pair.models[other], tokens, sites, metrics, **kw)


def patch_jointly(
    target_model: Any,
    target_tokens: Tokens,
    source_model: Any,
    source_tokens: Tokens,
    sites: Iterable[Site],
    metric: Metric,
    *,
    attention_mask: Tensor | None = None,
) -> float:
    """The metric (batch mean) with all ``sites`` patched at once: one full forward
    (``attention_mask``: padded prompts, as in ``patch``)."""
    check_eval(target_model, source_model)
    check_prompts(target_tokens, source_tokens)
    mask = check_mask(attention_mask, target_tokens)
    sites = as_sites(sites, target_model, target_tokens.shape[1], True)
    hooks = sorted({s.hook for s in sites})
    bound = BoundMetric(metric, target_tokens.shape[1], mask)
    bound.index(bound.positions)
    seen: dict[str, torch.Tensor] = {}
    readers = []
    if bound.reads != "logits":  # read the hook after the patches
        hook_layer(target_model, bound.reads)
        readers = [(bound.reads, lambda act, hook: seen.setdefault("act", act))]
    with torch.inference_mode():
        _, cache = source_model.run_with_cache(
            source_tokens,
            names_filter=lambda n: n in hooks,
            **mask_kwargs(mask, device_of(source_model)),
        )
        fwd_hooks = patching_hooks(sites, cache) + readers
        logits = target_model.run_with_hooks(
            target_tokens, fwd_hooks=fwd_hooks, **mask_kwargs(mask, device_of(target_model))
        )
        return bound(seen.get("act", logits)[:, bound.positions])
