"""Which components predict and which steer: a prediction score and a steering score per head and
MLP, in base and in tuned, with bootstrap confidence intervals over prompts.

For a component c (one head's output ``z`` or one MLP's output, at every position) of model m:

- **prediction score**: the extra KL(reference || m), nats per token, when c is resample-ablated
  in m (its activation taken from other prompts of the batch). The reference is the truth: the
  world's exact next-token distribution for the organism; the base model's own distribution for a
  real pair, where the world is unknown.
- **steering score**: the share of the tuned model's departure from the base that c carries,
  measured by cross-model patching on the same prompts (``probes.patching.patch.cross_model``). In
  tuned: the share of KL(tuned || base) (or of a steering metric, e.g. the probability of the
  attractor words) *removed* when c takes its base activation. In base: the share *induced* when
  c takes its tuned activation. The migration map draws each component from its base point to
  its tuned point.

Confidence intervals come from a cluster bootstrap: the prompts are cut into ``n_chunks`` chunks,
each chunk is patched separately, and chunks are resampled; shares are ratios of resampled means.
A share divides by the metric's departure (the gap from the patched model's own value to the
other model's): each steering row carries that gap with its interval, and ``within_noise`` marks
a gap whose interval includes 0, where the share is a ratio of noise and no finding (nor is it
labelled steering-like). ``departure`` (``probes.components.intervals``) gives the same interval
for a patching table's metrics.
Labels (prediction-like, steering-like, both, neither) use thresholds from ``ClassifyConfig``.

**Pruning** (``ClassifyConfig.prune_mass``; for real models, where exact patching of every
component costs hours on a CPU): attribution patching (``probes.patching.attribution``) estimates
every component's effect on all prompts at once, and exact patching runs only on the candidates
``probes.components.prune`` selects from the steering estimates into tuned (every steering
metric), until the attribution mass left out is below ``prune_mass``. The candidates get exact
scores in both models and for both scores; every other component keeps its attribution estimate
(``exact`` False, no interval). Candidates come from the steering direction into tuned because a
KL's first-order estimate vanishes at its own reference: into base (KL to the base) and the
prediction score of a model against its own distribution have zero gradient there, so their
estimates are kept but cannot choose. Each (model, score, metric) carries ``rank_corr``, the
Spearman correlation of the exact scores with their estimates over the candidates, and
``mass_left_out``, the estimates' mass it did not patch exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.runtime import device_of
from lab.types import Tokens
from probes.components.intervals import bootstrap, interval
from probes.components.prune import check_pruning, select_candidates, with_estimates
from probes.patching.attribution import attribute
from probes.patching.metrics import KLMetric, Metric
from probes.patching.patch import PatchConfig, cross_model, patch
from probes.patching.sites import Site, enumerate_sites
from probes.patching.units import SITE_UNITS

__all__ = [
    "ClassifyConfig",
    "ScoreOptions",
    "classify",
    "classify_scores",
    "component_name",
    "component_sites",
    "score_components",
]


@dataclass(frozen=True)
class ClassifyConfig:
    """How components are scored and labelled."""

    n_chunks: int = 8  # prompt chunks; the bootstrap resamples chunks
    n_boot: int = 1000  # bootstrap resamples
    ci: float = 0.9  # confidence level of the intervals
    prediction_threshold: float = 0.02  # nats/token of extra KL that make a component predictive
    steering_threshold: float = 0.1  # share of the departure that makes a component steer
    steering_metric: str = "kl_to_base"  # the metric the labels and the map use
    seed: int = 0  # bootstrap and ablation seed
    prune_mass: float | None = None  # None: exact patching of every component; else exact only
    # until the attribution mass left out is below this fraction (0: every component, exactly)
    max_exact: int | None = None  # with prune_mass: at most this many components patched exactly

    def __post_init__(self) -> None:
        check_pruning(self.prune_mass, self.max_exact)


def component_sites(model: Any, n_pos: int) -> list[Site]:
    """Every head's output and every MLP's output, each at all positions."""
    heads = enumerate_sites("z", model, n_pos, by_position=False)
    mlps = enumerate_sites("mlp_out", model, n_pos, by_position=False)
    return sorted([*heads, *mlps], key=lambda s: (s.layer, s.kind != "z", s.head or 0))


def component_name(site: Site) -> str:
    """``L1H3`` for a head, ``L1 MLP`` for an MLP: the organism's spelling
    (``lab.organism.components``), which planted sets and the weight methods use;
    ``probes.patching.units.component_name`` writes a swap table's ``L1.mlp``."""
    return f"L{site.layer}H{site.head}" if site.kind == "z" else f"L{site.layer} MLP"


