"""Sweep analyses that need the live models: cross-model patching, component classification,
the top components' joint effect on generations, and example pictures for the report.

Each is ``(SweepContext, params) -> tidy DataFrame``; ``lab.sweeps.analyses.registry`` registers
them. Their steering metric defaults to the attractor words of the organism's wedding scene on the
organism pair, and to none (KL to the base only) on any other pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from lab.errors import LabError
from lab.models.outputs import model_kl
from lab.organism.metrics import scene_reach
from lab.organism.story import SCENE_WORDS
from lab.runtime import device_of
from lab.sweeps.context import SweepContext
from lab.types import Tokens
from probes.components.classify import ClassifyConfig, classify
from probes.components.intervals import departure
from probes.components.migration import top_steering
from probes.components.prune import check_pruning
from probes.patching.attribution import attribute
from probes.patching.metrics import KLMetric, Metric, TokenSetProb
from probes.patching.patch import PatchConfig, cross_model, patch_jointly
from probes.patching.sites import Site
from probes.patching.swap import SwapConfig, swap_components
from probes.patching.units import component_name
from probes.sampling import sample

__all__ = [
    "PATCHING_METHODS",
    "ClassifyParams",
    "ExamplesParams",
    "JointParams",
    "PatchingParams",
    "SwapParams",
    "classify_job",
    "examples_job",
    "joint_job",
    "patching_job",
    "swap_job",
]


def attractor_ids(ctx: SweepContext, words: list[str]) -> tuple[int, ...]:
    """Token ids of the attractor words (each must be one token of the pair's vocabulary)."""
    tok = ctx.pair().tokenizer
    ids = []
    for w in words:
        enc = tok(w, add_special_tokens=False)["input_ids"]
        if len(enc) != 1 or enc[0] == tok.unk_token_id:
            raise LabError(f"Attractor word {w!r} is not one token of this tokenizer ({enc}).")
        ids.append(enc[0])
    return tuple(ids)


def _tokens(ctx: SweepContext, n: int | None) -> Tokens:
    """The dataset's first ``n`` prompts, cut to the shortest one's length (cross-model patching
    runs both models on the same tokens, so prompts only need a common length, not alignment)."""
    data = ctx.dataset()
    tokens = data.tokens[:n] if n else data.tokens
    shortest = int(data.lengths[: len(tokens)].min())
    if shortest < 2:
        raise LabError("The dataset has a prompt of fewer than 2 tokens; drop it.")
    return tokens[:, :shortest]


def _logits(ctx: SweepContext, tokens: Tokens) -> dict[str, Tensor]:
    """Each model's logits on ``tokens``, once per job: the KL reference and the departures."""
    with torch.inference_mode():
        return {role: m(tokens.to(device_of(m))) for role, m in ctx.pair().models.items()}


def _steering(ctx: SweepContext, tokens: Tokens, attractor: list[str] | None) -> dict[str, Metric]:
    """The attractor words' probability when there are any (``None``: the wedding scene's words
    on the organism, none on other pairs)."""
    if attractor is None:
        attractor = list(SCENE_WORDS["wedding"]) if ctx.organism() is not None else []
    if not attractor:
        return {}
    pos = tuple(range(tokens.shape[1]))
    return {"attractor_prob": TokenSetProb(positions=pos, tokens=attractor_ids(ctx, attractor))}


def _metrics(
    ctx: SweepContext, tokens: Tokens, attractor: list[str] | None, logits: dict[str, Tensor]
) -> dict[str, Metric]:
    """KL to the base (from its ``logits``) and the steering metrics."""
    pos = tuple(range(tokens.shape[1]))
    kl = KLMetric.from_logits(logits["base"], positions=pos)
    return {"kl_to_base": kl, **_steering(ctx, tokens, attractor)}


@dataclass(frozen=True)
class PatchingParams:
    """Cross-model patching of every site of some kinds, both directions."""

    sites: list[str] = field(default_factory=lambda: ["z", "mlp_out"])  # site kinds
    by_position: bool = False  # one patch per position (else all positions at once)
    attractor: list[str] | None = None  # steering words (None: wedding words on the organism)
    n_prompts: int | None = 64  # prompts used (None: all of the dataset)
    method: str = "exact"  # a key of PATCHING_METHODS: exact patching, or attribution's estimate

    def __post_init__(self) -> None:  # refused when the config loads, not when the job runs
        if self.method not in PATCHING_METHODS:
            raise LabError(
                f"Unknown patching method {self.method!r}; known: {', '.join(PATCHING_METHODS)}."
            )


def _exact(pair, tokens, kind: str, metrics: list[Metric], into: str, by_position: bool):
    """Exact cross-model patching (probes.patching.patch.cross_model)."""
    quiet = PatchConfig(progress=False)
    return cross_model(
        pair, tokens, kind, metrics, into=into, by_position=by_position, config=quiet
    )


def _attribution(pair, tokens, kind: str, metrics: list[Metric], into: str, by_position: bool):
    """Attribution patching's first-order estimate of it (probes.patching.attribution): one
    forward and a backward per metric for every site. A KL to the model patched into has no
    gradient there, so into base its estimate of KL to the base is 0."""
    other = "base" if into == "tuned" else "tuned"
    return attribute(
        pair.models[into], tokens, pair.models[other], tokens, kind, metrics,
        by_position=by_position,
    )  # fmt: skip


# how a patching analysis patches: (pair, tokens, kind, metrics, into, by_position) -> table
PATCHING_METHODS = {"exact": _exact, "attribution": _attribution}


def patching_job(ctx: SweepContext, p: PatchingParams) -> pd.DataFrame:
    method = PATCHING_METHODS[p.method]
    tokens = _tokens(ctx, p.n_prompts)
    logits = _logits(ctx, tokens)
    metrics = _metrics(ctx, tokens, p.attractor, logits)
    runs = (
        (into, method(ctx.pair(), tokens, kind, list(metrics.values()), into, p.by_position))
        for kind in p.sites
        for into in INTO
    )
    table = _tidy(metrics, runs).assign(method=p.method)
    return _with_departures(ctx, tokens, metrics, table, logits)


INTO = ("tuned", "base")  # both directions of a cross-model analysis


def _tidy(metrics: dict[str, Metric], runs: Iterable[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One table of (direction, result) runs, metrics named by their config keys."""
    names = {m.name: k for k, m in metrics.items()}
    parts = [t.assign(into=into, metric=t.metric.map(names)) for into, t in runs]
    return pd.concat(parts, ignore_index=True)


def _with_departures(
    ctx: SweepContext,
    tokens: Tokens,
    metrics: dict[str, Metric],
    table: pd.DataFrame,
    logits: dict[str, Tensor],
) -> pd.DataFrame:
    """``table`` with each metric's departure and its interval, so the report can flag shares
    of noise."""
    gaps = departure(ctx.pair(), tokens, metrics, seed=ctx.config.seed, logits=logits)
    return table.merge(gaps, on=["metric", "into"], how="left")


@dataclass(frozen=True)
class SwapParams:
    """Component swapping (probes.patching.swap), both directions: whose computation carries the
    steering."""

    unit: str = "head"  # attention unit: "head" or "kv_group" (every MLP is swapped too)
    attractor: list[str] | None = None  # steering words (None: wedding words on the organism)
    n_prompts: int | None = 64  # prompts used (None: all of the dataset)


def swap_job(ctx: SweepContext, p: SwapParams) -> pd.DataFrame:
    """Rows as a patching table's (``probes.patching.table.COLUMNS``) plus ``into``, ``component``
    and
    each metric's departure with its interval: ``share`` is the part of the departure removed
    (into tuned) or induced (into base) by one swap."""
    tokens = _tokens(ctx, p.n_prompts)
    logits = _logits(ctx, tokens)
    metrics = _metrics(ctx, tokens, p.attractor, logits)
    config = SwapConfig(progress=False)
    runs = (
        (into, swap_components(ctx.pair(), tokens, list(metrics.values()), into=into,
                               unit=p.unit, config=config))
        for into in INTO
    )  # fmt: skip
    table = _tidy(metrics, runs)
    table["component"] = [component_name(r.site, r.layer, r.head) for r in table.itertuples()]
    return _with_departures(ctx, tokens, metrics, table, logits)


@dataclass(frozen=True)
class ClassifyParams:
    """Prediction and steering scores per component (see probes.components.classify)."""

    n_prompts: int = 128  # prompts (cut into chunks for the bootstrap)
    n_chunks: int = 8  # bootstrap chunks
    prediction_threshold: float = 0.02  # nats/token
    steering_threshold: float = 0.1  # share of the departure
    attractor: list[str] | None = None  # steering words (None: wedding words on the organism)
    prune_mass: float | None = None  # attribution pruning (ClassifyConfig): None, exhaustive
    max_exact: int | None = None  # with prune_mass: at most this many components exactly

    def __post_init__(self) -> None:  # refused when the config loads, not when the job runs
        check_pruning(self.prune_mass, self.max_exact)


def classify_job(ctx: SweepContext, p: ClassifyParams) -> pd.DataFrame:
    tokens = _tokens(ctx, p.n_prompts)
    cfg = ClassifyConfig(
        n_chunks=p.n_chunks,
        prediction_threshold=p.prediction_threshold,
        steering_threshold=p.steering_threshold,
        seed=ctx.config.seed,
        prune_mass=p.prune_mass,
        max_exact=p.max_exact,
    )
    reference = None
    if "next_token_probs" in ctx.dataset().targets:  # the organism: the world's exact truth
        reference = ctx.dataset().targets["next_token_probs"][: len(tokens)].log().clamp_min(-1e4)
    steering = _steering(ctx, tokens, p.attractor)
    return classify(ctx.pair(), tokens, reference=reference, steering=steering, config=cfg)


def _sites(table: pd.DataFrame) -> list[Site]:
    return [Site.from_row(r) for r in table.itertuples()]


@dataclass(frozen=True)
class JointParams:
    """The top components together: share of KL and of attractor-reaching they carry."""

    top: int = 5  # how many of the top steering components
    n_prompts: int = 128  # generation prompts (dataset prefixes)
    prompt_len: int | None = None  # prompt tokens before each continuation (None: organism's)
    scene: str = "wedding"  # the organism scene whose reach is counted


def joint_job(ctx: SweepContext, p: JointParams) -> pd.DataFrame:
    scores = ctx.needed("classify")
    top = top_steering(scores, n=p.top)
    names, sites, pair = top["component"].tolist(), _sites(top), ctx.pair()
    tokens = _tokens(ctx, p.n_prompts)
    kl = KLMetric.to_model(pair.base, tokens, positions=tuple(range(tokens.shape[1])))
    kl_tuned = patch_jointly(pair.tuned, tokens, pair.tuned, tokens, [], kl)
    kl_patched = patch_jointly(pair.tuned, tokens, pair.base, tokens, sites, kl)
    rows = [
        {"metric": "kl_to_base_tuned", "value": kl_tuned},
        {"metric": "kl_to_base_patched", "value": kl_patched},
        {"metric": "kl_share", "value": 1 - kl_patched / kl_tuned if kl_tuned else 0.0},
    ]
    org = ctx.organism()
    if org is not None:
        world, start = org.world, p.prompt_len or org.prompt_words + 1
        prompts, n_new = tokens[:, :start], tokens.shape[1] - start
        reach = {}
        for name, model, source in (
            ("tuned", pair.tuned, None),
            ("base", pair.base, None),
            ("patched", pair.tuned, pair.base),
        ):
            g = torch.Generator().manual_seed(ctx.config.seed)
            out = sample(model, prompts, n_new, g, source=source, sites=sites if source else ())
            reach[name] = scene_reach(world, out, p.scene, start)
            rows.append({"metric": f"reach_{name}", "value": reach[name]})
        gap = reach["tuned"] - reach["base"]
        rows.append(
            {
                "metric": "reach_share",
                "value": (reach["tuned"] - reach["patched"]) / gap if gap else 0.0,
            }
        )
    return pd.DataFrame(rows).assign(components=", ".join(names))


@dataclass(frozen=True)
class ExamplesParams:
    """Attention patterns of the top steering heads and per-token KL on a tuned continuation."""

    heads: int = 3  # top steering heads to show
    prompt_len: int = 8  # prompt tokens before the sampled continuation (at most the prompt's)
    n_new: int = 24  # sampled tokens (fewer if the context is shorter)


@torch.inference_mode()
def examples_job(ctx: SweepContext, p: ExamplesParams) -> pd.DataFrame:
    pair = ctx.pair()
    scores = ctx.needed("classify")
    top = top_steering(scores[scores.kind == "head"], n=p.heads)
    heads = top["component"].tolist()
    tokens = _tokens(ctx, 1)
    g = torch.Generator().manual_seed(ctx.config.seed)
    prompt = tokens[:, : p.prompt_len]
    n_new = min(p.n_new, pair.cfg.n_ctx - prompt.shape[1])
    text = sample(pair.tuned, prompt, n_new, g)
    words = [pair.tokenizer.decode([t]) for t in text[0].tolist()]
    _, cache = pair.tuned.run_with_cache(
        text.to(pair.device), names_filter=lambda n: n.endswith("hook_pattern")
    )
    pats = [cache[f"blocks.{s.layer}.attn.hook_pattern"][0, s.head].tolist() for s in _sites(top)]
    kl = model_kl(pair.tuned, pair.base, text)[0]
    # position t's KL is about the next token: show it on the token it predicts
    values = [0.0, *kl[:-1].tolist()]
    rows = [
        {
            "kind": "attention",
            "title": "Top steering heads in tuned: " + ", ".join(heads),
            "payload": json.dumps({"tokens": words, "pattern": pats, "labels": heads}),
        },
        {
            "kind": "kl_tokens",
            "title": "Per-token KL(tuned || base) on a tuned continuation",
            "payload": json.dumps({"tokens": words, "values": values}),
        },
    ]
    return pd.DataFrame(rows)
