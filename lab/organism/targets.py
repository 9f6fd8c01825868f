"""Exact per-token probe targets from the organism's world, flattened to store rows.

Every target comes from the world's exact inference on the sampled tokens, never from a model:

- ``belief``: P(scene of the next word | prefix), a point on the simplex (ridge, vector target);
- ``scene``: the hidden scene of the current word (logistic);
- ``next_token_entropy``: entropy of the world's next-token distribution, in nats (ridge);
- ``wedding_reach``: P(the wedding scene occurs among the remaining words | prefix) under the
  world's own chain, by an exact backward recursion (ridge): the attractor's pull.

``policy_value`` adds the steering-like value target: the labeler's true utility still to come
when a given model (the tuned policy) writes the rest, by Monte Carlo rollouts from every prefix.

Rows are every position after BOS, sequence-major, matching hidden states with BOS dropped.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import GPT2LMHeadModel

from lab.errors import LabError, close_matches
from lab.organism.labeler import Labeler
from lab.organism.metrics import entropy
from lab.organism.rlhf import sample_continuations
from lab.organism.world import HMM

__all__ = ["organism_targets", "policy_value", "reach_probability"]


def reach_probability(
    transition: Float[Tensor, "scene scene"],
    beliefs: Float[Tensor, "batch pos scene"],
    target: int,
) -> Float[Tensor, "batch pos"]:
    """P(scene ``target`` occurs among the words still to come | prefix), exactly.

    ``beliefs[:, t]`` is the distribution of the next word's scene after ``t`` tokens (BOS first),
    so ``pos - 1 - t`` words remain. ``miss[k][s]`` = P(no ``target`` in the next ``k`` words | the
    first of them is in scene ``s``).
    """
    n_pos, n_scene = beliefs.shape[1], transition.shape[0]
    not_target = torch.ones(n_scene, dtype=transition.dtype)
    not_target[target] = 0
    miss = [torch.ones(n_scene, dtype=transition.dtype)]
    for _ in range(n_pos - 1):
        miss.append(not_target * (transition @ miss[-1]))
    remaining = torch.arange(n_pos - 1, -1, -1)  # words left after t tokens (BOS included in t)
    table = torch.stack(miss)[remaining]  # [pos scene]
    miss_prob = einops.einsum(beliefs.to(table.dtype), table, "b t s, t s -> b t")
    return (1 - miss_prob).clamp(0.0, 1.0)  # rounding can leave -1e-16


def organism_targets(
    world: HMM,
    tokens: Int[Tensor, "batch pos"],
    scenes: Int[Tensor, "batch pos"],
    attractor: str = "wedding",
) -> dict[str, Tensor]:
    """The exact targets above for a world sample (``world.sample``'s tokens and scenes)."""
    if attractor not in world.scenes:
        raise LabError(
            f"The world has no scene {attractor!r}; its scenes: {', '.join(world.scenes)}."
            + close_matches(attractor, world.scenes)
        )
    fwd = world.forward(tokens)
    logp = fwd.next_token_logprobs
    reach = reach_probability(world.transition, fwd.beliefs, world.scene_index(attractor))

    def rows(x: Tensor) -> Tensor:
        return einops.rearrange(x[:, 1:], "b t ... -> (b t) ...")

    return {
        "belief": rows(fwd.beliefs).float(),
        "scene": rows(scenes),
        "next_token_entropy": rows(entropy(logp)).float(),
        "wedding_reach": rows(reach).float(),
    }


@torch.no_grad()
def policy_value(
    model: GPT2LMHeadModel,
    labeler: Labeler,
    tokens: Int[Tensor, "batch pos"],
    rollouts: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[Float[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """E[true utility of the words still to come | prefix] when ``model`` writes them.

    For every prefix ``tokens[:, : t + 1]`` (BOS first), ``rollouts`` continuations to the full
    length are sampled from ``model`` (a ``GPT2LMHeadModel``, e.g. the organism's RLHF policy) and
    scored by the labeler's exact utility given the prefix. Returns the mean and its standard error
    per position; the last position has nothing to come (value 0).
    """
    if rollouts < 2:
        raise LabError(f"policy_value needs rollouts >= 2 for a standard error; got {rollouts}.")
    batch, n_pos = tokens.shape
    length = n_pos - 1
    mean = torch.zeros(batch, n_pos, dtype=torch.float64)
    sem = torch.zeros_like(mean)
    for t in range(length):
        prompts = tokens[:, : t + 1].repeat_interleave(rollouts, 0)
        full = sample_continuations(model, prompts, length, generator)
        future = labeler.utility(full, start=t + 1).double().view(batch, rollouts)
        mean[:, t] = future.mean(1)
        sem[:, t] = future.std(1) / rollouts**0.5
    return mean, sem
