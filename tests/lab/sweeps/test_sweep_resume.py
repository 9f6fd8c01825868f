"""A sweep killed with kill -9 half-way, run again, ends with the uninterrupted sweep's results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from lab.models.checkpoints import data_dir
from lab.sweeps import sweep

KINDS = ("weights", "calibrate", "patching", "classify", "joint", "examples")


def _config(tmp_path, base, tuned, out):
    text = (data_dir() / "sweeps" / "real_pair.toml").read_text()
    text = text.replace('"Qwen/Qwen2.5-0.5B-Instruct"', f'"{tuned}"')
    text = text.replace('"Qwen/Qwen2.5-0.5B"', f'"{base}"')
    text = text.replace('"../../runs/qwen2.5-0.5b"', f'"{out}"').replace('"bfloat16"', '"float32"')
    steering = data_dir() / "prompts" / "steering.jsonl"
    text = text.replace('"data/prompts/steering.jsonl"', f'"{steering}"')
    path = tmp_path / f"{out.name}.toml"
    path.write_text(text)
    return path


def test_kill_9_then_rerun_equals_uninterrupted(pair_dirs, tmp_path):
    base, tuned = pair_dirs("gpt2")
    whole = sweep.run(_config(tmp_path, base, tuned, tmp_path / "whole"))

    config = _config(tmp_path, base, tuned, tmp_path / "killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = (
        "import sys, torch; torch.set_num_threads(1); import lab.sweeps.sweep as s; "
        "s.run(sys.argv[1])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = tmp_path / "killed" / "results" / "patching"
    deadline = time.time() + 240
    while not (done.exists() and any(done.glob("*.parquet"))) and time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in (tmp_path / "killed" / "results").glob("*/*.parquet")}
    assert "patching" in finished and "examples" not in finished  # killed half-way

    again = sweep.run(config)
    for kind in KINDS:
        a, b = (
            pd.read_parquet(whole / f"{kind}.parquet"),
            pd.read_parquet(again / f"{kind}.parquet"),
        )
        pd.testing.assert_frame_equal(a, b, check_exact=True)
