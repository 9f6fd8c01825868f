"""The planted suite and the seed reruns: generated organisms that live in a cache, never in git.

``plant_suite(out)`` builds every pair of ``SUITE`` (one head, one MLP, two heads in different
layers, a head and an MLP, an early-layer set, a late-layer set, sets of three and four) under
``out/NAME``, skipping pairs whose ``tuned/card.json`` already records the same planted set, base,
seed, config (every field of ``PlantConfig``) and ``RECIPE`` (a card of another is rebuilt),
``jobs`` pairs at a time in worker processes. ``rlhf_seeds(seeds, out)`` reruns the shipped
organism's RLHF (same base, same reward model, the card's RLHF config) once per seed, into
``out/seed-S``, for seed-stability checks.

The cache folder is ``$STEERLAB_CACHE`` (default ``~/.cache/steerlab``): the suite in
``planted/suite`` (``suite_dir``; the benchmark's too), the seed reruns in ``seeds``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch

from lab.models.checkpoints import organism_dir
from lab.organism.components import component_shape, parse_components
from lab.organism.evaluate import load_organism
from lab.organism.pipeline import save_checkpoint
from lab.organism.plant import RECIPE, PlantConfig, plant
from lab.organism.rlhf import RLHFConfig, train_rlhf
from lab.runtime import cache_dir

__all__ = ["SUITE", "PlantedSpec", "plant_suite", "rlhf_seeds", "suite_dir"]


@dataclass(frozen=True)
class PlantedSpec:
    """One pair of the suite."""

    name: str  # folder name under the suite's folder
    components: str  # the planted set, comma-separated component names
    seed: int  # seed of the drift and the planting RL


SUITE: tuple[PlantedSpec, ...] = (
    PlantedSpec("one-head", "L2H5", 0),
    PlantedSpec("one-mlp", "L1 MLP", 1),
    PlantedSpec("two-heads", "L0H3,L3H6", 2),
    PlantedSpec("head-mlp", "L1H2,L2 MLP", 3),
    PlantedSpec("early", "L0H1,L0H6", 4),
    PlantedSpec("late", "L3H2,L3H7", 5),
    PlantedSpec("three", "L0H4,L2H1,L3 MLP", 6),
    PlantedSpec("four-heads", "L1H0,L1H7,L2H3,L3H4", 7),
)


def _read_card(folder: Path) -> dict | None:
    """The card of a built pair (``tuned/card.json``), or None when there is none yet."""
    path = folder / "tuned" / "card.json"
    return json.loads(path.read_text()) if path.exists() else None


def _records(card: dict | None, want: dict) -> bool:
    """Whether ``card`` exists and holds every entry of ``want``."""
    return card is not None and all(card.get(k) == v for k, v in want.items())


def suite_dir() -> Path:
    """Where the suite is built by default: ``$STEERLAB_CACHE/planted/suite``."""
    return cache_dir("planted") / "suite"


def _build(spec: PlantedSpec, folder: Path, cfg: PlantConfig, base, command: str, threads: int):
    """Plant one pair (in a worker process when ``jobs > 1``); returns its card and build time."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    card = plant(spec.components, folder, cfg, seed=spec.seed, base=base, command=command)
    return {**card, "built": True, "build_s": time.perf_counter() - t0}


def plant_suite(
    out: str | Path | None = None,
    cfg: PlantConfig | None = None,
    *,
    base: str | Path | None = None,
    suite: tuple[PlantedSpec, ...] = SUITE,
    progress: bool = True,
    command: str = "",
    jobs: int = 1,
) -> dict[str, dict]:
    """Build (or find) every pair of ``suite``; returns name -> card, with ``built`` and times.

    ``jobs`` > 1 builds that many pairs at once in spawned processes (each with the caller's
    torch thread count); the cards are the same as a sequential build's."""
    cfg = cfg or PlantConfig()
    out = Path(out) if out is not None else suite_dir()
    key = {"config": json.loads(json.dumps(asdict(cfg))), "recipe": RECIPE}
    todo, cards = [], {}
    for spec in suite:
        card = _read_card(out / spec.name)
        if _records(card, {**key, "seed": spec.seed}) and _same_set(card, spec, base):
            cards[spec.name] = {**card, "built": False}
        else:
            todo.append(spec)
    args = [(s, out / s.name, cfg, base, command, torch.get_num_threads()) for s in todo]
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn")) as pool:
            done = pool.map(_build, *zip(*args, strict=True))
            built = dict(zip([s.name for s in todo], done, strict=True))
    else:
        built = {a[0].name: _build(*a) for a in args}
    cards = {spec.name: cards.get(spec.name) or built[spec.name] for spec in suite}
    if progress:
        for name, c in cards.items():
            r = c["wedding_reach"]
            print(
                f"{name:11s} {', '.join(c['planted']):24s} reach {r['drift']:.3f} -> "
                f"{r['tuned']:.3f}  weight-norm AUROC {c['weight_norm_auroc']:.2f}"
                + (f"  ({c['build_s']:.0f} s)" if c["built"] else "  (cached)"),
                flush=True,
            )
    return cards


def _same_set(card: dict, spec: PlantedSpec, base: str | Path | None) -> bool:
    """Whether a built pair's card records ``spec``'s planted set, planted into the same base."""
    want = parse_components(spec.components, *component_shape(card["components"]))
    source = str(Path(base) if base is not None else organism_dir("deep/base"))
    return card["planted"] == want and card.get("base_source") == source


def rlhf_seeds(
    seeds: tuple[int, ...] = (0, 1, 2),
    out: str | Path | None = None,
    *,
    organism: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Rerun the organism's RLHF once per seed (same base and reward model); returns the
    ``out/seed-S`` folders (each ``base`` and ``tuned``), skipping those already built."""
    src = Path(organism) if organism is not None else organism_dir("")
    out = Path(out) if out is not None else cache_dir("seeds")
    org = load_organism(src)
    cfg = RLHFConfig(**org.cards["rlhf"]["config"]["rlhf"])
    cfg = replace(cfg, steps=steps) if steps is not None else cfg
    folders = []
    for seed in seeds:
        folder = out / f"seed-{seed}"
        card = {"role": "tuned", "seed": seed, "rlhf": asdict(cfg), "source": str(src)}
        if not _records(_read_card(folder), card):
            t0 = time.perf_counter()
            policy = train_rlhf(
                org.models["base"],
                org.reward_model,
                org.world,
                cfg,
                org.length,
                seed,
                progress=progress,
            )[0]
            common = {
                **card,
                "world": org.world.to_dict(),
                "beta": org.beta,
                "length": org.length,
                "prompt_words": org.prompt_words,
                "threads": torch.get_num_threads(),
                "wall_time_s": time.perf_counter() - t0,
            }
            save_checkpoint(
                org.models["base"], folder / "base", org.world, {**common, "role": "base"}
            )
            save_checkpoint(policy, folder / "tuned", org.world, common)
        folders.append(folder)
    return folders
