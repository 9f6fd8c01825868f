"""The RLHF policy at every logged step of its training: the shipped run, replayed with snapshots.

The shipped organism keeps only two RLHF checkpoints (``rlhf``, the last step, and ``peak``, the
step of highest true utility on the training curve). Its card records everything that made it
(the RLOO config, the seed, the base and reward model it started from), so ``rlhf_checkpoints``
replays that run (``lab.organism.rlhf.train_rlhf``, unchanged) from the shipped base and reward
model, and keeps the policy's weights at every ``log_every`` steps, as the training curve did.
The replay's own evaluation only snapshots (the curve's evaluation never draws from the global
random stream), so the replayed trajectory is the shipped one; ``max_abs_diff_to_shipped`` in
the cache's ``meta.json`` says how close its last step came to the shipped ``rlhf`` weights.

The snapshots are cached under ``lab.runtime.cache_dir("frontier")``, keyed by a hash of the card's
config, world and seed (never in git): the first call trains (CPU minutes), later calls read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from lab.errors import LabError
from lab.organism.evaluate import Organism
from lab.organism.rlhf import RLHFConfig, train_rlhf
from lab.runtime import cache_dir

__all__ = ["checkpoint_folder", "has_checkpoints", "rlhf_checkpoints"]


def _card(org: Organism) -> dict:
    card = org.cards.get("rlhf")
    if not card or "config" not in card or org.reward_model is None or "base" not in org.models:
        raise LabError(
            "Replaying RLHF needs the organism's base, reward model and rlhf card (with its "
            "config); load a folder written by `lab organism train` with lab.organism.load()."
        )
    return card


def checkpoint_folder(org: Organism) -> Path:
    """Where this organism's replayed RLHF snapshots are cached (keyed by its card)."""
    card = _card(org)
    key = json.dumps([card["config"]["rlhf"], card["seed"], card["world"]], sort_keys=True)
    return cache_dir("frontier") / f"rlhf-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def has_checkpoints(org: Organism) -> bool:
    """Whether this organism's replayed RLHF snapshots are cached."""
    return (checkpoint_folder(org) / "meta.json").exists()


def _read(folder: Path, like: GPT2LMHeadModel) -> list[tuple[int, GPT2LMHeadModel]]:
    meta = json.loads((folder / "meta.json").read_text())
    out = []
    for step in meta["steps"]:
        model = copy.deepcopy(like)
        model.load_state_dict(load_file(folder / f"step-{step:05d}.safetensors"))
        out.append((step, model.eval()))
    return out


def rlhf_checkpoints(
    org: Organism, *, train: bool = True, progress: bool = True
) -> list[tuple[int, GPT2LMHeadModel]]:
    """(step, policy) at every logged step of the organism's RLHF run, step 0 (the base) first.

    Read from the cache when present; otherwise replayed (``train=True``) and cached, or, with
    ``train=False``, a LabError saying how to make them.
    """
    card, folder = _card(org), checkpoint_folder(org)
    base = org.models["base"]
    if (folder / "meta.json").exists():
        return _read(folder, base)
    if not train:
        raise LabError(
            f"No replayed RLHF checkpoints at {folder}; run `lab organism frontier` once "
            "(without --quick) to replay the shipped RLHF run and cache them."
        )
    cfg = RLHFConfig(**card["config"]["rlhf"])
    snaps: dict[int, dict[str, torch.Tensor]] = {}
    step = iter(range(0, cfg.steps + cfg.log_every, cfg.log_every))

    def snapshot(policy: GPT2LMHeadModel) -> dict[str, float]:
        # called at the same steps as the curve's evaluation; draws nothing from any generator
        at = min(next(step), cfg.steps)
        snaps[at] = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        return {"true_utility": 0.0}

    threads = torch.get_num_threads()
    torch.set_num_threads(int(card.get("threads", 1)))  # the shipped run's float order
    try:
        cpu = time.process_time()
        policy, _, _ = train_rlhf(
            base, org.reward_model, org.world, cfg, org.length, card["seed"],
            evaluate=snapshot, progress=progress,
        )  # fmt: skip
        cpu = time.process_time() - cpu
    finally:
        torch.set_num_threads(threads)
    shipped = org.models.get("rlhf")
    pairs = zip(policy.parameters(), shipped.parameters(), strict=True) if shipped else ()
    diff = max(((p - q).abs().max().item() for p, q in pairs), default=None)
    folder.mkdir(parents=True, exist_ok=True)
    for at, state in snaps.items():
        save_file(
            {k: v.contiguous() for k, v in state.items()}, folder / f"step-{at:05d}.safetensors"
        )
    meta = {
        "steps": sorted(snaps),
        "replay_cpu_s": cpu,
        "max_abs_diff_to_shipped": diff,
        "recorded_wall_time_s": card["wall_time_s"]["rlhf"],
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return _read(folder, base)
