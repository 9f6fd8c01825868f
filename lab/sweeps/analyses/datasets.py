"""The sweep's dataset sources: prompt files (``jsonl``, ``text``), the organism's world samples
with exact targets (``organism``), and samples of a world file (``world``).

Each source is a spec (a frozen dataclass of its ``[datasets.NAME]`` keys), a builder
``(SweepContext, spec) -> Dataset`` and the files it reads (for the job identity);
``lab.sweeps.analyses.registry.DATASET_SOURCES`` registers them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.models.checkpoints import data_dir, organism_dir
from lab.organism.evaluate import read_card
from lab.organism.labeler import Labeler
from lab.organism.targets import policy_value, reach_probability
from lab.organism.world import HMM
from lab.organism.worldfile import load_world
from lab.sweeps.config import SweepConfig
from lab.sweeps.context import SweepContext

__all__ = [
    "FileData",
    "OrganismData",
    "WorldData",
    "file_inputs",
    "find_file",
    "jsonl_data",
    "organism_data",
    "organism_inputs",
    "text_data",
    "world_data",
]


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
    for root in (config.path.parent if config.path else Path.cwd(), data_dir().parent):
        if (root / raw).is_file():
            return root / raw
    raise LabError(f"Dataset file {raw} not found (relative to the config or the repository).")


def jsonl_data(ctx: SweepContext, spec: FileData) -> Dataset:
    """Prompt records (lab.datasets.prompts), tokenized by the job's pair, with a BOS first only
    where the checkpoint's own tokenizer says so (``lab.models.pair.bos_rule``)."""
    pair = ctx.pair()
    return Dataset.from_jsonl(
        find_file(ctx.config, spec.path), pair.tokenizer, prepend_bos=pair.bos.prepend
    )


def text_data(ctx: SweepContext, spec: FileData) -> Dataset:
    """Plain text tokenized by the job's pair, BOS as for ``jsonl_data``."""
    pair = ctx.pair()
    return Dataset.from_text_file(
        find_file(ctx.config, spec.path), pair.tokenizer, prepend_bos=pair.bos.prepend
    )


def _generator(ctx: SweepContext, seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(seed if seed is not None else ctx.config.seed)


def organism_data(ctx: SweepContext, spec: OrganismData) -> Dataset:
    """World samples with exact targets, and the steering-like targets below."""
    card = read_card(organism_dir("rlhf"))
    world, labeler = HMM.from_dict(card["world"]), Labeler.from_dict(card["labeler"])
    gen = _generator(ctx, spec.seed)
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


def world_data(ctx: SweepContext, spec: WorldData) -> Dataset:
    """A world file's samples: beliefs, next-token distributions and entropies, scenes."""
    world = load_world(find_file(ctx.config, spec.path))
    gen = _generator(ctx, spec.seed)
    return Dataset.from_organism(world.sample(spec.n, spec.length, gen), None, name="world")


def organism_inputs(config: SweepConfig, spec: OrganismData) -> list[Path]:
    """The organism dataset's files: the RLHF card (the world and the labeler)."""
    return [organism_dir("rlhf") / "card.json"]


def file_inputs(config: SweepConfig, spec: FileData | WorldData) -> list[Path]:
    """A file dataset's file."""
    return [find_file(config, spec.path)]
