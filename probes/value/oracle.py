"""Oracle targets: the exact soft values of the labeler's true utility, from pi*'s recursion.

``oracle_values`` reads ``lab.organism.PiStar.soft_values`` (the backward recursion of
``lab.organism.bayes``; nothing is recomputed here) for each beta of a grid:

    Q*_beta(h, x) = r(h, x) + beta log E_world[exp(U_future / beta) | h, x],

so that with p_base = p_world, p_base exp(Q* / beta) ∝ pi*. ``oracle_tokens`` draws the prefixes
the oracle head is fitted on: world text, and pi* continuations of world prompts at every beta of
the grid (the prefixes a guided sampler visits; the oracle may use pi*, the practitioner not).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.organism.bayes import PiStar
from lab.organism.labeler import Labeler
from lab.organism.world import HMM
from probes.value.head import check_beta

__all__ = ["oracle_tokens", "oracle_values"]


def oracle_values(
    world: HMM,
    labeler: Labeler,
    tokens: Int[Tensor, "batch pos"],
    betas: tuple[float, ...] | list[float],
    length: int,
) -> Float[Tensor, "batch pos beta vocab"]:
    """Exact Q*_beta(prefix ``tokens[:, :t + 1]``, x) (float64) for every beta and next token x,
    at the positions before the last of ``length`` words (``-inf`` for BOS, never emitted)."""
    for beta in betas:
        check_beta(beta)
    return torch.stack(
        [PiStar(world, labeler, beta, length).soft_values(tokens) for beta in betas], 2
    )


def oracle_tokens(
    world: HMM,
    labeler: Labeler,
    n: int,
    length: int,
    prompt_words: int,
    betas: tuple[float, ...] | list[float],
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch pos"]:
    """``n`` world sequences, then ``n`` pi* continuations of world prompts per beta: (n (1 +
    len(betas)), length + 1) tokens, in random order."""
    parts = [world.draw(n, length, generator)[0]]
    prompts = world.draw(n, prompt_words, generator)[0]
    for beta in betas:
        parts.append(PiStar(world, labeler, check_beta(beta), length).sample(prompts, generator))
    tokens = torch.cat(parts)  # shuffled, so that any held-out share mixes every source
    return tokens[torch.randperm(len(tokens), generator=generator)]
