"""What a pair is, as a plain dict: sizes, device, parameters, hooks, and how far the weights moved.

The relative weight change of a group is ||W_tuned - W_base|| / ||W_base|| over all the group's
parameters: one group per transformer block, plus ``embed`` and ``other`` (final norm, unembed).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import torch

from lab.models.pair import ModelPair

__all__ = ["pair_summary", "unique_parameters", "weight_change"]

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def _group(name: str) -> str:
    m = _LAYER.search(name)
    if m:
        return f"layer {int(m.group(1))}"
    return "embed" if ("embed" in name or "wte" in name or "wpe" in name) else "other"


def unique_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by name, one per storage: the bridge adds views (q, k, v of a fused qkv) that
    share their storage with the original; keep the largest, which covers the whole storage."""
    best: dict[int, tuple[str, torch.Tensor]] = {}
    for name, p in model.named_parameters():
        key = p.untyped_storage().data_ptr()
        if key not in best or p.numel() > best[key][1].numel():
            best[key] = (name, p)
    return dict(best.values())


@torch.no_grad()
def weight_change(pair: ModelPair) -> dict[str, float]:
    """Relative weight change per group (block, ``embed``, ``other``), in model order."""
    tuned = dict(pair.tuned.original_model.named_parameters())
    diff: dict[str, float] = {}
    norm: dict[str, float] = {}
    for name, w in unique_parameters(pair.base.original_model).items():
        g = _group(name)
        d = (tuned[name].float() - w.float()).pow(2).sum().item()
        diff[g] = diff.get(g, 0.0) + d
        norm[g] = norm.get(g, 0.0) + w.float().pow(2).sum().item()
    return {g: (diff[g] / norm[g]) ** 0.5 if norm[g] else 0.0 for g in diff}


def pair_summary(pair: ModelPair) -> dict[str, Any]:
    """The pair's summary as a JSON-ready dict (what ``lab info`` prints)."""
    change = weight_change(pair)
    return {
        "base": pair.sources.get("base"),
        "tuned": pair.sources.get("tuned"),
        **asdict(pair.cfg),
        "device": str(pair.device),
        "dtype": str(pair.dtype).removeprefix("torch."),
        "processing": "compatibility mode" if pair.compat else "raw HF weights",
        "n_params": sum(p.numel() for p in unique_parameters(pair.base.original_model).values()),
        "n_hook_points": len(pair.base.hook_dict),
        "weights_differ": any(v > 0 for v in change.values()),
        "relative_weight_change": change,
    }
