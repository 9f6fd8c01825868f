"""Planted organisms: steering put into known components, so localization can be scored.

``plant(components, out, cfg, seed=...)`` starts from a base (default: the shipped deep base),

1. draws, for every component, the relative weight change it will end with: log-uniform on
   ``change_range``, the range of change that RL gives a planted component, the same law for
   planted and not, so relative weight change alone does not reveal the planted set;
2. *drifts* every weight: next-token training on a world whose scene moves are shifted (the moves
   into and out of the wedding are kept, so the attractor is untouched); after every step each
   component's change from the base is rescaled onto a sphere whose radius grows linearly to its
   drawn change (a planted component's: ``planted_drift`` of it), so the drift ends every
   non-planted component exactly at its draw;
3. *plants*: RLOO against the shipped learned reward model with only the planted components
   trainable (gradients masked to their slices, ``lab.organism.components``); after every step
   each planted component's change from the base is rescaled onto a sphere whose radius grows
   linearly from its post-drift change to its draw, so it too ends exactly at its draw.

A ball instead of the RL sphere (planted components ending at or below their draws) was
measured and rejected: RL leaves some planted components well inside, and weight-norm AUROC fell
to 0.15-0.46 on four pairs, i.e. a *small* change revealed the planted set.

It writes ``out/base`` (the starting base, unchanged), ``out/drift`` (after step 1) and
``out/tuned`` (after step 2), each an HF folder with the same ``card.json``: the planted set, the
seed, every hyperparameter, the wall times, wedding reach of each model and the weight-norm AUROC.
The pair to localize is ``(out/base, out/tuned)``: the weights differ everywhere (drift), the
steering lives in the planted set. ``(out/drift, out/tuned)`` differ only in the planted slices.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel

from lab.errors import LabError
from lab.models.checkpoints import load_model, local_checkpoint, organism_dir
from lab.organism.components import (
    component_masks,
    component_names,
    constrain_change,
    parse_components,
    relative_change,
    union_masks,
)
from lab.organism.localization import auroc
from lab.organism.metrics import scene_reach
from lab.organism.pipeline import save_checkpoint
from lab.organism.reward import RewardModel
from lab.organism.rlhf import RLHFConfig, sample_continuations, train_rlhf
from lab.organism.train import lm_loss, world_batches
from lab.organism.world import HMM

__all__ = [
    "RECIPE",
    "PlantConfig",
    "change_targets",
    "drift",
    "drift_world",
    "plant",
    "quick_plant_config",
    "rl_sphere",
    "wedding_reach",
]


# The recipe's name, recorded in every card: a suite built by another recipe (same config, other
# code) is rebuilt (``lab.organism.suite``). Change it whenever the recipe changes.
RECIPE = "drawn change: drift and RL end each component on the sphere of its draw"


@dataclass(frozen=True)
class PlantConfig:
    """Drift, planting RL and evaluation of one planted pair."""

    drift_steps: int = 150  # next-token steps of the drift fine-tune (every weight)
    drift_batch: int = 64  # sequences per drift step
    drift_lr: float = 3e-3  # Adam learning rate of the drift
    drift_shift: float = 1.0  # scene-move rates scaled by exp(U(-shift, shift)), wedding kept
    change_range: tuple[float, float] = (0.8, 3.5)  # each component's final relative change:
    # log-uniform on this range (RL unconstrained moved planted components by 0.6-3.3)
    planted_drift: float = 0.3  # a planted component's drift ends at this share of its draw
    rlhf: RLHFConfig = field(
        default_factory=lambda: RLHFConfig(steps=100, lr=1e-3, log_every=1_000_000)
    )  # RLOO with only the planted components trainable
    eval_prompts: int = 256  # world prompts for wedding reach (one continuation each)
    eval_seed: int = 1_000_003  # seed of the evaluation prompts and continuations


def quick_plant_config() -> PlantConfig:
    """Tiny budgets, for tests: seconds per pair (the steering is barely planted)."""
    return PlantConfig(
        drift_steps=3,
        drift_batch=8,
        rlhf=RLHFConfig(steps=2, prompts=4, lr=1e-3, log_every=1_000_000),
        eval_prompts=16,
    )


def drift_world(world: HMM, shift: float, seed: int) -> HMM:
    """``world`` with every scene move not into or out of ``wedding`` scaled at random."""
    g = torch.Generator().manual_seed(seed + 11)
    trans = world.transition.clone()
    wed = world.scene_index("wedding") if "wedding" in world.scenes else -1
    factor = torch.exp((torch.rand(trans.shape, generator=g, dtype=torch.float64) * 2 - 1) * shift)
    off = ~torch.eye(len(trans), dtype=torch.bool)
    if wed >= 0:
        off[wed, :] = False
        off[:, wed] = False
    trans = torch.where(off, trans * factor, trans)
    diag = torch.eye(len(trans), dtype=torch.bool)
    rest = torch.where(diag, 0.0, trans).sum(-1)
    if (rest >= 1).any():
        raise LabError(f"drift_shift {shift} leaves no probability to stay in a scene; lower it.")
    trans = torch.where(diag, (1 - rest)[:, None].expand_as(trans), trans)
    hmm = HMM(trans, world.emission, world.initial, world.scenes, world.words)
    return HMM(trans, world.emission, hmm.stationary(), world.scenes, world.words)


def change_targets(names: list[str], cfg: PlantConfig, seed: int) -> dict[str, float]:
    """Each component's drawn relative change: log-uniform on ``cfg.change_range``."""
    low, high = cfg.change_range
    if not 0 < low <= high:
        raise LabError(f"change_range must satisfy 0 < low <= high; got {cfg.change_range}.")
    g = torch.Generator().manual_seed(seed + 13)
    u = torch.rand(len(names), generator=g, dtype=torch.float64).tolist()
    return {
        n: math.exp(math.log(low) + x * math.log(high / low)) for n, x in zip(names, u, strict=True)
    }


