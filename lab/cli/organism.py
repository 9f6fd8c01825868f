"""`lab organism`: train the shipped model organism and print its metrics against ground truth.

``lab organism train --world FILE`` trains a base model on a custom world instead (a JSON or
safetensors HMM, state- or edge-emitting: see ``lab.organism.worldfile``), e.g. Mess3 from
``data/worlds/mess3.json``. ``lab organism frontier`` measures every method's utility–KL
frontier against the exact optimum (``probes.frontier``). The shipped organism lives in
``data_dir() / "organism"`` (``data/`` of the repository, or ``$STEERLAB_DATA``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import typer

from lab.cli.plant import plant_command, plant_suite_command, seeds_command
from lab.errors import LabError
from lab.models.checkpoints import organism_dir

if TYPE_CHECKING:
    from lab.organism.train import BaseConfig
    from lab.organism.world import HMM
    from lab.organism.worldfile import EdgeHMM

__all__ = ["app", "evaluate", "frontier_command", "train"]

app = typer.Typer(help="The model organism: a world with ground truth, a base and an RLHF model.")

_REPO = Path(__file__).resolve().parents[2]
_RUNS = _REPO / "runs"
_BASE_KEYS = ("excess_loss", "kl_to_world", "ece", "belief_probe_r2", "belief_probe_best_layer")


def _shipped() -> Path:
    """The shipped organism's folder, read when a command runs ($STEERLAB_DATA may change)."""
    return organism_dir("")


_COLUMNS = [
    "excess_loss",
    "kl_to_world",
    "ece",
    "entropy",
    "belief_probe_r2",
    "true_utility",
    "rm_score",
    "kl_to_base",
    "kl_to_pi_star",
    "wedding_reach",
    "impossible_transition_rate",
    "impossible_transition_ratio_vs_pi_star",
    "distinct_tokens",
]


@app.command()
def train(
    quick: bool = typer.Option(False, "--quick", help="Tiny budgets (tests): under a minute."),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: the data folder's organism/)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
    threads: int = typer.Option(
        1, "--threads", help="torch CPU threads (1 is fastest on 2 cores)."
    ),
    world: Path | None = typer.Option(
        None,
        "--world",
        help="A world file (JSON or safetensors HMM, see lab.organism.worldfile): train only "
        "a base model on it, into --out (default runs/world-NAME).",
    ),
    steps: int | None = typer.Option(None, "--steps", help="Base optimiser steps (override)."),
    length: int | None = typer.Option(None, "--length", help="Words per sequence (override)."),
    deep: bool = typer.Option(
        False,
        "--deep",
        help="Train only the deeper base (4 layers x 8 heads) into the data folder's "
        "organism/deep (the base of planted organisms).",
    ),
) -> None:
    """Train world -> base -> reward model -> RLHF and write the folders with their cards
    (with --world, only a base model on that world)."""
    # start-up cost (measured, see lab.cli): the organism loads when a command runs
    from lab.organism.pipeline import OrganismConfig, quick_config, train_organism
    from lab.organism.story import story_world
    from lab.organism.train import deep_base_config
    from lab.organism.worldfile import read_world

    for name, value in (("--steps", steps), ("--length", length)):
        if value is not None and value < 1:
            raise LabError(f"{name} must be at least 1; got {value}.")
    torch.set_num_threads(threads)
    cfg = quick_config() if quick else OrganismConfig()
    if deep:
        if world is not None:
            raise LabError("--deep trains the story world's deep base; drop --world or --deep.")
        deep_base = deep_base_config()
        if quick:
            deep_base = dataclasses.replace(deep_base, d_model=32, steps=60, batch=32)
        cfg = dataclasses.replace(cfg, base=deep_base)
    changes = {k: v for k, v in (("steps", steps), ("length", length)) if v is not None}
    if changes:
        cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, **changes))
    command = "lab organism train" + (" --quick" if quick else "") + f" --seed {seed}"
    command += "".join(f" --{k} {v}" for k, v in changes.items())
    if deep:
        shipped = _shipped() / "deep"
        out = out or (_RUNS / "deep-quick" if quick else shipped)
        command += " --deep" + (f" --out {out}" if out.resolve() != shipped.resolve() else "")
        _train_base(story_world(), out, cfg.base, seed, command, 64 if quick else 1024, "deep base")
        typer.echo(f"Wrote {out}/base.")
        return
    if world is not None:
        custom = read_world(world)  # validated before anything trains
        out = out or _RUNS / f"world-{world.stem}{'-quick' if quick else ''}"
        if out.resolve() == _shipped().resolve():
            raise LabError(
                f"--out {out} is the shipped organism's folder; give a custom world its own --out."
            )
        command += f" --world {world} --out {out}"
        _train_base(custom, out, cfg.base, seed, command, 64 if quick else 512, "base")
        typer.echo(f"Wrote {out}/base (a world file has no labeler: no reward model or RLHF).")
        return
    shipped = _shipped()
    out = out or (_RUNS / "organism-quick" if quick else shipped)
    if out.resolve() != shipped.resolve():
        command += f" --out {out}"
    rows = train_organism(out, cfg, seed=seed, command=command)
    typer.echo(_table(rows))
    typer.echo(f"Wrote {out}/base, rlhf, peak and reward.")


