"""Practitioner targets: soft values from only the learned reward and samples of the base.

The data RLHF had: base continuations ``tokens[:, start:]`` of prompts, scored by the reward (a
reward model or function, ``probes.value.reward``). The soft value of the reward R under the base,
Q_beta(h, x) = beta log E_base[exp(R / beta) | h, x], is fitted after potential-based shaping
with Phi(h_t) = R(the continuation so far, ``tokens[:, start : t + 1]``; 0 before its first
word): the reward model is queried on every prefix of each sample, and

    Q'_beta(h_t, x_t) = Q_beta(h_t, x_t) - Phi(h_t)
                      = Phi(h_{t+1}) - Phi(h_t)
                        + beta logsumexp_x' [log p_base(x' | h_{t+1}) + Q'_beta(h_{t+1}, x') / beta]

(the soft Bellman equation; the logsumexp term is 0 when x_t is the last word).

Shaping subtracts a per-prefix constant, so pi_Q ∝ p_base exp(Q' / beta) is unchanged, but the
targets no longer carry the reward already earned (which the base's residual need not encode):
without it the fit drowns in that variance.

Method: fitted soft-Bellman (soft Q) iteration. Each iteration fits a Q head (the sparse layout of
``probes.value.fit``: a pooled ridge, then one ridge per token column on the rows where that token
was drawn) to these targets at the drawn tokens, the right-hand side read from the previous
iteration's head at every next token x' (the base's log-probs are exact: no sampling in the
log-expectation); the head's values there are clamped into the range of the reward-to-go
R - Phi(h_t) on the data, where the shaped soft values lie (an unclamped linear head
extrapolates on rarely drawn tokens, and the logsumexp, a soft max, feeds that back until the
iteration diverges). Iterating as many times as the continuation has words carries the reward
back to its first word; it stops earlier once no target moves by more than ``tol``. The base's
log-probs, its residual and the rewards are computed once; each iteration is linear algebra.
"""

from __future__ import annotations

from collections.abc import Callable

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.models.sampling import emittable
from lab.organism.reward import RewardModel
from probes.value.fit import _split, fit_observed
from probes.value.head import QHead, check_beta
from probes.value.residual import (
    fingerprint,
    logprobs_and_residual,
    model_name,
    n_layers,
    signature,
)
from probes.value.reward import Reward, as_reward, check_reward

__all__ = ["fit_practitioner_head", "practitioner_values"]

_ROWS = 4096  # rows of the head's values evaluated at once (large vocabularies)


def _soft_bellman(
    model: torch.nn.Module,
    reward: Reward | RewardModel | Callable[[Tensor, int], Tensor],
    tokens: Tensor,
    betas: tuple[float, ...],
    start: int | None,
    layer: int | None,
    iterations: int | None,
    tol: float,
    held_out: float,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int, tuple[float, float]]:
    """(targets [row beta], drawn token [row], rows' mask over (batch, pos), weight, bias, layer,
    the reward's range) of the last iteration."""
    if start is None:
        raise LabError(
            "Pass start=, the first position of the continuation the reward scores (the "
            "organism: org.prompt_words + 1)."
        )
    betas = tuple(check_beta(b) for b in betas)
    layer = n_layers(model) if layer is None else layer
    rew = as_reward(reward)
    check_reward(rew, model)
    batch, n_pos = tokens.shape
    if not 1 <= start < n_pos:
        raise LabError(f"start must be in 1..{n_pos - 1} for {n_pos} tokens; got {start}.")
    logp, resid = logprobs_and_residual(model, tokens, layer)
    allowed = emittable(model, logp.shape[-1])
    logp = logp.masked_fill(~allowed, -torch.inf)
    logp = logp - torch.logsumexp(logp, -1, keepdim=True)
    length = n_pos - 1
    # the potential: the reward of the continuation so far (0 before its first word)
    phi = torch.zeros(batch, n_pos, dtype=torch.float64)
    for t in tqdm(range(start, n_pos), desc="partial rewards", disable=not progress):
        phi[:, t] = rew(tokens[:, : t + 1], start)
    pos = torch.zeros(batch, length, dtype=torch.bool)  # rows with a target: t in start-1..L-1
    pos[:, start - 1 :] = True
    vocab = logp.shape[-1]
    rows = einops.rearrange(pos, "b t -> (b t)")
    x = einops.rearrange(resid[:, :length], "b t d -> (b t) d")[rows]
    col = einops.rearrange(tokens[:, 1:], "b t -> (b t)")[rows]  # the drawn next token
    at = torch.arange(len(x))
    train = _split(batch, length, held_out)[rows]
    last = einops.repeat(torch.arange(length) == length - 1, "t -> (b t)", b=batch)[rows]
    # the next prefix h_{t+1} of each row: its residual and the base's log-probs there
    nxt_x = einops.rearrange(resid[:, 1:], "b t d -> (b t) d")[rows]
    nxt_logp = einops.rearrange(logp[:, 1:], "b t v -> (b t) v")[rows]
    step = einops.rearrange(phi[:, 1:] - phi[:, :-1], "b t -> (b t)")[rows][:, None]
    to_go = einops.rearrange(phi[:, -1:] - phi[:, :-1], "b t -> (b t)")[rows]
    bounds = (float(to_go.min()), float(to_go.max()))  # the shaped values' range on the data
    beta_t = torch.tensor(betas, dtype=torch.float64)
    target = step.expand(-1, len(betas)).clone()
    n_iter = (length - start + 1) if iterations is None else iterations
    for _ in tqdm(range(n_iter), desc="soft Q iteration", disable=not progress):
        weight, bias = fit_observed(x, target, at, col, vocab, train)
        soft = []
        for chunk in range(0, len(nxt_x), _ROWS):
            q = einops.einsum(nxt_x[chunk : chunk + _ROWS], weight, "n d, d b v -> n b v") + bias
            q = q.clamp(*bounds)  # every shaped soft value lies in the reward-to-go's range
            lp = nxt_logp[chunk : chunk + _ROWS, None]
            soft.append(beta_t * torch.logsumexp(lp + q / beta_t[:, None], -1))
        new = step + torch.where(last[:, None], 0.0, torch.cat(soft))
        moved = float((new - target).abs().max())
        target = new
        if moved <= tol:
            break
    weight, bias = fit_observed(x, target, at, col, vocab, train)
    return target, col, pos, weight, bias, layer, bounds


