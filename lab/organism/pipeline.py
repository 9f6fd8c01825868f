"""The whole organism, end to end: world -> base -> reward model -> RLHF -> folders with cards.

``train_organism(out, cfg)`` writes ``out/base``, ``out/reward``, ``out/rlhf`` and ``out/peak``
(the RLHF policy where true utility peaked), each an HF folder (config.json, model.safetensors,
tokenizer.json) with a ``card.json``: the world, the labeler, every hyperparameter, the seed, the
wall time, the command that made it and the measured metrics.

``train_world_base(out, world, cfg)`` trains only ``out/base`` on a custom world (a world file of
``lab.organism.worldfile``, which has no labeler, hence no reward model or RLHF); its card holds
the world, the file's own description and the base's prediction and belief-probe metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel, PreTrainedModel

from lab.models.outputs import hidden_states, model_logprobs
from lab.organism.evaluate import EvalConfig, Organism, evaluate_organism
from lab.organism.labeler import Labeler
from lab.organism.metrics import (
    belief_probe_r2,
    generation_metrics,
    prediction_metrics,
)
from lab.organism.reward import RewardConfig, train_reward_model
from lab.organism.rlhf import RLHFConfig, sample_continuations, train_rlhf
from lab.organism.story import story_labeler, story_world
from lab.organism.train import BaseConfig, train_base
from lab.organism.world import HMM
from lab.organism.worldfile import EdgeHMM

__all__ = [
    "OrganismConfig",
    "quick_config",
    "save_checkpoint",
    "train_organism",
    "train_world_base",
]


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that determines a trained organism (with the world and labeler)."""

    base: BaseConfig = field(default_factory=BaseConfig)  # pretraining
    reward: RewardConfig = field(default_factory=RewardConfig)  # reward model
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)  # RLOO
    curve_prompts: int = 128  # world prompts per point of the RLHF curve
    curve_texts: int = 256  # world sequences for the curve's ECE
    eval: EvalConfig = field(default_factory=EvalConfig)  # final held-out evaluation


def quick_config() -> OrganismConfig:
    """A pair in well under a minute of CPU, for tests: same code, tiny budgets."""
    return OrganismConfig(
        base=BaseConfig(d_model=32, n_head=2, steps=60, batch=32),
        reward=RewardConfig(pairs=256, held_out=128, epochs=1, batch=32),
        rlhf=RLHFConfig(steps=10, prompts=8, log_every=5),
        curve_prompts=32,
        curve_texts=32,
        eval=EvalConfig(texts=64, prompts=64),
    )


def _curve_eval(
    world: HMM,
    labeler: Labeler,
    base: GPT2LMHeadModel,
    rm: Callable[[Tensor, int], Tensor],
    cfg: OrganismConfig,
    seed: int,
) -> Callable[[GPT2LMHeadModel], dict[str, float]]:
    """The RLHF curve's evaluation of a policy, on prompts and texts fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed + 7)
    length, start = cfg.base.length, cfg.rlhf.prompt_words + 1
    texts = world.draw(cfg.curve_texts, length, g)[0]
    prompts = world.draw(cfg.curve_prompts, cfg.rlhf.prompt_words, g)[0]

    @torch.no_grad()
    def evaluate(policy: GPT2LMHeadModel) -> dict[str, float]:
        samples = sample_continuations(policy, prompts, length, torch.Generator().manual_seed(seed))
        pred = prediction_metrics(model_logprobs(policy, texts), world, texts)
        gen = generation_metrics(
            samples,
            start,
            world,
            labeler,
            logprobs=model_logprobs(policy, samples[:, :-1]),
            base_logprobs=model_logprobs(base, samples[:, :-1]),
            reward_model=rm,
        )
        return {"ece": pred["ece"], **gen}

    return evaluate


def save_checkpoint(model: PreTrainedModel, folder: Path, world: HMM, card: dict) -> None:
    """``folder`` as an organism checkpoint: HF weights (safetensors), the world's tokenizer and
    ``card.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    world.save_tokenizer(folder)
    (folder / "card.json").write_text(json.dumps(card, indent=1) + "\n")


