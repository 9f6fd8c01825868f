"""Steering measured on generations: sample continuations from a model, optionally with some of
its components replaced by another model's activations at every step.

This is how the lab says how much of the tuned model's excess attractor-reaching (the organism's
wedding-reach rate) a set of components carries: sample from tuned, from base, and from tuned
with those components taking base's activations on the same growing prefix, and compare.

Sampling never draws a token the model may not emit: by default every special token of the
model's tokenizer (BOS, EOS, padding, unknown ...) and every id the tokenizer does not have are
masked out before the draw; ``allowed`` replaces that default with an explicit set.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from lab.errors import LabError
from lab.runtime import device_of
from lab.types import Tokens
from probes.patching.checks import check_eval
from probes.patching.sites import Site, patching_hooks

__all__ = ["emittable", "sample"]


def emittable(
    model: Any, vocab: int, allowed: Collection[int] | Tensor | None = None
) -> Bool[Tensor, " vocab"]:
    """The tokens that ``sample`` may draw from a model with ``vocab`` logits.

    ``allowed`` given: exactly those token ids (or that boolean mask over the vocabulary).
    Otherwise every id except the special tokens of ``model.tokenizer`` (BOS, EOS, padding,
    unknown, ...) and the ids beyond the tokenizer's length; all ids when the model has no
    tokenizer.
    """
    if allowed is not None:
        given = torch.as_tensor(allowed if isinstance(allowed, Tensor) else list(allowed))
        if given.dtype == torch.bool:
            if given.shape != (vocab,):
                raise LabError(
                    f"allowed is a mask of shape {tuple(given.shape)}; give one of shape ({vocab},)"
                )
            mask = given.clone()
        else:
            ids = given.long().reshape(-1)
            if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
                raise LabError(f"allowed has token ids outside 0..{vocab - 1}; drop them.")
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[ids] = True
    else:
        mask = torch.ones(vocab, dtype=torch.bool)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            mask[min(len(tokenizer), vocab) :] = False
            special = [i for i in tokenizer.all_special_ids if i is not None and 0 <= i < vocab]
            mask[special] = False
    if not mask.any():
        raise LabError("No token is allowed to be sampled; allow at least one token id.")
    return mask


@torch.inference_mode()
def sample(
    model: Any,
    prompts: Tokens,
    n_new: int,
    generator: torch.Generator,
    *,
    source: Any | None = None,
    sites: Sequence[Site] = (),
    allowed: Collection[int] | Tensor | None = None,
) -> Tokens:
    """Continue ``prompts`` by ``n_new`` sampled tokens (temperature 1, full recompute per step).

    With ``source`` and ``sites``, every step runs ``source`` on the same prefix and patches its
    activations at ``sites`` into ``model`` before the next token is drawn. Draws come from the
    model's distribution renormalised over ``emittable(model, vocab, allowed)``: by default no
    special token of the tokenizer (a world's BOS never appears mid-sequence).
    """
    check_eval(model, *([source] if source is not None else []))
    tokens = prompts.to(device_of(model))
    hooks = sorted({s.hook for s in sites})
    mask: Tensor | None = None
    for _ in range(n_new):
        if source is not None and sites:
            _, cache = source.run_with_cache(tokens, names_filter=lambda n: n in hooks)
            logits = model.run_with_hooks(tokens, fwd_hooks=patching_hooks(sites, cache))
        else:
            logits = model(tokens)
        last = logits[:, -1].float().cpu()
        if mask is None:
            mask = emittable(model, last.shape[-1], allowed)
        probs = last.masked_fill(~mask, -torch.inf).softmax(-1)
        nxt = torch.multinomial(probs, 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens.cpu()
