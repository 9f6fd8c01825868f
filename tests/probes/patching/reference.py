"""Patching by hand: the reference that exact patching is checked against in these tests.

One full forward of the target with each site's hook replaced by the source run's activation
(written into the hook's own tensor for in-place kinds such as ``resid_mid``), scored by the
metric on the logits, or on its hook's activation when it reads one (a ``HookMetric``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from probes.patching.sites import SITE_KINDS, Site


def by_hand(
    target: Any,
    tokens: torch.Tensor,
    source: Any,
    source_tokens: torch.Tensor,
    site: Site | Sequence[Site] | None,
    metric: Any,
) -> float:
    """The metric's batch mean with ``site`` (one, several at once, or None: unpatched) patched
    from ``source``."""
    _, cache = source.run_with_cache(source_tokens)
    seen: dict[str, torch.Tensor] = {}
    sites = [] if site is None else [site] if isinstance(site, Site) else list(site)

    def patcher(site: Site):
        def patch(act, hook):
            if not SITE_KINDS[site.kind].in_place:
                act = act.clone()
            head = slice(None) if site.head is None else site.head
            pos = slice(None) if site.position is None else site.position
            act[:, pos, head] = cache[site.hook][:, pos, head]
            return act

        return patch

    def read(act, hook):
        seen["act"] = act

    reads = getattr(metric, "reads", "logits")
    hooks = [(s.hook, patcher(s)) for s in sites]
    hooks += [] if reads == "logits" else [(reads, read)]
    with torch.inference_mode():
        logits = target.run_with_hooks(tokens, fwd_hooks=hooks)
    out = logits if reads == "logits" else seen["act"]
    return float(metric(out[:, list(metric.positions)]).mean())