def train_organism(
    out: str | Path,
    cfg: OrganismConfig | None = None,
    *,
    seed: int = 0,
    world: HMM | None = None,
    labeler: Labeler | None = None,
    command: str = "",
    progress: bool = True,
) -> dict[str, dict]:
    """Train and save the pair (default: the story world); returns the evaluation rows."""
    cfg = cfg or OrganismConfig()
    world = world or story_world()
    labeler = labeler or story_labeler(world)
    out = Path(out)
    length = cfg.base.length
    t0 = time.perf_counter()
    base = train_base(world, cfg.base, seed, progress)
    t_base = time.perf_counter() - t0
    rm, rm_metrics = train_reward_model(base, world, labeler, cfg.reward, length, seed, progress)
    t_rm = time.perf_counter() - t0 - t_base
    score = lambda t, s: torch.cat([rm(x, s) for x in t.split(256)])  # noqa: E731
    evaluate = _curve_eval(world, labeler, base, score, cfg, seed)
    policy, curve, peak = train_rlhf(
        base, rm, world, cfg.rlhf, length, seed, evaluate=evaluate, progress=progress
    )
    t_rl = time.perf_counter() - t0 - t_base - t_rm
    org = Organism(
        world,
        labeler,
        cfg.rlhf.beta,
        length,
        cfg.rlhf.prompt_words,
        {"base": base, "rlhf": policy, "peak": peak or policy},
        rm,
    )
    org.cards["reward"] = {"metrics": rm_metrics}
    org.cards["rlhf"] = {"curve": curve}
    rows = evaluate_organism(org, cfg.eval)
    wall = time.perf_counter() - t0
    common = {
        "world": world.to_dict(),
        "labeler": labeler.to_dict(),
        "beta": cfg.rlhf.beta,
        "length": length,
        "prompt_words": cfg.rlhf.prompt_words,
        "seed": seed,
        "config": asdict(cfg),
        "command": command,
        "threads": torch.get_num_threads(),
        "wall_time_s": {"base": t_base, "reward": t_rm, "rlhf": t_rl, "total": wall},
    }
    for name, model, extra in (
        ("base", base, {}),
        ("rlhf", policy, {"curve": curve}),
        ("peak", org.models["peak"], {"peak_step": _peak_step(curve)}),
    ):
        card = {"role": name, **common, "metrics": rows[name], **extra}
        save_checkpoint(model, out / name, world, card)
    rm_card = {
        "role": "reward",
        **common,
        "metrics": rm_metrics,
        "pooling": "mean over continuation",
    }
    save_checkpoint(rm.hf, out / "reward", world, rm_card)
    (out / "metrics.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _peak_step(curve: list[dict]) -> int | None:
    return max(curve, key=lambda p: p["true_utility"])["step"] if curve else None


def train_world_base(
    out: str | Path,
    world: HMM | EdgeHMM,
    cfg: BaseConfig | None = None,
    *,
    seed: int = 0,
    texts: int = 256,
    command: str = "",
    progress: bool = True,
) -> dict[str, float]:
    """Train and save ``out/base`` on ``world``; returns its metrics on ``texts`` held-out texts.

    ``belief_probe_r2`` probes for the world's belief state: for an edge-emitting world, the
    belief over its own states (``EdgeHMM.state_beliefs``), the mixed-state simplex.
    """
    cfg = cfg or BaseConfig()
    hmm = world.to_hmm() if isinstance(world, EdgeHMM) else world
    t0 = time.perf_counter()
    base = train_base(hmm, cfg, seed, progress)
    wall = time.perf_counter() - t0
    held_out = hmm.draw(texts, cfg.length, torch.Generator().manual_seed(seed + 7))[0]
    metrics = prediction_metrics(model_logprobs(base, held_out), hmm, held_out)
    beliefs = hmm.forward(held_out).beliefs
    if isinstance(world, EdgeHMM):
        beliefs = world.state_beliefs(beliefs)
    metrics |= belief_probe_r2(hidden_states(base, held_out), beliefs)
    card = {
        "role": "base",
        "world": hmm.to_dict(),
        "world_source": world.to_dict() if isinstance(world, EdgeHMM) else None,
        "length": cfg.length,
        "seed": seed,
        "config": asdict(cfg),
        "command": command,
        "threads": torch.get_num_threads(),
        "wall_time_s": {"base": wall},
        "metrics": metrics,
    }
    save_checkpoint(base, Path(out) / "base", hmm, card)
    return metrics
