"""Time the 3-pair sweep on the local executor and on a local 2-worker Ray cluster, side by side.

    python benchmarks/executors.py [--quick] [--json] [--threads 1] [--slurm]

Runs ``data/sweeps/three_pairs.toml`` (3 organism checkpoint pairs, each a chain weights,
classify -> joint: 9 jobs, 3 independent chains) once per executor, each into its own fresh
folder, in one process, one after the other:
- ``local``: one job after another in this process, ``--threads`` torch threads (default 1);
- ``local_2_threads``: the same with 2 torch threads, the anchor that uses both cores too;
- ``ray``: a local Ray cluster of 2 worker processes (1 CPU, 1 torch thread each). Its start is
  timed apart (``ray_start_s``; on a real cluster it is already up), then the sweep on it
  (``ray_s``); ``ray_with_start_s`` is both;
- ``slurm`` (with ``--slurm``): submitit's local executor, 2 jobs at once (no sbatch: local
  processes, each loading its pair for its job).
Each ``*_vs_local`` is local's wall time over that executor's (above 1: faster). The tables of
every executor are checked equal to local's (``tables_equal``: pandas' float tolerance; the job
ids are the same by construction). On a 2-core machine the gain is bounded by 2, less the
workers' start (importing torch, loading the pair) and whatever else loads the machine
(``load_before``: the 1-minute load average when the script started). ``--quick`` shrinks the
jobs (fewer prompts), for a smoke run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch

from benchmarks.common import benchmark_parser, print_figures
from lab.sweeps import sweep

CONFIG = Path(__file__).resolve().parents[1] / "data/sweeps/three_pairs.toml"
KINDS = ("weights", "classify", "joint")  # the tables the sweep writes


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config(out: Path, executor: str, quick: bool, **options) -> dict:
    """The 3-pair config, written to ``out``, on ``executor`` with its ``[run.<executor>]``."""
    raw = tomllib.loads(CONFIG.read_text())
    raw["run"] |= {"out": str(out), "executor": executor}
    if options:
        raw["run"][executor] = options
    if quick:  # a smoke run: the same graph, fewer prompts
        raw["datasets"]["world"]["n"] = 32
        for job in raw["analyses"]:
            if job["kind"] == "classify":
                job |= {"n_prompts": 16, "n_chunks": 2}
            elif job["kind"] == "joint":
                job["n_prompts"] = 8
    return raw


def timed(raw: dict) -> tuple[Path, float]:
    start = time.perf_counter()
    out = sweep.run(raw)
    return out, time.perf_counter() - start


def same_tables(a: Path, b: Path) -> bool:
    for kind in KINDS:
        try:
            pd.testing.assert_frame_equal(
                pd.read_parquet(a / f"{kind}.parquet"), pd.read_parquet(b / f"{kind}.parquet")
            )
        except AssertionError as e:
            log(f"{kind} differs: {str(e).splitlines()[0]}")
            return False
    return True


def start_ray(ray, tries: int = 3) -> float:
    """Start a local cluster of 2 CPUs; its seconds. Started again when it fails: Ray's raylet
    gives its agent process 15 s to start, which a loaded 2-core machine can exceed."""
    for attempt in range(1, tries + 1):
        start = time.perf_counter()
        try:
            quiet = {"log_to_driver": False, "logging_level": "ERROR"}
            ray.init(num_cpus=2, include_dashboard=False, **quiet)
            return time.perf_counter() - start
        except Exception as e:
            ray.shutdown()
            log(f"the Ray cluster did not start (try {attempt}/{tries}): {e}")
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


def main() -> None:
    ap = benchmark_parser(
        __doc__,
        quick="fewer prompts per job (a smoke run)",
        threads="torch threads of the local executor (Ray workers: 1 each)",
    )
    ap.add_argument("--slurm", action="store_true", help="also submitit's local executor")
    args = ap.parse_args()
    if args.device != "cpu":
        ap.error("the executors are compared on the CPU (the config's device)")
    # Optional dependency, imported here: the Ray extra (steerlab[ray]).
    import ray

    figures: dict = {"cores": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.set_num_threads(args.threads)
        log("local ...")
        local, figures["local_s"] = timed(config(root / "local", "local", args.quick))
        figures["jobs"] = len(sweep.load_config(config(root / "local", "local", args.quick)).jobs)
        if not args.quick:
            log("local, 2 torch threads ...")
            torch.set_num_threads(2)
            _, figures["local_2_threads_s"] = timed(config(root / "l2", "local", args.quick))
            torch.set_num_threads(args.threads)

        log("ray: starting a local cluster of 2 workers ...")
        figures["ray_start_s"] = start_ray(ray)
        try:  # the sweep finds the cluster up and leaves it up
            out, figures["ray_s"] = timed(config(root / "ray", "ray", args.quick, workers=2))
        finally:
            ray.shutdown()
        figures["ray_with_start_s"] = figures["ray_start_s"] + figures["ray_s"]
        equal = {"ray": same_tables(local, out)}

        if args.slurm:
            log("slurm: submitit's local executor, 2 jobs at once ...")
            options = {"cluster": "local", "array_parallelism": 2, "poll": 0.2}
            out, figures["slurm_s"] = timed(config(root / "slurm", "slurm", args.quick, **options))
            equal["slurm"] = same_tables(local, out)

    for name in ("local_2_threads", "ray", "ray_with_start", "slurm"):
        if f"{name}_s" in figures:
            figures[f"{name}_vs_local"] = round(figures["local_s"] / figures[f"{name}_s"], 2)
    figures = {k: round(v, 1) if k.endswith("_s") else v for k, v in figures.items()}
    figures["tables_equal"] = equal
    figures["load_after"] = round(os.getloadavg()[0], 2)
    print_figures(figures, args.json, width=24)


if __name__ == "__main__":
    main()
