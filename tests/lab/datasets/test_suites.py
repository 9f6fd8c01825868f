"""The shipped prompt sets: exactly what ``python -m lab.datasets.suites`` writes, prefix-free
calibration outcomes, and steering sets of the three kinds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.datasets.outcomes import spellings
from lab.datasets.prompts import read_prompts
from lab.datasets.suites import SUITES, write_suites
from lab.models.checkpoints import data_dir


def test_shipped_sets_are_what_the_generator_writes(tmp_path):
    for path in write_suites(tmp_path):
        shipped = data_dir() / "prompts" / path.name
        assert shipped.read_text() == path.read_text(), (
            f"regenerate: python -m lab.datasets.suites ({path})"
        )


@pytest.mark.parametrize("name", [n for n in SUITES if n.startswith("calibration")])
def test_calibration_sets_are_prefix_free_and_modest(name):
    records = read_prompts(name)
    assert 30 <= len(records) <= 300
    kinds = {r.kind for r in records}
    assert {"coin", "die", "digit", "suit", "choice", "range", "control"} <= kinds
    assert all(r.chat == name.endswith("chat") for r in records)
    for r in records:
        forms = {o: set(spellings(o)) for o in r.outcomes}
        for o, fs in forms.items():
            others = set().union(*(f for p, f in forms.items() if p != o))
            assert not any(b.startswith(a) for a in fs for b in others), (r.id, o)
        assert (r.answer is not None) == (r.kind == "control")


def test_steering_sets():
    for name in ("steering", "steering_chat"):
        records = read_prompts(name)
        assert {r.kind for r in records} == {"story", "neutral", "negative"}
        assert all(not r.outcomes and r.chat == name.endswith("chat") for r in records)


def test_the_generator_runs_as_a_module(tmp_path):
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-m", "lab.datasets.suites", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    written = sorted(Path(line).name for line in proc.stdout.split())
    assert written == sorted(f"{name}.jsonl" for name in SUITES)
    for name in written:
        assert (tmp_path / name).read_text() == (data_dir() / "prompts" / name).read_text()
