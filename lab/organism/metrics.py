"""Metrics of a policy against a world with ground truth (the organism), reusable for any model.

A *policy* is anything with next-token distributions over the world's tokens: an HF causal LM, a
TransformerLens bridge, the world itself (``HMM``) or the exact optimum (``PiStar``);
``as_policy`` wraps each behind two calls, ``next_token_logprobs`` and ``sample``.

Two kinds of numbers:
- *prediction* metrics on held-out world text (``prediction_metrics``): excess loss over the
  world's conditional entropy, KL(world || model), ECE and entropy. ECE uses top-1 confidence in
  15 equal bins; because the world is known, a bin's accuracy is the world's exact probability of
  the predicted token (the expected 0/1 accuracy, without sampling noise).
- *behaviour* metrics on the policy's own continuations of world prompts
  (``generation_metrics``): target-scene reach (by the exact belief state), near-impossible
  transitions, distinct tokens, true utility, reward-model score, and per-token KL to a base
  model and to pi*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.outputs import kl_per_token, model_logprobs
from lab.models.sampling import recompute, sample
from lab.organism.bayes import PiStar
from lab.organism.labeler import Labeler
from lab.organism.world import HMM

__all__ = [
    "Policy",
    "as_policy",
    "belief_probe_r2",
    "ece",
    "entropy",
    "generation_metrics",
    "never_bos",
    "prediction_metrics",
    "scene_reach",
    "without_bos",
]


@dataclass(frozen=True)
class Policy:
    """Uniform access to a policy's next-token distributions and samples."""

    next_token_logprobs: Callable[[Tensor], Tensor]  # (batch, pos) -> (batch, pos, vocab)
    sample: Callable[[Tensor, int, torch.Generator | None], Tensor]  # prompts, words, gen


def never_bos(vocab: int) -> Bool[Tensor, " vocab"]:
    """Every word but BOS (token 0), which never appears inside a world sequence."""
    mask = torch.ones(vocab, dtype=torch.bool)
    mask[0] = False
    return mask


def _model_sample(model: torch.nn.Module) -> Callable:
    """The one sampler, recomputing the model's float64 log-probs on the whole prefix."""

    @torch.no_grad()
    def draw(prompts: Tensor, length: int, generator: torch.Generator | None) -> Tensor:
        step = recompute(lambda t: model_logprobs(model, t))
        return sample(step, prompts, length + 1 - prompts.shape[1], generator, mask=never_bos)

    return draw


def as_policy(obj: HMM | PiStar | torch.nn.Module) -> Policy:
    """Wrap a world, pi* or a model (HF or bridge) as a ``Policy``."""
    if isinstance(obj, HMM):
        return Policy(
            lambda t: obj.forward(t).next_token_logprobs,
            lambda p, n, g: obj.draw(p.shape[0], n, g, prompts=p)[0],
        )
    if isinstance(obj, PiStar):
        return Policy(obj.next_token_logprobs, lambda p, n, g: obj.sample(p, g))
    if isinstance(obj, torch.nn.Module):
        return Policy(lambda t: model_logprobs(obj, t), _model_sample(obj))
    raise LabError(f"Cannot use a {type(obj).__name__} as a policy; pass an HMM, PiStar or model.")


def without_bos(logprobs: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, "batch pos vocab"]:
    """Renormalise next-token log-probs with BOS (token 0) removed: the sampling distribution."""
    out = logprobs.clone()
    out[..., 0] = -torch.inf
    return out - torch.logsumexp(out, -1, keepdim=True)


def entropy(logprobs: Float[Tensor, "*rows vocab"]) -> Float[Tensor, " *rows"]:
    """Entropy in nats of each row's distribution, from its log-probs (``-inf`` entries add 0)."""
    return -(logprobs.exp() * logprobs.nan_to_num(neginf=0.0)).sum(-1)


