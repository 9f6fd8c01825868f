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
from torch import Tensor

from lab.models.sampling import emittable, recompute
from lab.models.sampling import sample as sample_tokens
from lab.runtime import device_of
from lab.types import Tokens
from probes.patching.checks import check_eval
from probes.patching.sites import Site, patching_hooks

__all__ = ["sample"]


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
    """Continue ``prompts`` by ``n_new`` sampled tokens with the one sampler
    (``lab.models.sampling.sample``: temperature 1, full recompute per step).

    With ``source`` and ``sites``, every step runs ``source`` on the same prefix and patches its
    activations at ``sites`` into ``model`` before the next token is drawn. Draws come from the
    model's distribution renormalised over ``emittable(model, vocab, allowed)``: by default no
    special token of the tokenizer (a world's BOS never appears mid-sequence).
    """
    check_eval(model, *([source] if source is not None else []))
    hooks = sorted({s.hook for s in sites})

    def run(tokens: Tokens) -> Tensor:
        if source is not None and sites:
            _, cache = source.run_with_cache(tokens, names_filter=lambda n: n in hooks)
            return model.run_with_hooks(tokens, fwd_hooks=patching_hooks(sites, cache)).float()
        return model(tokens).float()

    tokens = prompts.to(device_of(model))
    mask = lambda vocab: emittable(model, vocab, allowed)  # noqa: E731  (the logits' width)
    return sample_tokens(recompute(run), tokens, n_new, generator, mask=mask).cpu()
