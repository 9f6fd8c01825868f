"""One point of a frontier and how it is measured: the shared context every method draws from.

A method yields ``Point``s. A point is either an exact policy (its next-token log-probs on its
own continuations, so KLs are exact per-position averages, as in ``generation_metrics``) or a
weighted set of base continuations (self-normalised importance weights per prompt, or a
best-of-n pick) whose KL to the base is an estimate the method states. Both are measured by
``measure``: weighted means of per-sequence true utility, reward-model score, wedding reach and
near-impossible transitions (with uniform weights these are ``generation_metrics``'s numbers),
KL to the base and to pi* of the true utility, and the ECE of the model that answers prediction
queries (the base for every method that keeps it; the policy itself for RLHF).

KL to pi*: at the point's own beta when it has one (pi*, the sampler, pi* of the RM, RLHF's
objective beta); otherwise (best-of-n) at the beta whose pi* has the point's KL to the base
("matched KL", interpolated in log beta on ``FrontierContext.match_grid``). For a weighted point,
KL(q || pi*) = KL(q || base) + E_q[log p_base(x) - log pi*(x)] over the continuation, per token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import GPT2LMHeadModel

from lab.models.outputs import kl, model_logprobs
from lab.models.sampling import kv_cached, sample
from lab.organism.bayes import PiStar
from lab.organism.evaluate import EvalData, Organism
from lab.organism.metrics import ece, never_bos, prediction_metrics, without_bos

__all__ = ["FrontierContext", "Point", "continuations", "measure"]

LogProbs = Callable[[Tensor], Tensor]  # tokens (batch, pos) -> next-token log-probs


@torch.no_grad()
def continuations(
    model: GPT2LMHeadModel, prompts: Int[Tensor, "batch prompt"], length: int, generator
) -> Int[Tensor, "batch pos"]:
    """An HF model's continuations of ``prompts`` to ``length`` words (the one sampler with its
    KV cache), drawn in float64: ``lab.models.sampling.categorical`` picks token 0 (BOS, of
    probability 0) when its uniform is exactly 0, one draw in 2^24 in float32 (seen once in the
    full frontier's 786k pool draws), one in 2^53 in float64."""
    step = kv_cached(model)
    n_new = length + 1 - prompts.shape[1]
    return sample(lambda t: step(t).double(), prompts, n_new, generator, mask=never_bos)


@dataclass(frozen=True)
class Point:
    """One point of a method's curve, as the method produced it (before measurement)."""

    knob: float  # the method's own setting (beta, n, training step)
    samples: Int[Tensor, "batch pos"]  # continuations of the context's prompts
    weights: Float[Tensor, " batch"]  # per-sample weights summing to 1 (uniform for a policy)
    predictor: str  # name of the model that answers prediction queries (for ECE)
    predict: LogProbs | None = None  # its next-token log-probs (None: "base" or "world")
    beta: float | None = None  # the point's own KL coefficient (None: match pi* by KL)
    policy: LogProbs | None = None  # an exact policy's next-token log-probs (None: weighted)
    kl_to_base: float | None = None  # estimate (nats/token) for a weighted point
    kl_how: str = "exact per token"  # how kl_to_base is known (exact, or the estimate's name)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific columns


class FrontierContext:
    """The organism, the shared prompts and texts, and cached pieces the methods share.

    ``cached(key, make)`` computes a piece methods share once (a pool of base samples, say) and
    charges its CPU seconds to every method that uses it: ``take_charges`` returns and resets
    them. What only measurement uses (pi* for KL, the matched-KL curve) is cached apart, free.
    """

    def __init__(self, org: Organism, data: EvalData, match_grid: tuple[float, ...]) -> None:
        self.org, self.data, self.match_grid = org, data, match_grid
        self.base: GPT2LMHeadModel = org.models["base"]
        self.start = org.prompt_words + 1
        self._cache: dict[Any, tuple[Any, float]] = {}
        self._charges = 0.0
        self._ece: dict[str, float] = {}
        self._stars: dict[float, PiStar] = {}
        self._scores: dict[tuple, tuple[Tensor, dict[str, Tensor]]] = {}
        self._curve: np.ndarray | None = None
        self.predictors: dict[str, LogProbs] = {
            "base": lambda t: model_logprobs(self.base, t),
            "world": lambda t: org.world.forward(t).next_token_logprobs,
        }

    # ---- shared pieces -----------------------------------------------------------------------
    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            cpu = time.process_time()
            value = make()
            self._cache[key] = (value, time.process_time() - cpu)
            self._charges -= self._cache[key][1]  # already in the caller's measured time
        value, cost = self._cache[key]
        self._charges += cost
        return value

    def take_charges(self) -> float:
        charges, self._charges = self._charges, 0.0
        return charges

    def pi_star(self, beta: float) -> PiStar:
        """pi* of the true utility at ``beta`` for measurement (cached, not charged)."""
        if beta not in self._stars:
            org = self.org
            self._stars[beta] = PiStar(org.world, org.labeler, beta, org.length)
        return self._stars[beta]

    def reward(self, samples: Tensor) -> Float[Tensor, " batch"]:
        """The reward model's score of each continuation."""
        rm = self.org.reward_model
        with torch.no_grad():
            return torch.cat([rm(x, self.start) for x in samples.split(2048)]).double()

    def base_logprobs(self, samples: Tensor) -> Tensor:
        with torch.no_grad():
            return model_logprobs(self.base, samples[:, :-1])

    def per_sample(self, samples: Tensor) -> dict[str, Float[Tensor, " batch"]]:
        """Per continuation: true utility, RM score, wedding reach (0/1), near-impossible moves
        per token and log p_base of the continuation (BOS removed, as sampled); cached while
        ``samples`` lives (a pool shared by many points is scored once)."""
        key = (samples.data_ptr(), tuple(samples.shape))
        if key not in self._scores:
            self._scores[key] = (samples, self._score(samples))
        return self._scores[key][1]

    def _score(self, samples: Tensor) -> dict[str, Tensor]:
        parts = [self._score_chunk(x) for x in samples.split(2048)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    @torch.no_grad()
    def _score_chunk(self, samples: Tensor) -> dict[str, Tensor]:
        org, start = self.org, self.start
        filtered = org.world.forward(samples).filtered[:, start:, org.world.scene_index("wedding")]
        log_base = without_bos(self.base_logprobs(samples)[:, start - 1 :])
        moves = org.labeler.incoherent_moves(samples)[:, start:].double()
        return {
            "true_utility": org.labeler.utility(samples, start).double(),
            "rm_score": org.reward_model(samples, start).double(),
            "wedding_reach": (filtered > 0.5).any(-1).double(),
            "impossible_transition_rate": moves.mean(-1),
            "log_base": log_base.gather(-1, samples[:, start:, None]).squeeze(-1).sum(-1),
        }

    # ---- prediction queries ------------------------------------------------------------------
    def ece_of(self, name: str, predict: LogProbs | None = None) -> float:
        """ECE of a predictor on the shared world texts (cached by name; ``predict`` defaults to
        the context's predictor of that name)."""
        if name not in self._ece:
            with torch.no_grad():
                lp = (predict or self.predictors[name])(self.data.texts)
            self._ece[name] = prediction_metrics(lp, self.org.world, self.data.texts)["ece"]
        return self._ece[name]

    def policy_ece(self, logprobs: LogProbs) -> float:
        """ECE of a policy's own next-token distributions, read as predictions of world text."""
        texts, world = self.data.texts, self.org.world
        with torch.no_grad():
            lp = logprobs(texts)[:, : texts.shape[1] - 1]
        truth = world.forward(texts).next_token_logprobs[:, :-1]
        conf, pred = lp.exp().max(-1)
        return ece(conf, truth.exp().gather(-1, pred[..., None]).squeeze(-1))

    # ---- matched beta ------------------------------------------------------------------------
    def match_beta(self, kl_to_base: float) -> float:
        """The beta whose pi* has ``kl_to_base`` nats/token to the base (log-beta interpolation
        on ``match_grid``; clamped to its ends)."""
        if self._curve is None:
            self._curve = self._match_curve()
        kls, log_betas = self._curve[:, 0], self._curve[:, 1]
        return float(np.exp(np.interp(kl_to_base, kls, log_betas)))

    def _match_curve(self) -> np.ndarray:
        """(KL to base, log beta) of pi* on the shared prompts, sorted by KL."""
        rows = []
        g = torch.Generator().manual_seed(1)
        for beta in sorted(self.match_grid, reverse=True):  # KL grows as beta falls
            star = self.pi_star(beta)
            samples = star.sample(self.data.prompts, g)
            own = star.next_token_logprobs(samples[:, :-1])[:, self.start - 1 :]
            base = without_bos(self.base_logprobs(samples)[:, self.start - 1 :])
            rows.append((kl(own, base).mean().item(), math.log(beta)))
        return np.array(sorted(rows))


def measure(ctx: FrontierContext, point: Point) -> dict[str, Any]:
    """Every frontier metric of one point (see the module's docstring)."""
    start, n_tokens = ctx.start, ctx.org.length + 1 - ctx.start
    keep = point.weights > 0
    samples, w = point.samples[keep], point.weights[keep].double()
    values = {k: v[keep] for k, v in ctx.per_sample(point.samples).items()}
    row: dict[str, Any] = {k: float((w * v).sum()) for k, v in values.items() if k != "log_base"}
    if point.policy is not None:
        with torch.no_grad():
            own = without_bos(point.policy(samples[:, :-1])[:, start - 1 :])
        base = without_bos(ctx.base_logprobs(samples)[:, start - 1 :])
        row["kl_to_base"] = kl(own, base).mean().item()
    else:
        row["kl_to_base"] = float(point.kl_to_base)
    beta = point.beta if point.beta is not None else ctx.match_beta(row["kl_to_base"])
    star = ctx.pi_star(beta)
    if point.policy is not None:
        star_lp = star.next_token_logprobs(samples[:, :-1])[:, start - 1 :]
        row["kl_to_pi_star"] = kl(own, star_lp).mean().item()
    else:
        log_star = torch.cat([star.log_prob(x, start) for x in samples.split(4096)])
        gap = values["log_base"] - log_star
        row["kl_to_pi_star"] = row["kl_to_base"] + float((w * gap).sum()) / n_tokens
    return row | {
        "knob": float(point.knob),
        "beta": math.nan if point.beta is None else point.beta,
        "pi_star_beta": beta,
        "pi_star_match": "own beta" if point.beta is not None else "matched KL",
        "kl_how": point.kl_how,
        "predictor": point.predictor,
        "ece": ctx.ece_of(point.predictor, point.predict),
        "policy_ece": math.nan if point.policy is None else ctx.policy_ece(point.policy),
        **point.extra,
    }
