"""What a patching call is given, checked before any forward: models in eval mode, prompt sets
that line up, sites within the model and the prompts, and hooks that a metric can read."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from lab.activations.hooks import hook_point
from lab.errors import LabError, close_matches
from lab.types import Tokens
from probes.patching.sites import Site, enumerate_sites, site_kind

__all__ = ["as_sites", "check_eval", "check_prompts", "hook_layer"]


def check_eval(*models: Any) -> None:
    """Refuse models in training mode: dropout would make every patch a different sample."""
    for model in models:
        if model.training:
            raise LabError(
                "Patching needs models in eval mode (dropout off), but one is in training mode. "
                "Call model.eval() first; lab.load_pair returns both models in eval mode."
            )


def check_prompts(target: Tokens, source: Tokens) -> None:
    """Refuse prompt pairs that do not line up token for token."""
    if target.ndim != 2 or source.ndim != 2:
        raise LabError(
            f"Tokens must be batch x pos; got {tuple(target.shape)} and {tuple(source.shape)}."
        )
    if target.shape != source.shape:
        raise LabError(
            f"The two prompt sets have different shapes: {tuple(source.shape)} (source) and "
            f"{tuple(target.shape)} (target), batch x tokens. Patching swaps activations position "
            "by position, so each pair must have the same number of tokens: reword one prompt "
            "until the token counts match (check with pair.to_tokens), or left-pad the shorter one "
            "with a neutral filler token so that the positions you compare line up."
        )


def as_sites(sites: str | Iterable[Site], model: Any, n_pos: int, by_position: bool) -> list:
    """``sites`` as a list: a site kind's every site (``enumerate_sites``), or the sites given,
    checked to lie within the model and the prompts."""
    if isinstance(sites, str):
        return list(enumerate_sites(sites, model, n_pos, by_position=by_position))
    sites = list(sites)
    n_layers = int(model.cfg.n_layers)
    heads = {name: site_kind(name, model).n_heads(model) for name in {s.kind for s in sites}}
    for s in sites:
        if not 0 <= s.layer < n_layers:
            raise LabError(f"{s} is past the model's {n_layers} layers.")
        if s.position is not None and not 0 <= s.position < n_pos:
            raise LabError(f"{s} is past the prompts' {n_pos} positions.")
        if s.head is not None and not 0 <= s.head < max(heads[s.kind], 1):
            raise LabError(f"{s}: site {s.kind!r} has {heads[s.kind]} heads here.")
    return sites


def hook_layer(model: Any, hook: str) -> int:
    """The block whose hook ``hook`` is, checked to exist in ``model`` and to hold positions."""
    if hook_point(model, hook) is None:
        raise LabError(
            f"No hook {hook!r} in this model.{close_matches(hook, model.hook_dict)} A hook "
            "metric reads a block's hook, e.g. blocks.0.hook_resid_post or blocks.0.attn.hook_z."
        )
    found = re.match(r"blocks\.(\d+)\.", hook)
    if found is None or hook.endswith(("hook_pattern", "hook_attn_scores")):
        raise LabError(
            f"Hook {hook!r} cannot be read by a hook metric: it reads a block's activation with "
            "batch and position first (not attention patterns or scores, nor anything outside "
            "the blocks; for the model's output use a logits metric)."
        )
    return int(found.group(1))
