"""The value-guided sampler: the untouched base reweighted by a Q head at decode time,

    pi_Q(x | h) ∝ p_base(x | h) exp(Q_beta(h, x) / beta),

with beta any value in the head's grid range (no refitting per beta). The base's weights are
never changed, so prediction queries (calibration, ECE) go to the base itself:
``as_policy(model)``; this policy is the agent that acts. Sampling is the lab's one sampler
(``lab.models.sampling.sample``), recomputing the prefix each step with the head on the residual.

Top-k candidate mode (``top_k``): only the base's ``top_k`` most likely tokens at each prefix get
a value and may be drawn; the rest are dropped. It reads ``top_k`` columns of the head instead of
the whole vocabulary (for large vocabularies). Exact when ``top_k`` is None or covers every
emittable token (the organism's 57); otherwise approximate by the base's probability mass it
leaves out, and a ``TopKMassWarning`` gives that mass whenever it exceeds ``mass_warning``.
"""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.sampling import emittable, recompute, sample
from lab.organism.metrics import Policy
from probes.value.head import QHead, check_beta
from probes.value.residual import logprobs_and_residual

__all__ = ["MASS_WARNING", "TopKMassWarning", "guided_logprobs", "guided_policy"]

MASS_WARNING = 0.05  # base probability mass left out by top-k above which a warning is given


class TopKMassWarning(UserWarning):
    """Top-k candidates leave out more of the base's probability mass than the stated share."""


def _model_mask(model: torch.nn.Module, vocab: int) -> Bool[Tensor, " vocab"]:
    return emittable(model, vocab)


def _guided(
    model: torch.nn.Module,
    head: QHead,
    tokens: Tensor,
    beta: float,
    top_k: int | None,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """(log pi_Q [batch pos vocab], base mass left out by top-k [batch pos])."""
    logp, resid = logprobs_and_residual(model, tokens, head.layer)
    vocab = logp.shape[-1]
    if vocab != head.vocab:
        raise LabError(f"The Q head covers {head.vocab} tokens; the model has {vocab} logits.")
    allowed = _model_mask(model, vocab) if mask is None else mask
    logp = logp.masked_fill(~allowed, -torch.inf)
    logp = logp - torch.logsumexp(logp, -1, keepdim=True)
    if top_k is None or top_k >= int(allowed.sum()):
        scores = logp + head.at(resid, beta).double() / beta
        left_out = torch.zeros(logp.shape[:-1], dtype=torch.float64)
    else:
        if top_k < 1:
            raise LabError(f"top_k must be >= 1 (or None for every token); got {top_k}.")
        top = logp.topk(top_k, -1)
        left_out = (1 - top.values.exp().sum(-1)).clamp(min=0.0)
        cand = top.values + head.at(resid, beta, top.indices).double() / beta
        scores = torch.full_like(logp, -torch.inf).scatter(-1, top.indices, cand)
    return scores - torch.logsumexp(scores, -1, keepdim=True), left_out


def _warn(left_out: Tensor, top_k: int | None, threshold: float) -> None:
    """One warning giving the base mass that top-k left out, when above ``threshold``."""
    if left_out.numel() and float(left_out.max()) > threshold:
        warnings.warn(
            f"top_k={top_k} leaves out up to {float(left_out.max()):.3f} of the base's "
            f"probability mass (mean {float(left_out.mean()):.3f}), above the stated "
            f"{threshold:g}; raise top_k (None: every token, exact).",
            TopKMassWarning,
            stacklevel=3,
        )


def guided_logprobs(
    model: torch.nn.Module,
    head: QHead,
    tokens: Int[Tensor, "batch pos"],
    beta: float,
    *,
    top_k: int | None = None,
    mask: Bool[Tensor, " vocab"] | None = None,
    mass_warning: float = MASS_WARNING,
) -> Float[Tensor, "batch pos vocab"]:
    """log pi_Q(next token | prefix) at every position (float64; -inf outside the candidates)."""
    beta = check_beta(beta, head.betas)
    out, left_out = _guided(model, head, tokens, beta, top_k, mask)
    _warn(left_out, top_k, mass_warning)
    return out


def guided_policy(
    model: torch.nn.Module,
    head: QHead,
    beta: float,
    *,
    top_k: int | None = None,
    layer: int | None = None,
    mask: Bool[Tensor, " vocab"] | None = None,
    mass_warning: float = MASS_WARNING,
) -> Policy:
    """pi_Q as a ``lab.organism.metrics.Policy`` (``next_token_logprobs``, ``sample``).

    Refuses beta <= 0 or outside the head's grid, and a head fitted on another model or another
    layer than ``layer`` (when given). ``mask``: the tokens that may be drawn (default: all but
    the model's special tokens, as ``lab.models.sampling.emittable``).
    """
    beta = check_beta(beta, head.betas)
    head.check(model, layer)
    opts = {"top_k": top_k, "mask": mask, "mass_warning": mass_warning}

    def logprobs(tokens: Tensor) -> Tensor:
        return guided_logprobs(model, head, tokens, beta, **opts)

    @torch.no_grad()
    def draw(prompts: Tensor, length: int, generator: torch.Generator | None) -> Tensor:
        left_out = []  # the mass left out at each drawn position: one warning per call

        def step(tokens: Tensor) -> Tensor:
            out, mass = _guided(model, head, tokens, beta, top_k, mask)
            left_out.append(mass[:, -1])
            return out

        # -inf outside the candidates: the sampler's softmax leaves them at probability 0
        tokens = sample(recompute(step), prompts, length + 1 - prompts.shape[1], generator)
        _warn(torch.cat(left_out) if left_out else torch.zeros(0), top_k, mass_warning)
        return tokens

    return Policy(logprobs, draw)
