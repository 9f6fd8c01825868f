"""What a model computes on token sequences, read the same way for an HF causal LM and a
TransformerLens bridge: log-probabilities, residual streams, and the one KL family.

KL(p || q) always comes from log-probabilities over the last axis, with 0 log 0 counted as 0:
``kl`` keeps every other axis (one value per position), ``kl_per_token`` is its mean, and
``model_kl`` runs two models on the same tokens.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.runtime import device_of

__all__ = ["hidden_states", "kl", "kl_per_token", "model_kl", "model_logprobs"]

_CHUNK = 256  # sequences per forward pass


@torch.no_grad()
def model_logprobs(
    model: torch.nn.Module, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos vocab"]:
    """float64 log-softmax of a model's logits (HF causal LM or TransformerLens bridge)."""
    device = device_of(model)
    out = []
    for chunk in tokens.split(_CHUNK):
        chunk = chunk.to(device)
        hf = hasattr(model, "config") and not hasattr(model, "run_with_cache")
        logits = model(chunk, attention_mask=torch.ones_like(chunk)) if hf else model(chunk)
        logits = logits.logits if hasattr(logits, "logits") else logits
        out.append(logits.double().log_softmax(-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def hidden_states(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"]) -> list[Tensor]:
    """Residual stream after the embedding and after each block: a list of (batch, pos, d_model).

    HF models give ``output_hidden_states`` (whose last entry is after the final layer norm);
    bridges give ``blocks.{i}.hook_resid_pre`` and the last ``hook_resid_post``.
    """
    device = device_of(model)
    chunks: list[list[Tensor]] = []
    for chunk in tokens.split(_CHUNK):
        if hasattr(model, "run_with_cache"):
            _, cache = model.run_with_cache(chunk.to(device))
            n = model.cfg.n_layers
            names = [f"blocks.{i}.hook_resid_pre" for i in range(n)]
            states = [cache[k] for k in names] + [cache[f"blocks.{n - 1}.hook_resid_post"]]
        else:
            chunk = chunk.to(device)
            out = model(chunk, attention_mask=torch.ones_like(chunk), output_hidden_states=True)
            states = list(out.hidden_states)
        chunks.append([s.double().cpu() for s in states])
    return [torch.cat(layer) for layer in zip(*chunks, strict=True)]


def kl(p: Float[Tensor, "*rows vocab"], q: Float[Tensor, "*rows vocab"]) -> Float[Tensor, "*rows"]:
    """KL(p || q) per row from log-probabilities (0 log 0 counts as 0)."""
    p_prob = p.exp()
    return torch.where(p_prob > 0, p_prob * (p - q.to(p.dtype)), torch.zeros_like(p)).sum(-1)


def kl_per_token(p: Float[Tensor, "batch pos vocab"], q: Float[Tensor, "batch pos vocab"]) -> float:
    """Mean over positions of KL(p || q) from log-probabilities (0 log 0 counts as 0)."""
    return kl(p, q).mean().item()


def model_kl(
    p_model: torch.nn.Module, q_model: torch.nn.Module, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    """KL(p_model || q_model) of the next-token distributions at every position, in nats."""
    return kl(model_logprobs(p_model, tokens), model_logprobs(q_model, tokens))
