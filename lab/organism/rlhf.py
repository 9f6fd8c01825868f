"""KL-regularised RL from a reward model: a compact RLOO of our own.

The objective is exactly Korbak et al.'s: maximise E_pi[RM(x)] - beta KL(pi || base), where the
KL is the sum over the continuation's tokens of the per-token KL to the frozen base. RLOO draws
``k`` continuations per prompt and uses the sequence return
``R = RM(x) - beta * sum_t log(pi(x_t) / base(x_t))``, whose score-function gradient is the
gradient of that objective; the baseline of each sample is the mean return of the other ``k - 1``
(unbiased). No advantage normalisation, no clipping, no entropy bonus.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from lab.errors import LabError
from lab.models.sampling import kv_cached, sample
from lab.organism.metrics import never_bos
from lab.organism.reward import RewardModel
from lab.organism.world import HMM

__all__ = ["RLHFConfig", "continuation_logprobs", "sample_continuations", "train_rlhf"]


@dataclass(frozen=True)
class RLHFConfig:
    """RLOO settings."""

    beta: float = 0.1  # KL coefficient of the objective
    k: int = 4  # continuations per prompt (leave-one-out baseline)
    prompts: int = 32  # prompts per step
    steps: int = 500  # optimiser steps
    lr: float = 3e-5  # Adam learning rate (small: the curve passes the true-utility peak slowly)
    prompt_words: int = 7  # words of world prompt before each continuation
    log_every: int = 20  # steps between points of the logged curve


@torch.no_grad()
def sample_continuations(
    model: GPT2LMHeadModel, prompts: Tensor, length: int, generator: torch.Generator | None
) -> Tensor:
    """Continue BOS-first prompts to ``length`` words by ancestral sampling (the one sampler with
    the model's KV cache); BOS never appears inside a sequence."""
    n_new = length + 1 - prompts.shape[1]
    return sample(kv_cached(model), prompts, n_new, generator, mask=never_bos)


def continuation_logprobs(model: GPT2LMHeadModel, tokens: Tensor, start: int) -> Tensor:
    """(batch, n_new) log-probabilities of ``tokens[:, start:]`` under the model."""
    logits = model(tokens, attention_mask=torch.ones_like(tokens)).logits[:, start - 1 : -1]
    logits = logits.clone()
    logits[..., 0] = -torch.inf  # the sampling distribution never emits BOS
    return logits.log_softmax(-1).gather(-1, tokens[:, start:, None]).squeeze(-1)


def _trainable(
    policy: GPT2LMHeadModel, masks: dict[str, Tensor] | None
) -> list[tuple[str, Tensor]]:
    """The parameters to optimise; with ``masks``, gradients are masked to their entries."""
    if masks is None:
        return [(k, p.requires_grad_(True)) for k, p in policy.named_parameters()]
    params = dict(policy.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise LabError(f"masks name parameters the policy lacks: {', '.join(unknown)}.")
    for name, p in params.items():
        p.requires_grad_(name in masks)
        if name in masks:
            keep = masks[name].to(p.dtype)
            p.register_hook(lambda g, keep=keep: g * keep)
    return [(name, params[name]) for name in masks]


def train_rlhf(
    base: GPT2LMHeadModel,
    reward_model: RewardModel,
    world: HMM,
    cfg: RLHFConfig,
    length: int,
    seed: int = 0,
    evaluate: Callable[[GPT2LMHeadModel], dict[str, float]] | None = None,
    peak_key: str = "true_utility",
    progress: bool = True,
    masks: dict[str, Tensor] | None = None,
    after_step: Callable[[GPT2LMHeadModel, int], None] | None = None,
) -> tuple[GPT2LMHeadModel, list[dict[str, float]], GPT2LMHeadModel | None]:
    """Run RLOO from a copy of ``base``.

    Every ``log_every`` steps (and at the end) ``evaluate(policy)`` adds a point to the curve;
    returns (final policy, curve, copy of the policy at the curve's highest ``peak_key``).
    ``masks`` (parameter name -> boolean mask) makes only those entries trainable: every other
    parameter is frozen and masked entries' gradients are zeroed, so they keep their exact values.
    ``after_step(policy, s)`` runs after optimiser step ``s`` (1..steps), e.g. to project the
    trained weights (planting keeps each planted component on a sphere of relative change).
    """
    if cfg.k < 2 or cfg.beta <= 0:
        raise LabError(f"RLOO needs k >= 2 and beta > 0; got k={cfg.k}, beta={cfg.beta}.")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 2)
    policy = copy.deepcopy(base).train()
    base = base.eval()
    for p in list(base.parameters()) + list(reward_model.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for _, p in _trainable(policy, masks)], lr=cfg.lr)
    start = cfg.prompt_words + 1
    curve: list[dict[str, float]] = []
    peak: tuple[float, GPT2LMHeadModel | None] = (-float("inf"), None)
    for step in tqdm(range(cfg.steps + 1), desc="rlhf", disable=not progress, mininterval=5):
        if evaluate is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            point = {"step": step, **evaluate(policy.eval())}
            curve.append(point)
            if step > 0 and point[peak_key] > peak[0]:
                peak = (point[peak_key], copy.deepcopy(policy))
            policy.train()
        if step == cfg.steps:
            break
        prompts = world.draw(cfg.prompts, cfg.prompt_words, g)[0].repeat_interleave(cfg.k, 0)
        tokens = sample_continuations(policy, prompts, length, g)
        logp = continuation_logprobs(policy, tokens, start)  # (batch, n_new), with grad
        with torch.no_grad():
            kl = (logp - continuation_logprobs(base, tokens, start)).sum(-1)
            ret = (reward_model(tokens, start) - cfg.beta * kl).view(cfg.prompts, cfg.k)
            baseline = (ret.sum(1, keepdim=True) - ret) / (cfg.k - 1)
            advantage = (ret - baseline).view(-1)
        loss = -(advantage * logp.sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            with torch.no_grad():
                after_step(policy, step + 1)
    return policy.eval(), curve, peak[1]