def _logprobs(model: Any, tokens: Tokens) -> Float[Tensor, "batch pos vocab"]:
    with torch.inference_mode():
        return model(tokens.to(device_of(model))).log_softmax(-1).float()


def _chunk_rows(model_name: str, score: str, metric: str, table: pd.DataFrame, chunk: int):
    for r in table.itertuples():
        site = Site.from_row(r)
        yield {
            "component": component_name(site),
            "kind": SITE_UNITS[site.kind],
            "layer": site.layer,
            "head": site.head,
            "model": model_name,
            "score": score,
            "metric": metric,
            "chunk": chunk,
            "value": float(r.value),
            "target": float(r.target),
            "source": float(r.source),
            "exact": chunk >= 0,  # chunk -1: attribution's estimate on all prompts
        }


def score_components(
    pair: Any,
    tokens: Tokens,
    *,
    reference: Float[Tensor, "batch pos vocab"] | None = None,
    steering: dict[str, Metric] | None = None,
    config: ClassifyConfig | None = None,
) -> pd.DataFrame:
    """Per-chunk raw patching results for every component (see the module doc).

    ``reference``: log-probabilities of the true next-token distribution (the organism's world);
    None uses the base model's own. ``steering``: extra steering metrics by name (e.g. the
    attractor's probability), besides ``kl_to_base``.
    """
    config = config or ClassifyConfig()
    n = tokens.shape[0]
    if n < 2 * config.n_chunks:
        raise LabError(
            f"{n} prompts cannot make {config.n_chunks} chunks of at least two (resample "
            "ablation swaps prompts within a chunk); give more prompts or lower n_chunks."
        )
    positions = tuple(range(tokens.shape[1]))
    base_lp = _logprobs(pair.base, tokens)
    ref = base_lp if reference is None else reference.float()
    sites = component_sites(pair.base, tokens.shape[1])
    quiet = PatchConfig(progress=False)
    chunks = torch.arange(n).chunk(config.n_chunks)
    resampled = torch.cat([tokens[idx].roll(1, dims=0) for idx in chunks])  # within each chunk
    rows: list[dict] = []
    if config.prune_mass is not None:
        full = _steering_metrics(positions, base_lp, steering)
        rows = _estimates(pair, tokens, resampled, ref, full)
        steer = pd.DataFrame(rows).query("score == 'steering' and model == 'tuned'")
        keep = set(
            select_candidates(
                steer.assign(effect=steer.value - steer.target),
                config.prune_mass,
                config.max_exact,
            )
        )
        sites = [s for s in sites if component_name(s) in keep]
    for c, idx in enumerate(tqdm(chunks, desc="classify", unit="chunk")):
        toks = tokens[idx]
        truth = KLMetric(positions=positions, reference=ref[idx], patched_first=False)
        for role, model in pair.models.items():
            table = patch(
                model, toks, model, resampled[idx], sites, truth, by_position=False, config=quiet
            )
            rows += _chunk_rows(role, "prediction", "kl_to_reference", table, c)
        metrics = _steering_metrics(positions, base_lp[idx], steering)
        names = {m.name: name for name, m in metrics.items()}
        for into in ("tuned", "base"):
            table = cross_model(
                pair,
                toks,
                sites,
                list(metrics.values()),
                into=into,
                by_position=False,
                config=quiet,
            )
            for metric_name, part in table.groupby("metric", sort=False):
                rows += _chunk_rows(into, "steering", names[metric_name], part, c)
    return pd.DataFrame(rows)


def _steering_metrics(
    positions: tuple[int, ...],
    base_lp: Float[Tensor, "batch pos vocab"],
    steering: dict[str, Metric] | None,
) -> dict[str, Metric]:
    """KL to the base (``base_lp``: the prompts' own) and the caller's steering metrics."""
    metrics: dict[str, Metric] = {"kl_to_base": KLMetric(positions=positions, reference=base_lp)}
    metrics.update(steering or {})
    if len({m.name for m in metrics.values()}) != len(metrics):
        raise LabError("Steering metrics must be of different types (their names clash).")
    return metrics


