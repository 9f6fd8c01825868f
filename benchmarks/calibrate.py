"""Time the calibration suite on a random pair of a chosen size, or measure `lab calibrate`'s peak
memory against an older checkout; print the figures.

    python benchmarks/calibrate.py --preset organism               # CPU, organism-sized
    python benchmarks/calibrate.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16
    python benchmarks/calibrate.py --against /tmp/old              # peak RSS, old vs this tree

Preset mode: the pair is made here (``lab.testing.make_pair``: random weights, a byte-level
tokenizer, the preset's shapes and vocabulary size), so the numbers are the suite's cost at that
size, not any model's calibration. Reported: seconds per model (after one warm-up run), tokens and
sequences per model, tokens/s over both models, and peak GPU memory.

``--against DIR`` mode: ``lab calibrate`` on a real pair (default: the cached SmolLM2 and its
wedding-steered sibling, ``lab fetch smollm2 [--steer wedding]``) runs as a subprocess twice, side
by side in one run: with ``DIR`` (e.g. ``git worktree add /tmp/old <commit>``) first on
PYTHONPATH, then with this tree. Reported: each run's peak RSS (its own ``ru_maxrss``, from
``os.wait4``) and wall time, their ratios, and the largest difference between their outcome
probabilities (all rows, and the chat-templated rows alone, which no BOS rule touches). Wall
times on a shared machine move with its load; the ratio of the two runs is the figure to quote.

On the lent H200 machine (python3 with torch and transformers, but no transformer-lens), carry the
pure-Python packages that it lacks, e.g. copied from this venv into the ignored ``runs/devsite``
(transformer_lens, datasets, dill, multiprocess, _multiprocess; about 16 MB), and run with
``PYTHONPATH=runs/devsite python3 benchmarks/calibrate.py --device cuda --dtype bfloat16``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import benchmark_parser, print_figures
from lab.calibration.calibrate import CalibrationConfig, calibrate
from lab.models.pair import load_pair
from lab.runtime import cache_dir
from lab.testing import TinySpec, make_pair

ROOT = Path(__file__).resolve().parents[1]  # this tree
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


def preset_figures(args) -> dict:
    """The suite in this process on a random pair of the preset's shape (module docstring)."""
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
    for _ in range(1 if args.quick else args.repeat):
        t0 = time.perf_counter()
        res = calibrate(pair, args.sets, cfg)
        if cuda:
            torch.cuda.synchronize()
        runs.append({"total_s": time.perf_counter() - t0, **res.attrs["seconds"]})
    best = min(runs, key=lambda r: r["total_s"])
    facts = res.attrs
    forward_s = best["base"] + best["tuned"]
    n_params = sum(p.numel() for p in pair.base.original_model.parameters())
    return {
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
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "runs": runs,
    }


def _cli_run(tree: Path, args, out: Path) -> dict:
    """``lab calibrate`` with ``tree`` first on PYTHONPATH: its peak RSS (GiB) and wall time."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    code = "import sys; from lab.cli import main; sys.argv[0] = 'lab'; main()"
    cmd = [sys.executable, "-c", code, "calibrate", args.base, args.tuned]
    cmd += ["--device", args.device, "--out", str(out)]
    for s in args.sets:
        cmd += ["-p", s]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not every child's
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"lab calibrate failed in {tree} (exit status {status})")
    return {"peak_rss_gib": usage.ru_maxrss / 2**20, "wall_s": time.perf_counter() - t0}


def _max_prob_diff(old: pd.DataFrame, new: pd.DataFrame) -> float:
    """Largest |old - new| over the outcome probabilities of rows that both runs scored."""
    on = ["set", "id", "model"]
    both = old[[*on, "probs"]].merge(new[[*on, "probs"]], on=on, suffixes=("_old", "_new"))
    if both.empty:
        return float("nan")
    return max(
        float(abs(torch.tensor(list(a)) - torch.tensor(list(b))).max())
        for a, b in zip(both["probs_old"], both["probs_new"], strict=True)
    )


def against_figures(args) -> dict:
    """Peak RSS and wall time of ``lab calibrate``: the older tree's and this one's, in turn."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        outs = {"old": folder / "old.parquet", "new": folder / "new.parquet"}
        old = _cli_run(Path(args.against).resolve(), args, outs["old"])
        new = _cli_run(ROOT, args, outs["new"])
        tables = {k: pd.read_parquet(v) for k, v in outs.items()}
    chat = {k: t[t["chat_template"]] for k, t in tables.items()}
    return {
        "base": args.base,
        "tuned": args.tuned,
        "sets": args.sets,
        "threads": args.threads,
        "old_tree": str(args.against),
        "load_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "old_peak_rss_gib": round(old["peak_rss_gib"], 3),
        "new_peak_rss_gib": round(new["peak_rss_gib"], 3),
        "peak_rss_ratio_old_over_new": round(old["peak_rss_gib"] / new["peak_rss_gib"], 2),
        "old_wall_s": round(old["wall_s"], 1),
        "new_wall_s": round(new["wall_s"], 1),
        "wall_ratio_old_over_new": round(old["wall_s"] / new["wall_s"], 2),
        "rows": {k: len(t) for k, t in tables.items()},
        "max_prob_diff_all_rows": _max_prob_diff(tables["old"], tables["new"]),
        "max_prob_diff_chat_rows": _max_prob_diff(chat["old"], chat["new"]),
    }


def main() -> None:
    ap = benchmark_parser(
        __doc__,
        quick="one timed run (preset mode); the plain-text set only (--against mode)",
        threads="CPU threads (OMP_NUM_THREADS for the --against subprocesses)",
    )
    ap.add_argument("--preset", choices=PRESETS, default="organism")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    ap.add_argument("--batch-tokens", type=int, default=CalibrationConfig.batch_tokens)
    ap.add_argument("--sets", nargs="+", default=None, help="prompt sets (NAME or NAME:MODE)")
    ap.add_argument("--against", help="an older checkout: measure lab calibrate's peak RSS vs it")
    ap.add_argument("--keep", help="--against: keep both runs' tables here (old/new.parquet)")
    real = cache_dir("real")
    ap.add_argument("--base", default=str(real / "smollm2"), help="--against: base checkpoint")
    ap.add_argument("--tuned", default=str(real / "smollm2-wedding"), help="--against: tuned")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.against:
        args.sets = args.sets or (
            ["calibration"] if args.quick else ["calibration", "calibration_chat"]
        )
        figures = against_figures(args)
    else:
        args.sets = args.sets or ["calibration", "calibration_chat:plain"]
        figures = preset_figures(args)
    print_figures(figures, args.json, 30)


if __name__ == "__main__":
    main()
