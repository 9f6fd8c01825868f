"""Steering measured on generations: sample continuations from a model, optionally with some of
its components replaced by another model's activations at every step.

This is how the lab says how much of the tuned model's excess attractor-reaching (the organism's
wedding-reach rate) a set of components carries: sample from tuned, from base, and from tuned
with those components taking base's activations on the same growing prefix, and compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lab.types import Tokens
from probes.capture import check_eval
from probes.sites import Site, patching_hooks

__all__ = ["per_token_kl", "sample"]


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def sample(
    model: Any,
    prompts: Tokens,
    n_new: int,
    generator: torch.Generator,
    *,
    source: Any | None = None,
    sites: Sequence[Site] = (),
) -> Tokens:
    """Continue ``prompts`` by ``n_new`` sampled tokens (temperature 1, full recompute per step).

    With ``source`` and ``sites``, every step runs ``source`` on the same prefix and patches its
    activations at ``sites`` into ``model`` before the next token is drawn.
    """
    check_eval(model, *([source] if source is not None else []))
    tokens = prompts.to(_device(model))
    hooks = sorted({s.hook for s in sites})
    for _ in range(n_new):
        if source is not None and sites:
            _, cache = source.run_with_cache(tokens, names_filter=lambda n: n in hooks)

            logits = model.run_with_hooks(tokens, fwd_hooks=patching_hooks(sites, cache))
        else:
            logits = model(tokens)
        probs = logits[:, -1].float().softmax(-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens.cpu()


@torch.inference_mode()
def per_token_kl(tuned: Any, base: Any, tokens: Tokens) -> Float[Tensor, "batch pos"]:
    """KL(tuned || base) of the next-token distributions at every position, in nats."""
    lt = tuned(tokens.to(_device(tuned))).float().log_softmax(-1)
    lb = base(tokens.to(_device(base))).float().log_softmax(-1).to(lt.device)
    return (lt.exp() * (lt - lb)).sum(-1).cpu()
