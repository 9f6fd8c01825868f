"""Time the whole lab on the real pair: `lab sweep data/sweeps/smollm2.toml`, then `lab report`.

    python benchmarks/real_sweep.py            # a fresh run folder under the system's temp dir
    python benchmarks/real_sweep.py --json --out runs/smollm2-timed

Needs the cached pair (`lab fetch smollm2` and `lab fetch smollm2 --steer wedding`). Each command
runs as a subprocess in a fresh run folder (nothing reused). Reported: wall and CPU time of the
sweep and of the report, peak RSS of the largest child (``resource.getrusage(RUSAGE_CHILDREN)``,
read after each), the machine's load average before and after (the wall time is only as good as
the CPU was free; the CPU time much less sensitive), and from the run's tables: the top-5
steering components of the tuned model (share of KL(tuned || base) and of the wedding words'
probability removed, with 90% intervals), how many components classify patched exactly, the
attribution mass left out, and the exact-vs-attribution rank correlation on the candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_figures  # noqa: E402
from probes.components.migration import top_steering  # noqa: E402

CONFIG = ROOT / "data" / "sweeps" / "smollm2.toml"


def _lab() -> list[str]:
    """The `lab` command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "lab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lab.cli"]


def _timed(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB of the largest child so far) of one
    subprocess; CPU time (user + system) barely depends on what else loads the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return round(seconds, 1), round(cpu, 1), round(after.ru_maxrss / 1024)


def _top(scores: pd.DataFrame, metric: str, n: int = 5) -> list[dict]:
    top = top_steering(scores, n=n, metric=metric)  # exact shares clear of noise
    return [
        {
            "component": r.component,
            "share": round(r.value, 4),
            "ci": [round(r.lo, 4), round(r.hi, 4)],
        }
        for r in top.itertuples()
    ]


def _pruning(scores: pd.DataFrame) -> dict:
    groups = scores.drop_duplicates(["model", "score", "metric"])
    return {
        "components": int(scores.component.nunique()),
        "exact": int(scores[scores.exact.astype(bool)].component.nunique()),
        "rank_corr": {
            f"{r.score}/{r.metric}/into {r.model}": round(float(r.rank_corr), 3)
            for r in groups.itertuples()
        },
        "mass_left_out": {
            f"{r.score}/{r.metric}/into {r.model}": round(float(r.mass_left_out), 4)
            for r in groups.itertuples()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--config", type=Path, default=CONFIG, help="the sweep config")
    ap.add_argument("--out", type=Path, default=None, help="run folder (must not exist)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="smollm2-")) / "run"
    if out.exists():
        raise SystemExit(f"{out} exists; give a fresh run folder (the timing must not reuse one).")
    load_before = os.getloadavg()
    sweep_s, sweep_cpu, sweep_rss = _timed([*_lab(), "sweep", str(args.config), "--out", str(out)])
    report_s, report_cpu, rss = _timed([*_lab(), "report", str(out)])
    scores = pd.read_parquet(out / "classify.parquet")
    figures = {
        "run": str(out),
        "sweep_s": sweep_s,
        "sweep_cpu_s": sweep_cpu,
        "sweep_peak_rss_mib": sweep_rss,
        "report_s": report_s,
        "report_cpu_s": report_cpu,
        "peak_rss_mib": rss,
        "threads": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "top5_kl_to_base": _top(scores, "kl_to_base"),
        "top5_attractor_prob": _top(scores, "attractor_prob"),
        "pruning": _pruning(scores),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print_figures({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                       for k, v in figures.items()}, False, 20)  # fmt: skip


if __name__ == "__main__":
    main()
