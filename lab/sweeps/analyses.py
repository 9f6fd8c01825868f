"""The sweep's analyses and dataset sources, each a small strategy registered by name.

``lab.sweeps.sweep`` expands a config into jobs; each job calls one analysis here with a
``SweepContext`` (which loads pairs and datasets once) and its frozen parameter dataclass, and
gets back a tidy table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lab.errors import LabError
from lab.sweeps import causal as ca
from lab.sweeps import probing as pa
from lab.sweeps.sweep import Analysis, DatasetSource, SweepConfig, SweepContext

__all__ = ["ANALYSES", "DATASET_SOURCES", "build_dataset"]


# ---- dataset sources ----------------------------------------------------------------------
@dataclass(frozen=True)
class FileData:
    """A prompt file: ``jsonl`` (lab.datasets.prompts records) or ``text`` (one prompt per line)."""

    source: str  # 'jsonl' or 'text'
    path: str  # relative to the config file, or to the repository


@dataclass(frozen=True)
class OrganismData:
    """World samples with exact targets (beliefs, next-token distributions, utility)."""

    source: str  # 'organism'
    n: int = 128  # sequences
    length: int | None = None  # words per sequence (None: the organism's)
    seed: int | None = None  # sampling seed (None: the [run] seed)
    value_rollouts: int = 0  # RLHF rollouts per prefix for the tuned_value target (0: none)


@dataclass(frozen=True)
class WorldData:
    """Samples of a world file (lab.organism.worldfile) with its exact targets (no utility)."""

    source: str  # 'world'
    path: str  # the world file (JSON or safetensors), relative to the config or the repository
    n: int = 128  # sequences
    length: int = 32  # words per sequence
    seed: int | None = None  # sampling seed (None: the [run] seed)


def find_file(config: SweepConfig, raw: str) -> Path:
    """A dataset file named relative to the config file (or the working folder) or the repo."""
    from lab.models.checkpoints import data_dir

    for root in (config.path.parent if config.path else Path.cwd(), data_dir().parent):
        if (root / raw).is_file():
            return root / raw
    raise LabError(f"Dataset file {raw} not found (relative to the config or the repository).")


def _jsonl(ctx: SweepContext, spec: FileData):
    from lab.datasets.dataset import Dataset

    return Dataset.from_jsonl(find_file(ctx.config, spec.path), ctx.pair().tokenizer)


def _text(ctx: SweepContext, spec: FileData):
    from lab.datasets.dataset import Dataset

    return Dataset.from_text_file(find_file(ctx.config, spec.path), ctx.pair().tokenizer)


def _organism_data(ctx: SweepContext, spec: OrganismData):
    """World samples with exact targets, and the steering-like targets below."""
    from lab.datasets.dataset import Dataset
    from lab.models.checkpoints import organism_dir
    from lab.organism.evaluate import read_card
    from lab.organism.labeler import Labeler
    from lab.organism.targets import policy_value, reach_probability
    from lab.organism.world import HMM

    card = read_card(organism_dir("rlhf"))
    world, labeler = HMM.from_dict(card["world"]), Labeler.from_dict(card["labeler"])
    gen = torch.Generator().manual_seed(spec.seed if spec.seed is not None else ctx.config.seed)
    sample = world.sample(spec.n, spec.length or card["length"], gen)
    data = Dataset.from_organism(sample, labeler, name="organism")
    # steering-like targets: the labeler's utility still to come after each position (realised
    # along the world's text, and expected when the tuned policy writes the rest), and the exact
    # probability that the wedding scene occurs among the words still to come
    to_go = data.targets["utility"].flip(-1).cumsum(-1).flip(-1) - data.targets["utility"]
    beliefs = sample.forward.beliefs
    reach = reach_probability(world.transition, beliefs, world.scene_index("wedding"))
    extra = {"reward_to_go": to_go, "wedding_reach": reach}
    if spec.value_rollouts:  # > 0 adds tuned_value (costs rollouts)
        if (org := ctx.organism()) is None:
            raise LabError("value_rollouts needs the organism pair (its RLHF policy writes them).")
        value, _ = policy_value(
            org.models["rlhf"], labeler, sample.tokens, spec.value_rollouts, gen
        )
        extra["tuned_value"] = value.float()
    return replace(data, targets={**data.targets, **extra})


def _world_data(ctx: SweepContext, spec: WorldData):
    """A world file's samples: beliefs, next-token distributions and entropies, scenes."""
    from lab.datasets.dataset import Dataset
    from lab.organism.worldfile import load_world

    world = load_world(find_file(ctx.config, spec.path))
    gen = torch.Generator().manual_seed(spec.seed if spec.seed is not None else ctx.config.seed)
    return Dataset.from_organism(world.sample(spec.n, spec.length, gen), None, name="world")


def _organism_inputs(config: SweepConfig, spec: OrganismData) -> list[Path]:
    from lab.models.checkpoints import organism_dir

    return [organism_dir("rlhf") / "card.json"]  # the world and the labeler


def _file_inputs(config: SweepConfig, spec: FileData | WorldData) -> list[Path]:
    return [find_file(config, spec.path)]


