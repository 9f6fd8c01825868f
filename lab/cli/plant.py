"""`lab organism plant`, `plant-suite` and `seeds`: organisms whose steering is known.

Registered on the `lab organism` app by ``lab.cli.organism``. Generated pairs go to the cache
(``$STEERLAB_CACHE``, default ``~/.cache/steerlab``), never into the repository.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer

from lab.errors import LabError
from lab.runtime import cache_dir

__all__ = ["plant_command", "plant_suite_command", "seeds_command"]

_QUICK = typer.Option(False, "--quick", help="Tiny budgets (tests): seconds per pair.")
_BASE = typer.Option(None, "--base", help="Base model folder (default: organism/deep/base).")


def plant_command(
    components: str = typer.Option(
        ...,
        "--components",
        help="Planted set, e.g. L2H5,L3.mlp (names as in probes: L1H3, L1 MLP).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the drift and of the planting RL."),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: the cache's planted/custom-<set>-s<seed>)."
    ),
    base: Path | None = _BASE,
    quick: bool = _QUICK,
    threads: int = typer.Option(1, "--threads", help="torch CPU threads."),
) -> None:
    """Drift every weight of a base, then RL with only the planted components trainable."""
    # start-up cost (measured, see lab.cli): the organism loads when a command runs
    from lab.organism.plant import PlantConfig, plant, quick_plant_config

    torch.set_num_threads(threads)
    slug = components.replace(",", "_").replace(" ", "").replace(".", "")
    out = out or cache_dir("planted") / f"custom-{slug}-s{seed}{'-quick' if quick else ''}"
    command = f"lab organism plant --components {components} --seed {seed} --out {out}"
    command += (f" --base {base}" if base else "") + (" --quick" if quick else "")
    cfg = quick_plant_config() if quick else PlantConfig()
    card = plant(components, out, cfg, seed=seed, base=base, command=command)
    r = card["wedding_reach"]
    typer.echo(
        f"planted {', '.join(card['planted'])}: wedding reach base {r['base']:.3f}, "
        f"drift {r['drift']:.3f}, tuned {r['tuned']:.3f}; weight-norm AUROC "
        f"{card['weight_norm_auroc']:.3f}; {card['wall_time_s']['total']:.0f} s"
    )
    typer.echo(f"Wrote {out}/base, drift and tuned (the pair: base, tuned).")


def plant_suite_command(
    out: Path | None = typer.Option(
        None, "--out", help="Suite folder (default: the cache's planted/suite, or planted-quick/)."
    ),
    base: Path | None = _BASE,
    quick: bool = _QUICK,
    limit: int | None = typer.Option(None, "--limit", help="Build only the first N pairs."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (per job)."),
    jobs: int = typer.Option(1, "--jobs", help="Pairs built at once, in worker processes."),
) -> None:
    """Build every planted pair of the suite (skipping those already built)."""
    # start-up cost (measured, see lab.cli): the organism loads when a command runs
    from lab.organism.plant import PlantConfig, quick_plant_config
    from lab.organism.suite import SUITE, plant_suite, suite_dir

    if (limit is not None and limit < 1) or jobs < 1:
        raise LabError(f"--limit and --jobs must be at least 1; got {limit} and {jobs}.")
    torch.set_num_threads(threads)
    out = out or (cache_dir("planted-quick") if quick else suite_dir())
    cfg = quick_plant_config() if quick else PlantConfig()
    command = f"lab organism plant-suite --out {out}" + (" --quick" if quick else "")
    t0 = time.perf_counter()
    cards = plant_suite(out, cfg, base=base, suite=SUITE[:limit], command=command, jobs=jobs)
    built = sum(c["built"] for c in cards.values())
    typer.echo(
        f"{len(cards)} pairs in {out} ({built} built, {len(cards) - built} cached) "
        f"in {time.perf_counter() - t0:.0f} s."
    )


def seeds_command(
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated RLHF seeds."),
    out: Path | None = typer.Option(None, "--out", help="Folder (default: the cache's seeds/)."),
    steps: int | None = typer.Option(
        None, "--steps", help="RLHF steps (default: the shipped organism's)."
    ),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads."),
) -> None:
    """Rerun the shipped organism's RLHF once per seed (same base and reward model)."""
    # start-up cost (measured, see lab.cli): the organism loads when a command runs
    from lab.organism.suite import rlhf_seeds

    try:
        chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise LabError(f"--seeds must be comma-separated integers; got {seeds!r}.") from None
    if not chosen or (steps is not None and steps < 1):
        raise LabError("Give at least one seed, and --steps of at least 1.")
    torch.set_num_threads(threads)
    for folder in rlhf_seeds(chosen, out, steps=steps):
        typer.echo(f"{folder}/base, {folder}/tuned")
