"""Patching by hand: the reference that exact patching is checked against in these tests.

One full forward of the target with one site's hook replaced by the source run's activation
(written into the hook's own tensor for in-place kinds such as ``resid_mid``), scored by the
metric on the logits, or on its hook's activation when it reads one (a ``HookMetric``).
"""

from __future__ import annotations

from typing import Any

import torch

from probes.patching.sites import SITE_KINDS, Site


def by_hand(
    target: Any,
    tokens: torch.Tensor,
    source: Any,
    source_tokens: torch.Tensor,
    site: Site | None,
    metric: Any,
) -> float:
    """The metric's batch mean with ``site`` patched from ``source`` (None: unpatched)."""
    _, cache = source.run_with_cache(source_tokens)
    seen: dict[str, torch.Tensor] = {}

    def patch(act, hook):
        if not SITE_KINDS[site.kind].in_place:
            act = act.clone()
        head = slice(None) if site.head is None else site.head
        pos = slice(None) if site.position is None else site.position
        act[:, pos, head] = cache[site.hook][:, pos, head]
        return act

    def read(act, hook):
        seen["act"] = act

    reads = getattr(metric, "reads", "logits")
    hooks = [] if site is None else [(site.hook, patch)]
    hooks += [] if reads == "logits" else [(reads, read)]
    with torch.inference_mode():
        logits = target.run_with_hooks(tokens, fwd_hooks=hooks)
    out = logits if reads == "logits" else seen["act"]
    return float(metric(out[:, list(metric.positions)]).mean())
