"""Attribution patching: every site's patching effect from one gradient, for quick screening.

The effect of patching site s is approximated to first order by the source-minus-target
activation dotted with the metric's gradient there: two forwards (source, target) and one
backward cover every site of a sweep (Nanda 2023, "Attribution patching"). Tables have the
columns of ``probes.patching.patch``, so ``rank_correlation`` compares them with exact patching
site by
site; the approximation is a screen, exact patching is the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import einops
import pandas as pd
import torch

from lab.errors import LabError
from lab.types import Tokens
from probes.patching.checks import check_eval, check_prompts, hook_layer
from probes.patching.metrics import Metric, check_names, read_logits
from probes.patching.positions import resolve_positions
from probes.patching.sites import SITE_KINDS, enumerate_sites
from probes.patching.table import COLUMNS

__all__ = ["attribute", "rank_correlation", "spearman"]


def attribute(
    target_model: Any,
    target_tokens: Tokens,
    source_model: Any,
    source_tokens: Tokens,
    kind: str | Sequence[str],
    metric: Metric | Sequence[Metric],
    *,
    by_position: bool = True,
    layers: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Estimated patching effect at every site of kind ``kind`` (per layer, head, position).

    ``value`` is the target metric plus the estimated effect; ``share`` the estimated part of
    the target-to-source gap closed, as in ``probes.patching.patch.patch``. Several kinds and
    several metrics (all reading the same thing) share one source run and one target forward,
    with one backward per metric; rows come kind by kind, metric by metric.
    """
    check_eval(target_model, source_model)
    check_prompts(target_tokens, source_tokens)
    kinds = [kind] if isinstance(kind, str) else list(kind)
    metrics = [metric] if isinstance(metric, Metric) else list(metric)
    check_names(metrics)
    reads_all = {getattr(m, "reads", "logits") for m in metrics}  # a hook metric reads its hook
    if len(reads_all) != 1:
        raise LabError(
            f"Metrics read different things ({sorted(reads_all)}); attribute them separately."
        )
    reads = reads_all.pop()
    n_pos = target_tokens.shape[1]
    sites = [
        s
        for k in kinds
        for s in enumerate_sites(
            k, target_model, n_pos, by_position=False, by_head=False, layers=layers
        )
    ]
    hooks = list(dict.fromkeys(s.hook for s in sites))
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

    def metric_input(m: Metric, logits: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
        if act is None:
            return read_logits(logits, m)
        return act[:, resolve_positions(m, n_pos).to(act.device)]

    seen: dict[str, torch.Tensor] = {}
    readers = [] if reads == "logits" else [(reads, lambda act, hook: seen.setdefault(reads, act))]
    fwd_hooks = [(h, saver(h)) for h in hooks] + readers
    rows: list[tuple] = []
    with torch.enable_grad(), target_model.hooks(fwd_hooks=fwd_hooks):
        logits = target_model(target_tokens)
        inputs = [saved[h] for h in hooks]
        for i, m in enumerate(metrics):
            value = m(metric_input(m, logits, seen.get(reads))).mean()
            grads = torch.autograd.grad(  # None: after the hook
                value, inputs, allow_unused=True, retain_graph=i < len(metrics) - 1
            )
            grads = dict(zip(hooks, grads, strict=True))
            with torch.inference_mode():
                src_act = None if reads == "logits" else cache[reads]
                source = float(m(metric_input(m, src_logits, src_act)).mean())
            rows += _rows(sites, grads, saved, cache, m.name, float(value.detach()), source,
                          last, by_position)  # fmt: skip
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"head": "Int64", "position": "Int64"})


def _rows(sites, grads, saved, cache, name, target, source, last, by_position) -> list[tuple]:
    """One metric's table rows: each site's estimated effect, the gradient dotted with the
    source-minus-target activation (sites after what the metric reads change nothing)."""
    rows = []
    gap = source - target
    for site in sites:
        grad = grads[site.hook]
        act = saved[site.hook]
        if grad is None or site.layer > last:  # a later hook may hold its tensor
            grad = torch.zeros_like(act)
        delta = cache[site.hook].to(grad.device) - act.detach()
        effect = (delta * grad).sum(-1)  # batch pos [head]
        effect = einops.reduce(effect, "batch pos ... -> pos ...", "sum")  # grad holds the 1/batch
        if effect.ndim == 1:
            effect = effect[:, None]  # pos 1: no head axis
        per_head = effect.shape[1] > 1 or site.kind in ("z", "q", "k", "v")
        grid = effect if by_position else effect.sum(0, keepdim=True)
        for p in range(grid.shape[0]):
            for h in range(grid.shape[1]):
                e = float(grid[p, h])
                rows.append(
                    (
                        site.kind,
                        site.layer,
                        h if per_head else None,
                        p if by_position else None,
                        name,
                        target + e,
                        target,
                        source,
                        e / gap if gap else float("nan"),
                    )
                )
    return rows


def rank_correlation(exact: pd.DataFrame, approx: pd.DataFrame) -> float:
    """Spearman correlation of the patching effects (value - target) on the sites both share."""
    keys = ["site", "layer", "head", "position", "metric"]
    a = exact.assign(effect=exact["value"] - exact["target"])[[*keys, "effect"]]
    b = approx.assign(effect=approx["value"] - approx["target"])[[*keys, "effect"]]
    both = a.merge(b, on=keys, suffixes=("_exact", "_approx"))
    return spearman(both["effect_exact"], both["effect_approx"])


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation of two aligned series (NaN with fewer than two pairs or no
    spread)."""
    ranks = pd.DataFrame({"a": a.to_numpy(), "b": b.to_numpy()}).rank()
    return float(ranks["a"].corr(ranks["b"]))