def _masks(model: GPT2LMHeadModel) -> dict[str, dict[str, Tensor]]:
    names = component_names(model.config.n_layer, model.config.n_head)
    return {n: component_masks(model, n) for n in names}


def drift(
    model: GPT2LMHeadModel,
    world: HMM,
    cfg: PlantConfig,
    seed: int,
    length: int,
    radii: dict[str, float],
) -> GPT2LMHeadModel:
    """A copy of ``model`` fine-tuned on ``world``; after every step each component's change is
    rescaled onto the sphere of radius ``radii[c] * step / steps`` (relative to ``model``)."""
    torch.manual_seed(seed)
    reference = {k: p.detach().clone() for k, p in model.named_parameters()}
    model = copy.deepcopy(model).train()
    params = {k: p.data for k, p in model.named_parameters()}
    masks = _masks(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.drift_lr)
    batches = world_batches(world, cfg.drift_batch, length, torch.Generator().manual_seed(seed))
    for step in range(1, cfg.drift_steps + 1):
        tokens, probs = next(batches)
        loss = lm_loss(model, tokens, probs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ramp = step / cfg.drift_steps
        constrain_change(
            params, reference, masks, {c: r * ramp for c, r in radii.items()}, exact=True
        )
    return model.eval()


def rl_sphere(
    reference: GPT2LMHeadModel,
    masks: dict[str, dict[str, Tensor]],
    radii: dict[str, tuple[float, float]],
    steps: int,
) -> Callable[[GPT2LMHeadModel, int], None]:
    """``train_rlhf``'s ``after_step``: after step ``s`` (1..``steps``), rescale each of
    ``radii``'s components of the policy onto the sphere of relative change ``start + (end -
    start) * s / steps`` around ``reference`` (``radii[c] = (start, end)``)."""
    ref = {k: p.detach() for k, p in reference.named_parameters()}
    names = {k for c in radii for k in masks[c]}

    def onto_sphere(policy: GPT2LMHeadModel, step: int) -> None:
        ramp = min(step / steps, 1.0)
        now = {c: a + (b - a) * ramp for c, (a, b) in radii.items()}
        named = {k: p.data for k, p in policy.named_parameters() if k in names}
        constrain_change(named, ref, masks, now, exact=True)

    return onto_sphere


@torch.no_grad()
def wedding_reach(
    model: GPT2LMHeadModel, world: HMM, length: int, prompt_words: int, prompts: int, seed: int
) -> float:
    """Share of continuations of world prompts whose belief in the wedding passes 1/2."""
    g = torch.Generator().manual_seed(seed)
    start = world.draw(prompts, prompt_words, g)[0]
    samples = sample_continuations(model, start, length, g)
    return scene_reach(world, samples, "wedding", prompt_words + 1)


def _load(folder: Path) -> tuple[GPT2LMHeadModel, dict]:
    if not (folder / "config.json").exists() or not (folder / "card.json").exists():
        raise LabError(
            f"{folder} is not an organism model folder (config.json and card.json); "
            "train the deep base with `lab organism train --deep`."
        )
    model = load_model(GPT2LMHeadModel, local_checkpoint(folder)).eval()
    return model, json.loads((folder / "card.json").read_text())


def plant(
    components: str | list[str],
    out: str | Path,
    cfg: PlantConfig | None = None,
    *,
    seed: int = 0,
    base: str | Path | None = None,
    reward: str | Path | None = None,
    command: str = "",
    progress: bool = False,
) -> dict:
    """Build one planted pair into ``out`` (base, drift, tuned); returns its card."""
    cfg = cfg or PlantConfig()
    base_dir = Path(base) if base is not None else organism_dir("deep/base")
    base_model, base_card = _load(base_dir)
    planted = parse_components(components, base_model.config.n_layer, base_model.config.n_head)
    reward_dir = Path(reward) if reward is not None else organism_dir("reward")
    rm = RewardModel.load(reward_dir)
    world = HMM.from_dict(base_card["world"])
    length, pw = base_card["length"], cfg.rlhf.prompt_words
    t0 = time.perf_counter()
    names = component_names(base_model.config.n_layer, base_model.config.n_head)
    targets = change_targets(names, cfg, seed)
    radii = {c: t * (cfg.planted_drift if c in planted else 1.0) for c, t in targets.items()}
    shifted = drift_world(world, cfg.drift_shift, seed)
    drifted = drift(base_model, shifted, cfg, seed, length, radii)
    t_drift = time.perf_counter() - t0
    masks = union_masks(drifted, planted)
    sphere = {c: (radii[c], targets[c]) for c in planted}
    tuned = train_rlhf(
        drifted,
        rm,
        world,
        cfg.rlhf,
        length,
        seed,
        progress=progress,
        masks=masks,
        after_step=rl_sphere(base_model, _masks(base_model), sphere, cfg.rlhf.steps),
    )[0]
    t_rl = time.perf_counter() - t0 - t_drift
    change = relative_change(base_model, tuned)
    reach = {
        role: wedding_reach(m, world, length, pw, cfg.eval_prompts, cfg.eval_seed)
        for role, m in (("base", base_model), ("drift", drifted), ("tuned", tuned))
    }
    card = {
        "planted": planted,
        "components": names,
        "change_target": targets,
        "seed": seed,
        "recipe": RECIPE,
        "weight_norm_auroc": auroc(change, planted),
        "weight_norm_auroc_drift_only": auroc(relative_change(base_model, drifted), planted),
        "relative_weight_change": change,
        "wedding_reach": reach,
        "pair": {"base": "base", "tuned": "tuned", "planted_only": ["drift", "tuned"]},
        "base_source": str(base_dir),
        "reward_model": str(reward_dir),
        "world": world.to_dict(),
        "drift_world": shifted.to_dict(),
        "beta": cfg.rlhf.beta,
        "length": length,
        "prompt_words": pw,
        "config": asdict(cfg),
        "granularity": "head: q/k/v columns of c_attn (+bias) and rows of attn.c_proj.weight; "
        "MLP: all of c_fc and c_proj; norms, embeddings, attn.c_proj.bias: never planted",
        "command": command,
        "threads": torch.get_num_threads(),
        "wall_time_s": {"drift": t_drift, "rlhf": t_rl, "total": time.perf_counter() - t0},
    }
    out = Path(out)
    for role, model in (("base", base_model), ("drift", drifted), ("tuned", tuned)):
        save_checkpoint(model, out / role, world, {"role": role, **card})
    return card