def practitioner_values(
    model: torch.nn.Module,
    reward: Reward | RewardModel | Callable[[Tensor, int], Tensor],
    tokens: Int[Tensor, "batch pos"],
    betas: tuple[float, ...] | list[float],
    *,
    start: int | None = None,
    layer: int | None = None,
    iterations: int | None = None,
    tol: float = 1e-4,
    held_out: float = 0.2,
    progress: bool = False,
) -> tuple[Float[Tensor, "batch pos beta vocab"], Bool[Tensor, "batch pos vocab"]]:
    """Soft-Bellman targets at the drawn tokens of base samples ``tokens`` (the continuation from
    ``start``), and the mask of those entries (NaN elsewhere): fit a head on them with
    ``fit_q_head(..., mask=mask)``. ``layer``: the residual layer of the iteration's heads
    (default: after the last block)."""
    betas = tuple(float(b) for b in betas)
    target, col, pos, *_ = _soft_bellman(
        model, reward, tokens, betas, start, layer, iterations, tol, held_out, progress
    )
    batch, length = pos.shape
    vocab = int(model.cfg.d_vocab) if hasattr(model, "cfg") else int(model.config.vocab_size)
    values = torch.full((batch * length, len(betas), vocab), torch.nan, dtype=torch.float64)
    mask = torch.zeros(batch * length, vocab, dtype=torch.bool)
    rows = einops.rearrange(pos, "b t -> (b t)").nonzero().squeeze(1)
    values[rows, :, col] = target
    mask[rows, col] = True
    return values.view(batch, length, len(betas), vocab), mask.view(batch, length, vocab)


def fit_practitioner_head(
    model: torch.nn.Module,
    reward: Reward | RewardModel | Callable[[Tensor, int], Tensor],
    tokens: Int[Tensor, "batch pos"],
    betas: tuple[float, ...] | list[float],
    *,
    start: int | None = None,
    layer: int | None = None,
    iterations: int | None = None,
    tol: float = 1e-4,
    held_out: float = 0.2,
    progress: bool = False,
) -> QHead:
    """The Q head of the last soft-Bellman iteration (as ``practitioner_values`` then
    ``fit_q_head`` at the same layer, without the dense (batch, pos, beta, vocab) targets)."""
    betas = tuple(float(b) for b in betas)
    *_, weight, bias, layer, bounds = _soft_bellman(
        model, reward, tokens, betas, start, layer, iterations, tol, held_out, progress
    )
    return QHead(
        layer=layer,
        betas=betas,
        weight=einops.rearrange(weight, "d beta v -> d (beta v)").float(),
        bias=einops.rearrange(bias, "beta v -> (beta v)").float(),
        vocab=weight.shape[-1],
        model_id=fingerprint(model),
        model_name=model_name(model),
        signature=signature(model),
        bounds=bounds,
    )
