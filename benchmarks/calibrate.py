"""Time the calibration suite on a random pair of a chosen size; print JSON.

    python benchmarks/calibrate.py --preset organism               # CPU, organism-sized
    python benchmarks/calibrate.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16

The pair is made here (``lab.testing.make_pair``: random weights, a byte-level tokenizer, the
preset's shapes and vocabulary size), so the numbers are the suite's cost at that size, not any
model's calibration. Reported: seconds per model (after one warm-up run), tokens and sequences
per model, tokens/s over both models, and peak GPU memory.

On the lent H200 machine (python3 with torch and transformers, but no transformer-lens), carry the
pure-Python packages that it lacks, e.g. copied from this venv into the ignored ``runs/devsite``
(transformer_lens, datasets, dill, multiprocess, _multiprocess; about 16 MB), and run with
``PYTHONPATH=runs/devsite python3 benchmarks/calibrate.py --device cuda --dtype bfloat16``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.calibration.calibrate import CalibrationConfig, calibrate
from lab.models.pair import load_pair
from lab.testing import TinySpec, make_pair

# The real models' shapes below, each at a 1024-token context.
_REAL = partial(TinySpec, n_ctx=1024)
# name -> shape of the random pair (real models' shapes where named after them)
PRESETS: dict[str, TinySpec] = {
    "tiny": TinySpec(arch="gpt2"),
    "organism": TinySpec(arch="gpt2", d_model=64, n_layers=2, n_heads=4, n_ctx=256),
    "gpt2-small": _REAL(arch="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12),
    "qwen2.5-0.5b": _REAL(
        arch="qwen2",
        vocab_size=151936,
        d_model=896,
        n_layers=24,
        n_heads=14,
        n_kv_heads=2,
        d_mlp=4864,
    ),
    "olmo2-1b": _REAL(
        arch="olmo2", vocab_size=100352, d_model=2048, n_layers=16, n_heads=16, d_mlp=8192
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=PRESETS, default="organism")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--sets", nargs="+", default=["calibration", "calibration_chat:plain"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    spec = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        base, tuned = make_pair(root, spec)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        pair = load_pair(base, tuned, device=args.device, dtype=args.dtype)
        loaded = time.perf_counter() - t0
    cfg = CalibrationConfig(batch_tokens=args.batch_tokens)
    cuda = pair.device.type == "cuda"
    calibrate(pair, args.sets, cfg)  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = calibrate(pair, args.sets, cfg)
        if cuda:
            torch.cuda.synchronize()
        runs.append({"total_s": time.perf_counter() - t0, **res.attrs["seconds"]})
    best = min(runs, key=lambda r: r["total_s"])
    facts = res.attrs
    forward_s = best["base"] + best["tuned"]
    n_params = sum(p.numel() for p in pair.base.original_model.parameters())
    print(
        json.dumps(
            {
                "preset": args.preset,
                "spec": asdict(spec),
                "n_params_per_model": n_params,
                "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
                "dtype": args.dtype,
                "threads": args.threads,
                "sets": args.sets,
                "n_records": facts["n_records"],
                "n_sequences_per_model": facts["n_sequences"],
                "n_tokens_per_model": facts["n_tokens"],
                "make_pair_s": round(made, 2),
                "load_pair_s": round(loaded, 2),
                "suite_s": round(best["total_s"], 4),
                "forward_s": {"base": round(best["base"], 4), "tuned": round(best["tuned"], 4)},
                "tokens_per_s": round(2 * facts["n_tokens"] / forward_s),
                "tokens_per_s_with_tokenization": round(2 * facts["n_tokens"] / best["total_s"]),
                "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if cuda
                else None,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
