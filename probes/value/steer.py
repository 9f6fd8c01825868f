"""Steering end to end, as ``lab steer`` runs it: fit (or load) a Q head, then sample the base
reweighted by it and measure the samples.

- The organism (``steer_organism``): the head's targets are the oracle's exact soft values of the
  true utility, or the practitioner's from the learned reward model and base samples; samples
  continue world prompts and are measured like every organism policy
  (``lab.organism.metrics.generation_metrics``: true utility, RM score, wedding reach,
  near-impossible moves, KL to the base and to pi* per token).
- Any pair (``steer_model``): the practitioner's targets from a reward (a reward model folder, or
  a reward function such as ``word_reward``) on base continuations of one prompt; the samples'
  mean reward and KL to the base per token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.outputs import kl_per_token, model_logprobs
from lab.models.sampling import emittable, recompute, sample
from lab.organism.bayes import PiStar
from lab.organism.evaluate import Organism
from lab.organism.metrics import as_policy, generation_metrics
from probes.value.fit import fit_q_head
from probes.value.guided import guided_policy
from probes.value.head import QHead
from probes.value.oracle import oracle_tokens, oracle_values
from probes.value.practitioner import fit_practitioner_head
from probes.value.reward import Reward

__all__ = ["base_samples", "organism_head", "steer_model", "steer_organism", "word_reward"]


def word_reward(token_ids: list[int] | Tensor) -> Callable[[Tensor, int], Tensor]:
    """A toy reward: how many of the continuation's tokens are among ``token_ids``."""
    ids = torch.as_tensor(token_ids, dtype=torch.long)

    def reward(tokens: Int[Tensor, "batch pos"], start: int) -> Float[Tensor, " batch"]:
        return torch.isin(tokens[:, start:].cpu(), ids).double().sum(1)

    return reward


@torch.no_grad()
def base_samples(
    model: torch.nn.Module, prompts: Int[Tensor, "batch prompt"], n_new: int, generator
) -> Int[Tensor, "batch pos"]:
    """The base's own continuations (the one sampler, its emittable tokens)."""
    step = recompute(lambda t: model_logprobs(model, t))
    return sample(step, prompts, n_new, generator, mask=lambda v: emittable(model, v))


def organism_head(
    org: Organism,
    source: str,
    betas: tuple[float, ...],
    layer: int,
    texts: int,
    generator: torch.Generator,
    reward: Reward | None = None,
) -> QHead:
    """A Q head on the organism's base: ``oracle`` (exact soft values of the true utility on
    ``texts`` world sequences plus as many pi* continuations per beta) or ``practitioner``
    (soft-Bellman values of the reward model, default the organism's, on ``texts`` base
    continuations of world prompts)."""
    base = org.pair.base
    if source == "oracle":
        tokens = oracle_tokens(
            org.world, org.labeler, texts, org.length, org.prompt_words, betas, generator
        )
        values = oracle_values(org.world, org.labeler, tokens, betas, org.length)
        return fit_q_head(base, tokens, values, layer, betas=betas)
    if source == "practitioner":
        prompts = org.world.draw(texts, org.prompt_words, generator)[0]
        tokens = as_policy(base).sample(prompts, org.length, generator)
        return fit_practitioner_head(
            base,
            reward or org.reward_model,
            tokens,
            betas,
            start=org.prompt_words + 1,
            layer=layer,
        )
    raise LabError(f"Unknown Q source {source!r}; use oracle or practitioner.")


def steer_organism(
    org: Organism,
    head: QHead,
    beta: float,
    n: int,
    generator: torch.Generator,
    top_k: int | None = None,
) -> dict[str, Any]:
    """``n`` guided continuations of world prompts at ``beta``, with the organism's metrics."""
    base = org.pair.base
    policy = guided_policy(base, head, beta, top_k=top_k)
    prompts = org.world.draw(n, org.prompt_words, generator)[0]
    samples = policy.sample(prompts, org.length, generator)
    start = org.prompt_words + 1
    rm = org.reward_model
    metrics = generation_metrics(
        samples,
        start,
        org.world,
        org.labeler,
        logprobs=policy.next_token_logprobs(samples[:, :-1]),
        base_logprobs=model_logprobs(base, samples[:, :-1]),
        pi_star=PiStar(org.world, org.labeler, beta, org.length),
        reward_model=(lambda t, s: torch.cat([rm(x, s) for x in t.split(256)])) if rm else None,
    )
    texts = [
        f"{org.world.decode(row[1:start])} | {org.world.decode(row[start:])}" for row in samples
    ]
    return {"metrics": metrics, "samples": texts}


def steer_model(
    model: torch.nn.Module,
    head: QHead,
    beta: float,
    prompt: Int[Tensor, "1 prompt"],
    n: int,
    n_new: int,
    generator: torch.Generator,
    reward: Reward | None = None,
    top_k: int | None = None,
) -> dict[str, Any]:
    """``n`` guided continuations of ``prompt`` by ``n_new`` tokens: their mean reward (given
    one), the base's, and the KL to the base per token."""
    policy = guided_policy(model, head, beta, top_k=top_k)
    prompts = prompt.expand(n, -1)
    samples = policy.sample(prompts, prompts.shape[1] + n_new - 1, generator)
    start = prompts.shape[1]
    own = policy.next_token_logprobs(samples[:, :-1])[:, start - 1 :]
    allowed = emittable(model, own.shape[-1])
    base_lp = model_logprobs(model, samples[:, :-1])[:, start - 1 :].masked_fill(
        ~allowed, -torch.inf
    )
    metrics = {"kl_to_base": kl_per_token(own, base_lp.log_softmax(-1))}
    if reward is not None:
        plain = base_samples(model, prompts, n_new, generator)
        metrics["reward"] = reward(samples, start).mean().item()
        metrics["base_reward"] = reward(plain, start).mean().item()
    tokenizer = getattr(model, "tokenizer", None)
    texts = [
        tokenizer.decode(row[start:]) if tokenizer else row[start:].tolist() for row in samples
    ]
    return {"metrics": metrics, "samples": texts}