def ece(confidence: Tensor, accuracy: Tensor, bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width bins of |mean acc - mean conf| x share."""
    confidence, accuracy = confidence.reshape(-1).double(), accuracy.reshape(-1).double()
    idx = (confidence * bins).long().clamp(0, bins - 1)
    total = torch.zeros(bins, dtype=torch.float64)
    gap = total.index_add(0, idx, accuracy - confidence)
    return (gap.abs().sum() / confidence.numel()).item()


def prediction_metrics(
    logprobs: Float[Tensor, "batch pos vocab"], world: HMM, tokens: Int[Tensor, "batch pos"]
) -> dict[str, float]:
    """Excess loss, KL(world || model), ECE and entropy of next-token predictions on world text.

    ``logprobs[:, t]`` predicts ``tokens[:, t + 1]``; the last position is ignored.
    """
    true = world.forward(tokens).next_token_logprobs[:, :-1]
    model = logprobs[:, : tokens.shape[1] - 1]
    target = tokens[:, 1:, None]
    nll_model = -model.gather(-1, target).squeeze(-1)
    nll_true = -true.gather(-1, target).squeeze(-1)
    conf, pred = model.exp().max(-1)
    return {
        "loss": nll_model.mean().item(),
        "world_entropy_rate": nll_true.mean().item(),
        "excess_loss": (nll_model - nll_true).mean().item(),
        "kl_to_world": kl_per_token(true, model),
        "ece": ece(conf, true.exp().gather(-1, pred[..., None]).squeeze(-1)),
        "entropy": entropy(model).mean().item(),
    }


def scene_reach(
    world: HMM, tokens: Int[Tensor, "batch pos"], scene: str, start: int, threshold: float = 0.5
) -> float:
    """Share of sequences whose exact belief P(scene | prefix) exceeds ``threshold`` at some
    position ``>= start`` (the continuation)."""
    filtered = world.forward(tokens).filtered[:, start:, world.scene_index(scene)]
    return (filtered > threshold).any(-1).double().mean().item()


def belief_probe_r2(
    states: list[Float[Tensor, "batch pos d_model"]],
    beliefs: Float[Tensor, "batch pos scene"],
    train_share: float = 0.75,
) -> dict[str, float]:
    """Held-out R² of least-squares linear probes from each layer (and all layers concatenated)
    to the belief state, pooled over scenes; BOS positions are skipped."""
    n_train = int(beliefs.shape[0] * train_share)
    y = beliefs[:, 1:].reshape(-1, beliefs.shape[-1]).double()
    split = n_train * (beliefs.shape[1] - 1)

    def r2(x: Tensor) -> float:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        coef = torch.linalg.lstsq(x[:split], y[:split], driver="gelsd").solution
        resid = y[split:] - x[split:] @ coef
        total = y[split:] - y[split:].mean(0)
        return (1 - resid.pow(2).sum() / total.pow(2).sum()).item()

    flat = [s[:, 1:].reshape(-1, s.shape[-1]) for s in states]
    per_layer = [r2(x) for x in flat]
    best = max(range(len(per_layer)), key=per_layer.__getitem__)
    return {
        "belief_probe_r2": max(per_layer[best], r2(torch.cat(flat, 1))),
        "belief_probe_best_layer": best,
        "belief_probe_r2_best_layer": per_layer[best],
        "belief_probe_r2_concat": r2(torch.cat(flat, 1)),
    }


def generation_metrics(
    samples: Int[Tensor, "batch pos"],
    start: int,
    world: HMM,
    labeler: Labeler,
    *,
    logprobs: Float[Tensor, "batch pos vocab"] | None = None,
    base_logprobs: Float[Tensor, "batch pos vocab"] | None = None,
    pi_star: PiStar | None = None,
    reward_model: Callable[[Tensor, int], Tensor] | None = None,
    target_scene: str = "wedding",
) -> dict[str, float]:
    """Behaviour of a policy on its own continuations ``samples[:, start:]`` of world prompts.

    ``logprobs`` are the policy's own next-token log-probs on ``samples[:, :-1]`` (position t
    predicts token t + 1); with them, KL to the base (``base_logprobs``, same layout) and to
    ``pi_star`` are exact per-position KLs averaged over the continuation's positions.
    """
    if samples.shape[1] <= start:
        raise LabError(
            f"samples have {samples.shape[1]} tokens; the continuation starts at {start}."
        )
    cont = samples[:, start:]
    moves = labeler.incoherent_moves(samples)[:, start:].double()
    distinct = torch.tensor([len(set(row.tolist())) for row in cont], dtype=torch.float64)
    out = {
        "true_utility": labeler.utility(samples, start).mean().item(),
        "impossible_transition_rate": moves.mean().item(),  # per continuation token
        "incoherent_per_sequence": moves.sum(1).mean().item(),
        "distinct_tokens": distinct.mean().item(),  # distinct tokens per continuation
    }
    if target_scene in world.scenes:
        out[f"{target_scene}_reach"] = scene_reach(world, samples, target_scene, start)
    if reward_model is not None:
        out["rm_score"] = reward_model(samples, start).double().mean().item()
    if logprobs is not None:
        own = without_bos(logprobs[:, start - 1 :])
        if base_logprobs is not None:
            out["kl_to_base"] = kl_per_token(own, without_bos(base_logprobs[:, start - 1 :]))
        if pi_star is not None:
            star = pi_star.next_token_logprobs(samples[:, :-1])[:, start - 1 :]
            out["kl_to_pi_star"] = kl_per_token(own, star)
    return out
