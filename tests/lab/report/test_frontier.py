"""The report's frontier section, from a sweep's frontier analysis on the shipped organism."""

from __future__ import annotations

import pandas as pd
import pytest

from lab.report import build
from lab.sweeps import sweep

CONFIG = {
    "run": {"seed": 0},
    "pairs": {"organism": {"base": "organism", "tuned": "organism"}},
    "analyses": [
        {
            "kind": "frontier",
            "pair": "organism",
            "methods": ["pi_star", "best_of_n", "rlhf"],
            "prompts": 32,
        }
    ],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # no replayed checkpoints: the shipped three
        mp.setenv("STEERLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return sweep.run(CONFIG, out=tmp_path_factory.mktemp("run"))


def test_a_frontier_sweep_writes_its_table(run_dir):
    table = pd.read_parquet(run_dir / "frontier.parquet")
    assert list(table.method.unique()) == ["pi_star", "best_of_n", "rlhf"]
    assert len(table[table.method == "best_of_n"]) == 7  # the quick budget's n = 1, 2, ..., 64
    assert table.true_utility.notna().all()


def test_the_report_shows_the_frontier_and_the_calibration_contrast(run_dir, tmp_path):
    path, missing = build(run_dir, tmp_path / "report.html")
    text = path.read_text()
    start = text.index('<section id="frontier">')
    section = text[start : text.index("</section>", start)]
    assert section.count("<img") == 1 and "Calibration contrast" in section
    assert "last checkpoint (step=500)" in section and "recorded_cpu_s" in section
    assert "At equal KL" not in section  # no practitioner sampler in this run
    assert not any(m.startswith("frontier") for m in missing)


def test_a_run_without_a_frontier_lists_it_as_missing(tmp_path):
    table = pd.DataFrame({"pair": ["p"], "group": ["all"], "value": [0.1]})
    _, missing = build({"weights": table}, tmp_path / "r.html")
    assert any(m.startswith("frontier: needs frontier.parquet") for m in missing)