def _train_base(
    world: HMM | EdgeHMM, out: Path, cfg: BaseConfig, seed: int, command: str, texts: int, name: str
) -> None:
    """Train only a base model on ``world`` into ``out/base`` (the deep base, or a custom
    world's) and print its metrics on ``texts`` held-out texts, as ``name: key=value, ...``."""
    # start-up cost (measured, see lab.cli): the organism loads when a command runs
    from lab.organism.pipeline import train_world_base

    metrics = train_world_base(out, world, cfg, seed=seed, texts=texts, command=command)
    typer.echo(f"{name}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in _BASE_KEYS))


@app.command("eval")
def evaluate(
    folder: Path | None = typer.Argument(
        None, help="Organism folder (default: the data folder's organism/)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    texts: int = typer.Option(1024, help="Held-out world sequences for prediction metrics."),
    prompts: int = typer.Option(512, help="World prompts for behaviour metrics."),
) -> None:
    """Metrics of world, base, RLHF and pi* on held-out world data."""
    # start-up cost (measured, see lab.cli): the organism loads when a command runs
    from lab.organism.evaluate import EvalConfig, evaluate_organism, load_organism

    torch.set_num_threads(1)
    org = load_organism(folder or _shipped())
    rows = evaluate_organism(org, EvalConfig(texts=texts, prompts=prompts))
    if as_json:
        json.dump(_finite(rows), sys.stdout, indent=1)
        typer.echo()
    else:
        typer.echo(_table(rows))


_FRONTIER_COLUMNS = [
    "method",
    "knob",
    "true_utility",
    "rm_score",
    "wedding_reach",
    "impossible_transition_rate",
    "kl_to_base",
    "kl_to_pi_star",
    "ece",
    "policy_ece",
]


@app.command("frontier")
def frontier_command(
    quick: bool = typer.Option(
        False, "--quick", help="128 prompts, 4 betas, n in 1..64 by powers of 2 (minutes)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for frontier.parquet, frontier.png and frontier.json "
        "(default runs/frontier, or runs/frontier-quick).",
    ),
) -> None:
    """True utility against KL to the base for pi*, pi* of the RM, best-of-n, the value-guided
    sampler (oracle and practitioner Q heads) and RLHF's checkpoints, on the same world prompts;
    with the calibration contrast and each curve's CPU cost. Without --quick, the first run
    replays the shipped RLHF run to cache its checkpoints (CPU minutes)."""
    # start-up cost (measured, see lab.cli): the organism and the frontier load when a command runs
    from lab.organism.evaluate import load_organism
    from probes.frontier import (
        FrontierConfig,
        calibration_contrast,
        compare_with_rlhf,
        curve_costs,
        frontier,
        plot_frontier,
        quick_frontier_config,
    )

    wall = time.perf_counter()
    cfg = quick_frontier_config() if quick else FrontierConfig()
    out = out or _RUNS / ("frontier-quick" if quick else "frontier")
    table = frontier(load_organism(_shipped()), cfg, progress=not as_json)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "frontier.parquet")
    fig = plot_frontier(table)
    fig.savefig(out / "frontier.png", dpi=110)
    methods = set(table.method)
    summary = {
        "out": str(out),
        "quick": quick,
        "calibration_contrast": calibration_contrast(table).to_dict("records"),
        "costs": curve_costs(table).to_dict("records"),
        "compare": (
            compare_with_rlhf(table) if {"sampler_practitioner", "rlhf"} <= methods else None
        ),
        "wall_s": time.perf_counter() - wall,
    }
    (out / "frontier.json").write_text(json.dumps(_finite(summary), indent=1) + "\n")
    if as_json:
        records = table[[*_FRONTIER_COLUMNS, "pi_star_beta", "kl_how"]].to_dict("records")
        json.dump(_finite({**summary, "points": records}), sys.stdout, indent=1)
        typer.echo()
        return
    typer.echo(table[_FRONTIER_COLUMNS].to_string(float_format=lambda v: f"{v:.4g}", index=False))
    typer.echo(f"Wrote {out}/frontier.parquet, frontier.png and frontier.json.")


def _finite(obj):
    """JSON has no infinities or NaNs: write them as null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _table(rows: dict[str, dict]) -> str:
    # start-up cost (measured, see lab.cli): pandas loads when a table is printed
    import pandas as pd

    models = {k: v for k, v in rows.items() if k != "reward_model"}
    frame = pd.DataFrame(models).T.reindex(columns=_COLUMNS)
    lines = [frame.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")]
    if "reward_model" in rows:
        rm = rows["reward_model"]
        lines.append("reward model: " + ", ".join(f"{k}={v:.4g}" for k, v in rm.items()))
    return "\n".join(lines)


# after train and eval, so that `lab organism --help` lists them first
app.command("plant")(plant_command)
app.command("plant-suite")(plant_suite_command)
app.command("seeds")(seeds_command)