DATASET_SOURCES: dict[str, DatasetSource] = {
    "organism": DatasetSource(OrganismData, _organism_data, _organism_inputs),
    "jsonl": DatasetSource(FileData, _jsonl, _file_inputs),
    "text": DatasetSource(FileData, _text, _file_inputs),
    "world": DatasetSource(WorldData, _world_data, _file_inputs),
}


def build_dataset(ctx: SweepContext, spec: dict[str, Any]):
    """Build the dataset a config's ``[datasets.NAME]`` table describes (validated on load)."""
    source = DATASET_SOURCES[spec["source"]]
    return source.build(ctx, source.params(**spec))


# ---- analyses -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsParams:
    """Relative weight change ||W_tuned - W_base|| / ||W_base|| per block (no parameters)."""


def _weights(ctx: SweepContext, params: WeightsParams) -> pd.DataFrame:
    from lab.models.summary import weight_change

    change = weight_change(ctx.pair())
    return pd.DataFrame(
        [{"group": g, "metric": "relative_weight_change", "value": v} for g, v in change.items()]
    )


@dataclass(frozen=True)
class OrganismEvalParams:
    """The organism's metrics for world, base, RLHF, pi* and the reward model (lab.organism)."""

    texts: int = 256  # held-out world texts for the prediction metrics
    prompts: int = 256  # world prompts for the generation metrics


def _organism(ctx: SweepContext) -> Any:
    org = ctx.organism()
    if org is None:
        raise LabError(
            f"The {ctx.job.kind!r} analysis needs the organism pair (base = 'organism')."
        )
    return org


def _organism_eval(ctx: SweepContext, p: OrganismEvalParams) -> pd.DataFrame:
    from lab.organism.evaluate import EvalConfig, evaluate_organism

    cfg = EvalConfig(texts=p.texts, prompts=p.prompts, seed=EvalConfig.seed + ctx.config.seed)
    rows = evaluate_organism(_organism(ctx), cfg)
    return pd.DataFrame(
        [
            {"model": m, "metric": k, "value": float(v)}
            for m, d in rows.items()
            for k, v in d.items()
            if isinstance(v, int | float)
        ]
    )


@dataclass(frozen=True)
class ReliabilityParams:
    """Reliability bins (top-1 confidence vs expected accuracy under the world) per model."""

    texts: int = 256  # world texts
    bins: int = 15  # equal-width confidence bins


def _reliability(ctx: SweepContext, p: ReliabilityParams) -> pd.DataFrame:
    from lab.calibration.reliability import reliability_bins
    from lab.organism.metrics import model_logprobs

    org = _organism(ctx)
    gen = torch.Generator().manual_seed(ctx.config.seed)
    texts = org.world.draw(p.texts, org.length, gen)[0]
    truth = org.world.forward(texts).next_token_logprobs[:, 1:-1].exp()
    policies = {"base": ctx.pair().base, "tuned": ctx.pair().tuned}
    parts = []
    for name, model in policies.items():
        lp = model_logprobs(model, texts)[:, 1:-1]
        conf, top = lp.exp().max(-1)
        acc = truth.gather(-1, top[..., None])[..., 0]
        parts.append(reliability_bins(conf, acc, name, p.bins))
    star = org.pi_star().next_token_logprobs(texts)[:, 1:-1]
    conf, top = star.exp().max(-1)
    parts.append(
        reliability_bins(conf, truth.gather(-1, top[..., None])[..., 0], "pi_star", p.bins)
    )
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class CalibrateParams:
    """The known-distribution calibration suite on both models (lab.calibration.calibrate)."""

    sets: list[str] = field(default_factory=lambda: ["calibration"])  # NAME or NAME:MODE


def _calibrate(ctx: SweepContext, p: CalibrateParams) -> pd.DataFrame:
    from lab.calibration.calibrate import calibrate

    table = calibrate(ctx.pair(), p.sets)
    return table.assign(outcomes=table.outcomes.map(json.dumps), probs=table.probs.map(json.dumps))


ANALYSES: dict[str, Analysis] = {
    "weights": Analysis(WeightsParams, _weights),
    "organism_eval": Analysis(OrganismEvalParams, _organism_eval),
    "reliability": Analysis(ReliabilityParams, _reliability),
    "calibrate": Analysis(CalibrateParams, _calibrate),
    "cache": Analysis(pa.CacheParams, pa.cache_job),
    # probes read the store of this pair and dataset's cache job, unless they name a store
    "probes": Analysis(
        pa.ProbesParams, pa.probes_job, needs=lambda p: () if p.store else ("cache",)
    ),
    "patching": Analysis(ca.PatchingParams, ca.patching_job),
    "swap": Analysis(ca.SwapParams, ca.swap_job),
    "classify": Analysis(ca.ClassifyParams, ca.classify_job),
    "joint": Analysis(ca.JointParams, ca.joint_job, needs=lambda p: ("classify",)),
    "examples": Analysis(ca.ExamplesParams, ca.examples_job, needs=lambda p: ("classify",)),
}