def _estimates(
    pair: Any,
    tokens: Tokens,
    resampled: Tokens,
    ref: Float[Tensor, "batch pos vocab"],
    metrics: dict[str, Metric],
) -> list[dict]:
    """Attribution's estimate of every component's scores, on all prompts (rows of chunk -1):
    the resample ablation in each model, the other model's activation into each model."""
    positions = tuple(range(tokens.shape[1]))
    truth = {"kl_to_reference": KLMetric(positions=positions, reference=ref, patched_first=False)}
    other = {"tuned": "base", "base": "tuned"}
    runs = [
        (role, "prediction", model, tokens, model, resampled, truth)
        for role, model in pair.models.items()
    ] + [
        (into, "steering", pair.models[into], tokens, pair.models[other[into]], tokens, metrics)
        for into in ("tuned", "base")
    ]
    rows: list[dict] = []
    for role, score, target, toks, source, src_toks, named in tqdm(
        runs, desc="attribution", leave=False
    ):
        table = attribute(
            target, toks, source, src_toks, ("z", "mlp_out"), list(named.values()),
            by_position=False,
        )  # fmt: skip
        names = {m.name: k for k, m in named.items()}
        for metric_name, part in table.groupby("metric", sort=False):
            rows += _chunk_rows(role, score, names[metric_name], part, -1)
    return rows


class ScoreOptions(TypedDict, total=False):
    """The keyword options of ``score_components``, which ``classify`` passes on as they are."""

    reference: Float[Tensor, "batch pos vocab"] | None
    steering: dict[str, Metric] | None
    config: ClassifyConfig | None


def classify(pair: Any, tokens: Tokens, **options: Unpack[ScoreOptions]) -> pd.DataFrame:
    """Every head and MLP of ``pair`` scored and labelled in one call: ``score_components`` on
    ``tokens`` (``reference``, ``steering``, ``config``: as there), then ``classify_scores``."""
    raw = score_components(pair, tokens, **options)
    return classify_scores(raw, options.get("config"))


def classify_scores(raw: pd.DataFrame, config: ClassifyConfig | None = None) -> pd.DataFrame:
    """Scores with confidence intervals and labels, one row per (component, model, score,
    metric), from ``score_components``'s per-chunk table. A pure function of that table.

    Steering rows also carry ``gap`` (the unpatched source - target, the share's denominator),
    its interval ``gap_lo``..``gap_hi`` and ``within_noise`` (that interval includes 0).
    ``exact``: patched exactly (else attribution's estimate, no interval); ``estimate``:
    attribution's estimate (NaN unpruned); ``rank_corr`` and ``mass_left_out`` per (model,
    score, metric): see the module doc (NaN and 0 unpruned)."""
    config = config or ClassifyConfig()
    rng = np.random.default_rng(config.seed)
    keys = ["component", "kind", "layer", "head", "model", "score", "metric"]
    is_exact = raw["exact"].astype(bool) if "exact" in raw else pd.Series(True, raw.index)
    out = []
    for key, parts in raw[is_exact].groupby(keys, sort=False, dropna=False):
        (point, gap), boots, gaps = bootstrap(parts, key[5], rng, config.n_boot)
        lo, hi = interval(boots, config.ci)
        row = {**dict(zip(keys, key, strict=True)), "value": point, "lo": lo, "hi": hi}
        if key[5] == "steering":
            g_lo, g_hi = interval(gaps, config.ci)
            noise = not (g_lo > 0 or g_hi < 0)  # also when the interval is undefined
            row.update(gap=gap, gap_lo=g_lo, gap_hi=g_hi, within_noise=noise)
        else:
            row.update(gap=np.nan, gap_lo=np.nan, gap_hi=np.nan, within_noise=False)
        out.append(row)
    table = with_estimates(pd.DataFrame(out), raw[~is_exact], keys)
    return table.merge(_labels(table, config), on=["component", "model"], how="left")


def _labels(table: pd.DataFrame, config: ClassifyConfig) -> pd.DataFrame:
    pred = table[table.score == "prediction"].set_index(["component", "model"])["value"]
    steer = table[(table.score == "steering") & (table.metric == config.steering_metric)]
    steer = steer.set_index(["component", "model"])
    is_pred = pred >= config.prediction_threshold
    steering = steer["value"] >= config.steering_threshold
    if "within_noise" in steer:  # a share of a departure within noise is not steering
        steering &= ~steer["within_noise"].astype(bool)
    is_steer = steering.reindex(is_pred.index, fill_value=False)
    names = {
        (True, True): "both",
        (True, False): "prediction-like",
        (False, True): "steering-like",
        (False, False): "neither",
    }
    labels = [names[(bool(p), bool(s))] for p, s in zip(is_pred, is_steer, strict=True)]
    return pd.DataFrame({"label": labels}, index=is_pred.index).reset_index()
