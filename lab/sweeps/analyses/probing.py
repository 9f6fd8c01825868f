"""Sweep analyses over stored activations: ``cache`` (collect once) and ``probes`` (analyse from
the store, with a control task and a randomly initialised model of the same shape as baselines).

``lab.sweeps.analyses.registry`` registers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from transformer_lens.model_bridge import TransformerBridge

from lab.activations import ActivationStore, cache_pair, weights_fingerprint
from lab.errors import LabError
from lab.models.checkpoints import resolve_checkpoint
from lab.models.memory import check_fits
from lab.sweeps.context import SweepContext
from probes.linear.controls import random_init_like
from probes.linear.layerwise import ProbeConfig, fit_probes
from probes.linear.source import TensorSource

__all__ = ["CacheParams", "ProbesParams", "cache_job", "probes_job", "store_path"]


def store_path(ctx: SweepContext) -> Path:
    """Where a cache job stores its activations: ``stores/<cache job id>`` in the sweep's folder,
    for the cache job itself and for the probes that read it."""
    job = ctx.job if ctx.job.kind == "cache" else ctx.needed_job("cache")
    return ctx.out / "stores" / job.id


@dataclass(frozen=True)
class CacheParams:
    """Cache both models' activations at some hooks into an on-disk store
    (lab.activations.cache)."""

    hooks: list[str] = field(default_factory=lambda: ["resid_post"])  # names or patterns
    batch_size: int = 32  # sequences per forward (and per shard)
    store_dtype: str | None = None  # float16 / bfloat16 halve the store; None: the models'


def cache_job(ctx: SweepContext, p: CacheParams) -> pd.DataFrame:
    """Cache the pair on the job's dataset (resuming a store a killed run left); one row per
    stored hook."""
    path = store_path(ctx)
    store = cache_pair(
        ctx.pair(),
        ctx.dataset(),
        p.hooks,
        out=path,
        batch_size=p.batch_size,
        dtype=p.store_dtype,
        resume=path.exists(),
    )
    return pd.DataFrame(
        [{"hook": h, "n_tokens": store.n_tokens, "store": str(path)} for h in store.hooks]
    )


@dataclass(frozen=True)
class ProbesParams:
    """Linear probes for every stored hook of both models (probes.linear.layerwise.fit_probes)."""

    targets: list[str] = field(default_factory=lambda: ["belief"])  # per-token store targets
    probe: str = "ridge"  # probe kind (probes.linear.kinds.PROBE_KINDS)
    hooks: list[str] | None = None  # stored hooks to probe (None: all of the store's)
    store: str | None = None  # a store folder; None: this pair and dataset's cache job
    seeds: list[int] = field(default_factory=lambda: [0])  # split and control seeds
    control: str | None = "shuffle"  # control task ('shuffle', 'types') or None
    random_baseline: bool = True  # also probe a randomly initialised model of the same shape


def _open_checked(ctx: SweepContext, p: ProbesParams) -> ActivationStore:
    path = Path(p.store) if p.store else store_path(ctx)
    if not path.exists():  # a named store that is not there
        raise LabError(
            f"No store at {path}: name a folder a 'cache' analysis wrote, or leave store out "
            "to read this pair and dataset's cache job."
        )
    store = ActivationStore.open(path)
    pair = ctx.pair()
    for role, info in store.manifest["models"].items():
        if role in pair.models and info["fingerprint"] != weights_fingerprint(pair.models[role]):
            raise LabError(
                f"The store at {path} was built from other models: its {role} is "
                f"{info['source']!r} (weights {info['fingerprint']}), but this sweep's pair "
                f"{ctx.job.pair!r} has {pair.sources.get(role)!r}. Cache this pair into its "
                "own store (a 'cache' analysis) or name the right store."
            )
    return store


def _random_bridge(ctx: SweepContext) -> TransformerBridge:
    """A randomly initialised model of the pair's base shape, booted with what ``load_pair``
    checked and chose for the pair: the base checkpoint resolved with the pair's own options
    (pickle, remote code), the pair's tokenizer, device and dtype, and room for one more model
    checked before it moves to the device."""
    pair, spec = ctx.pair(), ctx.config.pairs[ctx.job.pair]
    ckpt = resolve_checkpoint(
        pair.sources["base"], "base", allow_pickle=bool(spec.get("allow_pickle"))
    )
    fresh = random_init_like(pair.base.original_model, seed=ctx.config.seed)
    check_fits(sum(t.numel() for t in fresh.parameters()), pair.dtype, pair.device, n_models=1)
    bridge = TransformerBridge.boot_transformers(
        ckpt.location,
        hf_model=fresh.to(device=pair.device, dtype=pair.dtype),
        tokenizer=pair.tokenizer,
        dtype=pair.dtype,
        trust_remote_code=bool(spec.get("trust_remote_code")),
    )
    return bridge.eval()


@torch.inference_mode()
def _random_source(
    ctx: SweepContext, store: ActivationStore, hooks: list[str], targets: list[str]
) -> TensorSource:
    """The same hooks of a randomly initialised model of the pair's shape, as a TensorSource."""
    pair = ctx.pair()
    bridge = _random_bridge(ctx)
    rows: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for batch in ctx.dataset().batches(32, store.manifest.get("padding_side", "right")):
        _, cache = bridge.run_with_cache(
            batch.tokens.to(pair.device), names_filter=hooks, **batch.forward_kwargs()
        )
        for h in hooks:
            rows[h].append(cache[h][batch.keep.to(pair.device)].float().cpu())
    stack = torch.stack([torch.cat(rows[h]) for h in hooks])
    return TensorSource(
        {"random": stack},
        tuple(hooks),
        store.sequence_ids(),
        {t: store.targets(t) for t in targets},
    )


def probes_job(ctx: SweepContext, p: ProbesParams) -> pd.DataFrame:
    """Probe tables of every target, from the store (and from a random model of the same shape
    as a baseline)."""
    store = _open_checked(ctx, p)
    hooks = list(p.hooks or store.hooks)
    cfg = ProbeConfig(kind=p.probe, seeds=tuple(p.seeds), control=p.control)
    sources = [store]
    if p.random_baseline:
        sources.append(_random_source(ctx, store, hooks, p.targets))
    tables = [fit_probes(src, [t], cfg, hooks=hooks).table for t in p.targets for src in sources]
    return pd.concat(tables, ignore_index=True)
