"""``lab cache`` (collect a pair's activations into a store) and ``lab store info``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lab.activations import ActivationStore, CacheInterrupted, cache_pair, check_options
from lab.cli.pair import load_cli_pair
from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.runtime import resolve_device, resolve_dtype

__all__ = ["cache", "store_app", "store_info"]

store_app = typer.Typer(name="store", help="Inspect activation stores.", no_args_is_help=True)


def _jsonl(path: Path, tokenizer, seq_len: int, text_field: str, bos: bool) -> Dataset:
    return Dataset.from_jsonl(path, tokenizer, text_field=text_field, prepend_bos=bos)


def _text(path: Path, tokenizer, seq_len: int, text_field: str, bos: bool) -> Dataset:
    return Dataset.from_text_file(path, tokenizer, seq_len=seq_len, prepend_bos=bos)


# Data file suffix -> loader; anything else is read as plain text.
LOADERS = {".jsonl": _jsonl, ".txt": _text}


def cache(
    base: str = typer.Argument(..., help="Base checkpoint: folder, hub id, or 'organism'."),
    tuned: str = typer.Argument(..., help="Tuned checkpoint: folder, hub id, or 'organism'."),
    data: Path = typer.Option(..., "--data", help="Prompts (.jsonl, one object a line) or text."),
    hooks: str = typer.Option(
        "resid_post", "--hooks", help="Hook names or patterns, comma-separated (resid_post, ...)."
    ),
    out: Path = typer.Option(..., "--out", help="Store folder (new, or one to --resume)."),
    batch_size: int = typer.Option(8, help="Sequences per forward (and per shard)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    dtype: str = typer.Option(None, help="Model dtype: float32 (default), bfloat16, float16."),
    store_dtype: str = typer.Option(None, help="Stored dtype (default: the model dtype)."),
    padding_side: str = typer.Option("right", help="Pad batches on the 'right' or 'left'."),
    seq_len: int = typer.Option(128, help="Window length for plain-text data."),
    text_field: str = typer.Option("text", help="JSONL field holding the prompt."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted store in --out."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle weights (weights_only load)."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Run the checkpoints' own modelling code (trusted only)."
    ),
) -> None:
    """Run both models on the same batches and store the chosen hooks of both on disk."""

    # Every option is checked before a model loads or anything is written.
    check_options(batch_size=batch_size, padding_side=padding_side, out=out)
    resolve_device(device)
    resolve_dtype(dtype)
    resolve_dtype(store_dtype)
    if seq_len < 2:
        raise LabError(f"--seq-len must be at least 2 (BOS and a token); got {seq_len}.")
    if not data.is_file():
        raise LabError(f"No data file at {data} (--data); give a .jsonl or a text file.")
    try:
        pair = load_cli_pair(base, tuned, device, dtype, allow_pickle, trust_remote_code)
        loader = LOADERS.get(data.suffix, _text)
        # BOS first only where the checkpoint's own tokenizer says so (lab.models.pair.bos_rule)
        dataset = loader(data, pair.tokenizer, seq_len, text_field, pair.bos.prepend)
        store = cache_pair(
            pair,
            dataset,
            hooks,
            out=out,
            batch_size=batch_size,
            dtype=store_dtype,
            padding_side=padding_side,
            resume=resume,
        )
    except CacheInterrupted as e:
        typer.echo(
            f"interrupted: {e.root} keeps {e.kept} of {e.total} shards; rerun the same command "
            "with --resume to finish it.",
            err=True,
        )
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        typer.echo("interrupted before caching began; nothing was written.", err=True)
        raise typer.Exit(130) from None
    typer.echo(repr(store))


def _describe(store: ActivationStore) -> dict:
    m = store.manifest
    return {
        "path": str(store.root),
        "state": "complete"
        if store.complete
        else "damaged (resume to recompute)"
        if store.damaged
        else "partial (resume to finish)",
        "damaged": "; ".join(f"shard {i}: {why}" for i, why in store.damaged.items()) or "none",
        "shards": f"{store.n_shards} of {m['n_shards']}",
        "tokens": f"{store.n_tokens} of {m['dataset']['n_tokens']}",
        "models": ", ".join(f"{r} ({v['source']})" for r, v in m["models"].items()),
        "hooks": len(store.hooks),
        "dtype": m["dtype"],
        "size_mb": round(store.nbytes() / 2**20, 2),
        "dataset": f"{m['dataset']['name']} (hash {m['dataset']['hash']}, "
        f"{m['dataset']['n_sequences']} sequences)",
        "targets": ", ".join(store.target_names) or "none",
        "versions": ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
    }


@store_app.command("info")
def store_info(
    path: Path = typer.Argument(..., help="Store folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest and state as JSON."),
    verify: bool = typer.Option(
        True, help="Check every shard's SHA-256 (reads the whole store); sizes are always checked."
    ),
) -> None:
    """What a store holds: models, hooks and shapes, tokens, dtype, completeness, versions."""
    store = ActivationStore.open(path, verify=verify)
    if as_json:
        state = {
            "complete": store.complete,
            "n_shards_present": store.n_shards,
            "damaged": {str(i): why for i, why in store.damaged.items()},
        }
        typer.echo(json.dumps(store.manifest | state | {"n_tokens_present": store.n_tokens}))
        return
    info = _describe(store)
    width = max(map(len, info))
    for key, value in info.items():
        typer.echo(f"{key:<{width}}  {value}")
    for hook in store.hooks:
        typer.echo(f"  {hook:<40} {tuple(store.manifest['shapes'][hook])}")
