"""`lab organism`: train the shipped model organism and print its metrics against ground truth."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer

app = typer.Typer(help="The model organism: a world with ground truth, a base and an RLHF model.")

_REPO = Path(__file__).resolve().parents[2]
_SHIPPED = _REPO / "data" / "organism"
_QUICK = _REPO / "runs" / "organism-quick"
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
    out: Path | None = typer.Option(None, "--out", help="Output folder (default data/organism)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
    threads: int = typer.Option(
        1, "--threads", help="torch CPU threads (1 is fastest on 2 cores)."
    ),
) -> None:
    """Train world -> base -> reward model -> RLHF and write the folders with their cards."""
    import torch

    from lab.organism.pipeline import OrganismConfig, quick_config, train_organism

    torch.set_num_threads(threads)
    out = out or (_QUICK if quick else _SHIPPED)
    command = "lab organism train" + (" --quick" if quick else "") + f" --seed {seed}"
    if out != _SHIPPED:
        command += f" --out {out}"
    cfg = quick_config() if quick else OrganismConfig()
    rows = train_organism(out, cfg, seed=seed, command=command)
    typer.echo(_table(rows))
    typer.echo(f"Wrote {out}/base, rlhf, peak and reward.")


@app.command("eval")
def evaluate(
    folder: Path = typer.Argument(_SHIPPED, help="Organism folder (default data/organism)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    texts: int = typer.Option(1024, help="Held-out world sequences for prediction metrics."),
    prompts: int = typer.Option(512, help="World prompts for behaviour metrics."),
) -> None:
    """Metrics of world, base, RLHF and pi* on held-out world data."""
    import torch

    from lab.organism.evaluate import EvalConfig, evaluate_organism, load_organism

    torch.set_num_threads(1)
    rows = evaluate_organism(load_organism(folder), EvalConfig(texts=texts, prompts=prompts))
    if as_json:
        json.dump(_finite(rows), sys.stdout, indent=1)
        typer.echo()
    else:
        typer.echo(_table(rows))


def _finite(obj):
    """JSON has no infinities: write them as null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _table(rows: dict[str, dict]) -> str:
    import pandas as pd

    models = {k: v for k, v in rows.items() if k != "reward_model"}
    frame = pd.DataFrame(models).T.reindex(columns=_COLUMNS)
    lines = [frame.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")]
    if "reward_model" in rows:
        rm = rows["reward_model"]
        lines.append("reward model: " + ", ".join(f"{k}={v:.4g}" for k, v in rm.items()))
    return "\n".join(lines)
