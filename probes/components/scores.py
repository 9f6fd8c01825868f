"""Every localization method's score for every component of a GPT-2 pair, side by side, and the
faithfulness of a ranking (the share of the departure removed by swapping its top-n out).

Two departure metrics, each measured on the tuned model with some components given the base's
weights or activations, as the share of the tuned model's departure that is removed
(``(m(tuned) - m(changed)) / (m(tuned) - m(base))``):

- ``kl``: KL(tuned || base) in nats per token, mean over every position of the prompts;
- ``attractor``: the attractor's probability (the total probability of its token set, e.g. the
  wedding words), mean over every position. It isolates the steering: on a planted organism the
  drift fine-tune moves every weight and much of KL(tuned || base), but not the attractor.

Methods (``METHODS``, by name), each ``fn(inputs) -> {metric: {component: score}}``:

- ``swap``: component swapping (locus): the share removed when the component takes the base's
  weights (``probes.patching.swap``; ``physical_swap_scores`` is the brute-force reference, a deep
  copy
  with the slices overwritten, ``probes.components.gpt2_weights.swap_components``);
- ``activation_patching``: cross-model activation patching (mediation, today's steering score):
  the share removed when the component's output (a head's ``z``, an MLP's ``mlp_out``) takes
  its base activation (``probes.patching.patch.cross_model``);
- ``attribution_patching``: the first-order estimate of that share
(``probes.patching.attribution``);
- ``weight_norm``: ``||W_tuned - W_base|| / ||W_base||`` over the component's slices;
- ``random``: a seeded uniform draw (the chance baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.outputs import kl_per_token
from probes.components.classify import component_name, component_sites
from probes.components.gpt2_weights import component_names, swap_components, weight_change
from probes.patching import swap
from probes.patching.attribution import attribute
from probes.patching.metrics import KLMetric, TokenSetProb
from probes.patching.patch import PatchConfig, cross_model
from probes.patching.table import sites_of

__all__ = [
    "METHODS",
    "METRICS",
    "PairInputs",
    "departure_values",
    "faithfulness_curve",
    "physical_swap_scores",
    "score_methods",
]

METRICS = ("attractor", "kl")  # the departure metrics, the first decides rankings


@dataclass(frozen=True)
class PairInputs:
    """One pair to localize in: HF models for weight work, hooked models for patching."""

    base: Any  # HF GPT2LMHeadModel of the base
    tuned: Any  # HF GPT2LMHeadModel of the tuned model
    hooked: Any  # lab.models.pair.ModelPair of the same two checkpoints (patching, attribution)
    tokens: Int[Tensor, "batch pos"]  # prompts (BOS first), every position scored
    attractor: tuple[int, ...]  # token ids of the attractor's set
    seed: int = 0  # seed of the random baseline


@torch.no_grad()
def _logprobs(model: Any, tokens: Tensor) -> Float[Tensor, "batch pos vocab"]:
    return model(tokens).logits.float().log_softmax(-1)


def departure_values(
    model: Any,
    base_lp: Float[Tensor, "batch pos vocab"],
    tokens: Int[Tensor, "batch pos"],
    attractor: Sequence[int],
) -> dict[str, float]:
    """(KL(model || base), attractor probability) of an HF model, means over every position."""
    lp = _logprobs(model, tokens)
    kl = kl_per_token(lp, base_lp)
    prob = float(lp.exp()[..., list(attractor)].sum(-1).mean())
    return {"kl": kl, "attractor": prob}


def _removed(values: dict, tuned: dict, base: dict) -> dict:
    out = {}
    for m in METRICS:
        gap = tuned[m] - base[m]
        if gap == 0:
            raise LabError(f"The tuned model does not depart from the base in {m}; no share.")
        out[m] = (tuned[m] - values[m]) / gap
    return out


class _Reference:
    """Base log-probabilities and both models' metric values, computed once per pair."""

    def __init__(self, x: PairInputs) -> None:
        self.base_lp = _logprobs(x.base, x.tokens)
        self.base = {"kl": 0.0, "attractor": self._prob(self.base_lp, x.attractor)}
        self.tuned = departure_values(x.tuned, self.base_lp, x.tokens, x.attractor)

    @staticmethod
    def _prob(lp: Tensor, ids: Sequence[int]) -> float:
        return float(lp.exp()[..., list(ids)].sum(-1).mean())

    def removed(self, model: Any, x: PairInputs) -> dict:
        values = departure_values(model, self.base_lp, x.tokens, x.attractor)
        return _removed(values, self.tuned, self.base)


