"""Attribution patching: every site's patching effect from one gradient, for quick screening.

The effect of patching site s is approximated to first order by the source-minus-target
activation dotted with the metric's gradient there: two forwards (source, target) and one
backward cover every site of a sweep (Nanda 2023, "Attribution patching"). Tables have the
columns of ``probes.patching.patch``, so ``rank_correlation`` compares them with exact patching
site by
site; the approximation is a screen, exact patching is the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import einops
import pandas as pd
import torch

from lab.types import Tokens
from probes.patching.checks import check_eval, check_prompts, hook_layer
from probes.patching.metrics import Metric, read_logits
from probes.patching.positions import resolve_positions
from probes.patching.sites import SITE_KINDS, enumerate_sites
from probes.patching.table import COLUMNS

__all__ = ["attribute", "rank_correlation"]


def attribute(
    target_model: Any,
    target_tokens: Tokens,
    source_model: Any,
    source_tokens: Tokens,
    kind: str,
    metric: Metric,
    *,
    by_position: bool = True,
    layers: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Estimated patching effect at every site of kind ``kind`` (per layer, head, position).

    ``value`` is the target metric plus the estimated effect; ``share`` the estimated part of
    the target-to-source gap closed, as in ``probes.patching.patch.patch``.
    """
    check_eval(target_model, source_model)
    check_prompts(target_tokens, source_tokens)
    n_pos = target_tokens.shape[1]
    sites = list(
        enumerate_sites(kind, target_model, n_pos, by_position=False, by_head=False, layers=layers)
    )
    hooks = [s.hook for s in sites]
    reads = getattr(metric, "reads", "logits")  # a hook metric reads its hook, after patches
    last = int(target_model.cfg.n_layers) if reads == "logits" else hook_layer(target_model, reads)
    with torch.inference_mode():
        src_logits, cache = source_model.run_with_cache(
            source_tokens, names_filter=lambda n: n in set(hooks) or n == reads
        )
    saved: dict[str, torch.Tensor] = {}

    in_place = {s.hook for s in sites if SITE_KINDS[s.kind].in_place}

    def saver(name: str):
        def save(act, hook):
            if not act.requires_grad:  # frozen weights: the gradient starts here
                # the block keeps an in-place kind's tensor (the residual): mark that one
                act = act.requires_grad_() if name in in_place else act.detach().requires_grad_()
            saved[name] = act
            return act

        return save

    def metric_input(logits: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
        if act is None:
            return read_logits(logits, metric)
        return act[:, resolve_positions(metric, n_pos).to(act.device)]

    seen: dict[str, torch.Tensor] = {}
    readers = [] if reads == "logits" else [(reads, lambda act, hook: seen.setdefault(reads, act))]
    fwd_hooks = [(h, saver(h)) for h in hooks] + readers
    with torch.enable_grad(), target_model.hooks(fwd_hooks=fwd_hooks):
        logits = target_model(target_tokens)
        value = metric(metric_input(logits, seen.get(reads))).mean()
        inputs = [saved[h] for h in hooks]
        grads = torch.autograd.grad(value, inputs, allow_unused=True)  # None: after the hook
        grads = [  # sites after the hook read change nothing (a later hook may hold its tensor)
            torch.zeros_like(x) if g is None or s.layer > last else g
            for s, x, g in zip(sites, inputs, grads, strict=True)
        ]
    target = float(value.detach())
    with torch.inference_mode():
        src_act = None if reads == "logits" else cache[reads]
        source = float(metric(metric_input(src_logits, src_act)).mean())

    rows = []
    for site, grad in zip(sites, grads, strict=True):
        delta = cache[site.hook].to(grad.device) - saved[site.hook].detach()
        effect = (delta * grad).sum(-1)  # batch pos [head]
        effect = einops.reduce(effect, "batch pos ... -> pos ...", "sum")  # grad holds the 1/batch
        if effect.ndim == 1:
            effect = effect[:, None]  # pos 1: no head axis
        per_head = effect.shape[1] > 1 or site.kind in ("z", "q", "k", "v")
        grid = effect if by_position else effect.sum(0, keepdim=True)
        for p in range(grid.shape[0]):
            for h in range(grid.shape[1]):
                e = float(grid[p, h])
                gap = source - target
                rows.append(
                    (
                        site.kind,
                        site.layer,
                        h if per_head else None,
                        p if by_position else None,
                        metric.name,
                        target + e,
                        target,
                        source,
                        e / gap if gap else float("nan"),
                    )
                )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"head": "Int64", "position": "Int64"})


def rank_correlation(exact: pd.DataFrame, approx: pd.DataFrame) -> float:
    """Spearman correlation of the patching effects (value - target) on the sites both share."""
    keys = ["site", "layer", "head", "position", "metric"]
    a = exact.assign(effect=exact["value"] - exact["target"])[[*keys, "effect"]]
    b = approx.assign(effect=approx["value"] - approx["target"])[[*keys, "effect"]]
    both = a.merge(b, on=keys, suffixes=("_exact", "_approx"))
    ranks = both[["effect_exact", "effect_approx"]].rank()
    return float(ranks["effect_exact"].corr(ranks["effect_approx"]))
