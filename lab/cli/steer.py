"""``lab steer``: sample the untouched base reweighted by a Q head read from its own residual.

    lab steer --beta 0.3                                   # the organism, oracle Q head
    lab steer --beta 1 --source practitioner --json        # Q from the reward model only
    lab steer --beta 0.3 --save runs/qhead                 # keep the head (safetensors + json)
    lab steer --beta 0.5 --head runs/qhead --top-k 8       # reuse it, top-k candidate mode
    lab steer --pair BASE --reward words:wedding,bride --prompt "The" --beta 0.5

On the organism the head is fitted on the oracle's exact soft values of the true utility or on
the practitioner's (the reward model and base samples); on any other pair, on the practitioner's
with ``--reward`` (a reward model folder, or ``words:W1,W2``: one point per continuation token
among the words' tokens). The samples are printed with their metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer

from lab.cli.pair import load_cli_pair
from lab.errors import LabError

__all__ = ["steer"]

_GRID = "0.1,0.3,1,3"


def _betas(text: str) -> tuple[float, ...]:
    try:
        return tuple(sorted(float(b) for b in text.split(",")))
    except ValueError as e:
        raise LabError(f"--betas must be comma-separated numbers; got {text!r}.") from e


def _word_ids(tokenizer, words: str) -> list[int]:
    ids = sorted({i for w in words.split(",") if w for i in tokenizer(w)["input_ids"]})
    special = set(tokenizer.all_special_ids)
    ids = [i for i in ids if i not in special]
    if not ids:
        raise LabError(f"--reward words:{words} names no token; list words after 'words:'.")
    return ids


def steer(
    beta: float = typer.Option(..., "--beta", help="KL coefficient at decode time (> 0)."),
    pair: str = typer.Option("organism", "--pair", help="Base checkpoint, or 'organism'."),
    tuned: str = typer.Option(None, "--tuned", help="Its tuned sibling (default: --pair)."),
    layer: int = typer.Option(
        None, "--layer", help="Residual layer of the head (default: the loaded head's, or last)."
    ),
    top_k: int = typer.Option(None, "--top-k", help="Candidates per step (default: all tokens)."),
    n: int = typer.Option(8, "--n", help="Continuations to sample."),
    source: str = typer.Option(
        None, "--source", help="oracle (organism default) or practitioner (other pairs)."
    ),
    reward: str = typer.Option(
        None, "--reward", help="Reward model folder, or words:W1,W2 (default: the organism's)."
    ),
    head_path: Path = typer.Option(None, "--head", help="Load this saved Q head."),
    save: Path = typer.Option(None, "--save", help="Save the fitted Q head here."),
    betas: str = typer.Option(_GRID, "--betas", help="The head's grid of betas."),
    texts: int = typer.Option(256, "--texts", help="Sequences the head is fitted on."),
    prompt: str = typer.Option("The", "--prompt", help="Prompt (pairs other than the organism)."),
    new_tokens: int = typer.Option(16, "--new-tokens", help="Tokens to add (other pairs)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every draw."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    dtype: str = typer.Option(None, help="float32 (default), bfloat16 or float16."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle weights (weights_only load)."),
    trust_remote_code: bool = typer.Option(
        False, help="Run the checkpoints' own model code (only for authors you trust)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Sample the base reweighted by a Q head: pi_Q ∝ p_base exp(Q / beta)."""
    # start-up cost (measured, see lab.cli): probes.value imports the organism and the solvers
    import probes.value as value
    from lab.organism.evaluate import load

    value.check_beta(beta)
    grid = _betas(betas)
    g = torch.Generator().manual_seed(seed)
    organism = pair == "organism"
    if organism:
        org = load(device=device or "cpu")
        model = org.pair.base
    else:
        loaded = load_cli_pair(pair, tuned or pair, device, dtype, allow_pickle, trust_remote_code)
        model = loaded.base
    source = source or ("oracle" if organism else "practitioner")
    wanted = layer  # None: the loaded head's layer, or the last
    layer = int(model.cfg.n_layers) if layer is None else layer
    rew = None
    if reward is not None and reward.startswith("words:"):
        ids = _word_ids(model.tokenizer, reward.removeprefix("words:"))
        rew = value.as_reward(value.word_reward(ids), model.tokenizer)
    elif reward is not None:
        rew = value.load_reward_model(reward)
    elif not organism:
        raise LabError("Steering this pair needs --reward (a reward model folder or words:...).")
    if head_path is not None:
        head = value.QHead.load(head_path)
        head.check(model, wanted)
    elif organism:
        head = value.organism_head(org, source, grid, layer, texts, g, reward=rew)
    else:
        if source != "practitioner":
            raise LabError("Only the organism has oracle values; use --source practitioner.")
        prompt_ids = model.to_tokens(prompt)
        plain = value.base_samples(model, prompt_ids.expand(texts, -1), new_tokens, g)
        head = value.fit_practitioner_head(
            model, rew, plain, grid, start=prompt_ids.shape[1], layer=layer
        )
    if save is not None:
        head.save(save)
    if organism:
        out = value.steer_organism(org, head, beta, n, g, top_k=top_k)
    else:
        out = value.steer_model(
            model, head, beta, model.to_tokens(prompt), n, new_tokens, g, reward=rew, top_k=top_k
        )
    facts = {"pair": pair, "beta": beta, "layer": head.layer, "betas": list(head.betas)}
    facts |= {"source": source if head_path is None else str(head_path), "top_k": top_k}
    if as_json:
        typer.echo(json.dumps(facts | out, indent=1))
        return
    typer.echo(", ".join(f"{k} {v}" for k, v in facts.items()))
    for key, v in out["metrics"].items():
        typer.echo(f"  {key:<28} {v:.4f}")
    for text in out["samples"]:
        typer.echo(f"  {text}")