def swap_scores(x: PairInputs, ref: _Reference | None = None) -> dict:
    """Share removed when each component alone takes the base's weights
    (``probes.patching.swap``)."""
    ref = ref or _Reference(x)
    metrics = list(_patching_metrics(x, ref).values())
    tokens = x.tokens.to(x.hooked.device)
    quiet = swap.SwapConfig(progress=False)
    table = swap.swap_components(x.hooked, tokens, metrics, into="tuned", config=quiet)
    return _by_component(table)


def physical_swap_scores(x: PairInputs, ref: _Reference | None = None) -> dict:
    """``swap_scores`` by brute force: a deep copy of the tuned model with the component's
    slices overwritten by the base's, one full forward each (the reference)."""
    ref = ref or _Reference(x)
    out: dict = {m: {} for m in METRICS}
    for name in component_names(x.tuned):
        shares = ref.removed(swap_components(x.tuned, x.base, [name]), x)
        for m in METRICS:
            out[m][name] = shares[m]
    return out


def _patching_metrics(x: PairInputs, ref: _Reference):
    read = tuple(range(x.tokens.shape[1]))
    return {
        "kl": KLMetric(positions=read, reference=ref.base_lp, patched_first=True, label="kl"),
        "attractor": TokenSetProb(positions=read, tokens=tuple(x.attractor), label="attractor"),
    }


def _by_component(table: pd.DataFrame) -> dict:
    out: dict = {m: {} for m in METRICS}
    for site, row in zip(sites_of(table), table.itertuples(), strict=True):
        out[row.metric][component_name(site)] = float(row.share)
    return out


def activation_patching_scores(x: PairInputs, ref: _Reference | None = None) -> dict:
    """Share removed when each component's output takes its base activation."""
    ref = ref or _Reference(x)
    metrics = list(_patching_metrics(x, ref).values())
    sites = component_sites(x.hooked.base, x.tokens.shape[1])
    tokens = x.tokens.to(x.hooked.device)
    table = cross_model(
        x.hooked,
        tokens,
        sites,
        metrics,
        into="tuned",
        by_position=False,
        config=PatchConfig(progress=False),
    )
    return _by_component(table)


def attribution_scores(x: PairInputs, ref: _Reference | None = None) -> dict:
    """Attribution patching's estimate of the activation-patching share."""
    ref = ref or _Reference(x)
    tokens = x.tokens.to(x.hooked.device)
    tables = [
        attribute(x.hooked.tuned, tokens, x.hooked.base, tokens, kind, metric, by_position=False)
        for metric in _patching_metrics(x, ref).values()
        for kind in ("z", "mlp_out")
    ]
    return _by_component(pd.concat(tables, ignore_index=True))


def weight_norm_scores(x: PairInputs, ref: _Reference | None = None) -> dict:
    """Relative weight change of each component (one score for every metric)."""
    change = weight_change(x.base, x.tuned)
    return {m: dict(change) for m in METRICS}


def random_scores(x: PairInputs, ref: _Reference | None = None) -> dict:
    """A seeded uniform score per component (one score for every metric)."""
    names = component_names(x.tuned)
    draws = np.random.default_rng(x.seed).random(len(names))
    return {m: dict(zip(names, map(float, draws), strict=True)) for m in METRICS}


METHODS: dict[str, Callable[..., dict]] = {
    "swap": swap_scores,
    "activation_patching": activation_patching_scores,
    "attribution_patching": attribution_scores,
    "weight_norm": weight_norm_scores,
    "random": random_scores,
}


def score_methods(x: PairInputs, methods: Sequence[str] | None = None) -> dict:
    """``{method: {metric: {component: score}}}`` for the named methods (default: all)."""
    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LabError(f"Unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}.")
    ref = _Reference(x)
    return {m: METHODS[m](x, ref) for m in methods}


def faithfulness_curve(x: PairInputs, order: Sequence[str]) -> dict[str, list[float]]:
    """Share removed (per metric) when the first n of ``order`` take the base's weights,
    n = 0..N (n = 0: nothing swapped, share 0)."""
    ref = _Reference(x)
    curve: dict[str, list[float]] = {m: [0.0] for m in METRICS}
    model = x.tuned
    for name in order:
        model = swap_components(model, x.base, [name])
        shares = ref.removed(model, x)
        for m in METRICS:
            curve[m].append(shares[m])
    return curve
