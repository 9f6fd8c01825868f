"""Sampling continuations: one loop, with how each step's next-token logits are computed as a
small strategy.

``sample(next_logits, prompts, n_new, generator, mask=...)`` draws ``n_new`` tokens, each by
inverse CDF (``categorical``) from the model's distribution at the last position with the
tokens outside ``mask`` removed. A strategy maps the growing ``[batch pos]`` tokens to the last
position's logits:
- ``recompute(run)``: runs ``run`` (a model, or any function of the tokens to logits or
  log-probs) on the whole prefix at every step: any model, with hooks if ``run`` adds them (the
  patching sampler of ``probes.sampling`` runs the model with another model's activations);
- ``kv_cached(model)``: an HF causal LM fed only the new token, with its key/value cache.

``emittable`` says which tokens a model may emit: by default none of its tokenizer's special
tokens (BOS, EOS, padding ...) and no id past the tokenizer's length.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lab.errors import LabError
from lab.types import Tokens

__all__ = ["NextLogits", "categorical", "emittable", "kv_cached", "recompute", "sample"]

NextLogits = Callable[[Tokens], Float[Tensor, "batch vocab"]]  # prefix -> last position's logits


def categorical(cdf: Float[Tensor, "batch k"], generator: torch.Generator | None) -> Tensor:
    """One draw per row from rows of cumulative probabilities (inverse CDF).

    The draw is the first token whose cumulative probability exceeds u ~ U[0, total): token k
    owns [cdf[k-1], cdf[k]), so a zero-probability token (an empty interval) is never drawn, not
    even when u is exactly 0 or exactly a boundary.
    """
    u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
    return (cdf <= u).sum(-1).clamp(max=cdf.shape[1] - 1)


def emittable(
    model: Any, vocab: int, allowed: Collection[int] | Tensor | None = None
) -> Bool[Tensor, " vocab"]:
    """The tokens that may be drawn from a model with ``vocab`` logits.

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


def recompute(run: Callable[[Tokens], Tensor]) -> NextLogits:
    """Every step runs ``run`` on the whole prefix and keeps the last position."""
    return lambda tokens: run(tokens)[:, -1]


def _cache_kwarg(model: Any) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; older releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def kv_cached(model: Any) -> NextLogits:
    """An HF causal LM: the prompts once, then only each new token, with its key/value cache
    (the logits in float32). A strategy holds one sequence batch's cache: make one per call."""
    key, state = _cache_kwarg(model), {}

    def step(tokens: Tokens) -> Tensor:
        ones = torch.ones_like(tokens)
        if not state:
            out = model(tokens, attention_mask=ones, use_cache=True)
        else:
            out = model(tokens[:, -1:], **{key: state[key]}, attention_mask=ones, use_cache=True)
        state[key] = out[key]
        return out.logits[:, -1].float()

    return step


def sample(
    next_logits: NextLogits,
    prompts: Tokens,
    n_new: int,
    generator: torch.Generator | None,
    *,
    mask: Bool[Tensor, " vocab"] | Callable[[int], Tensor] | None = None,
) -> Tokens:
    """Continue ``prompts`` by ``n_new`` tokens (temperature 1), each drawn by inverse CDF from
    the last position's distribution with the tokens outside ``mask`` removed (a mask, or a
    function of the vocabulary size that makes one; None: every token). The draws are on the
    CPU, in the logits' dtype."""
    tokens = prompts
    for _ in range(n_new):
        logp = next_logits(tokens).cpu().log_softmax(-1)
        if callable(mask):
            mask = mask(logp.shape[-1])
        if mask is not None:
            logp = logp.masked_fill(~mask, -torch.inf)
        nxt = categorical(logp.exp().cumsum(-1), generator)[:, None]
        tokens = torch.cat([tokens, nxt.to(tokens.device)], 1)
    return tokens
