"""Sweeps: config validation, one tidy table per analysis, finished jobs skipped."""

from __future__ import annotations

import pandas as pd
import pytest

from lab import LabError
from lab.models.checkpoints import data_dir
from lab.sweeps import sweep
from lab.testing import TEST_SPECS, make_pair


def _config(pair_dirs, out, **extra):
    base, tuned = pair_dirs("gpt2")
    return {
        "run": {"out": str(out), "device": "cpu"},
        "pairs": {"tiny": {"base": str(base), "tuned": str(tuned)}},
        "analyses": [{"kind": "weights", "pair": "tiny"}],
        **extra,
    }


def test_sweep_writes_tables_and_skips_done_jobs(pair_dirs, tmp_path):
    out = sweep.run(_config(pair_dirs, tmp_path / "run"))
    table = pd.read_parquet(out / "weights.parquet")
    assert set(table["group"]) >= {"layer 0", "layer 1", "embed"}
    assert (table["value"] > 0).all() and (table["pair"] == "tiny").all()
    assert (out / "environment.json").exists() and (out / "config.json").exists()
    (job_file,) = (out / "results" / "weights").glob("*.parquet")
    stamp = job_file.stat().st_mtime_ns
    sweep.run(_config(pair_dirs, tmp_path / "run"))
    assert job_file.stat().st_mtime_ns == stamp  # not recomputed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": {}}, r"Unknown top-level sections: extra\. Valid: analyses, datasets"),
        ({"analyses": [{"kind": "weigths", "pair": "tiny"}]}, r"unknown kind 'weigths'.*weights"),
        ({"analyses": [{"kind": "weights", "pair": "tiny", "lr": 1}]}, r"Unknown keys.*: lr"),
        ({"analyses": [{"kind": "weights", "pair": "other"}]}, r"names pair 'other'"),
        ({"analyses": []}, r"no \[\[analyses\]\]"),
    ],
)
def test_bad_configs_are_refused(pair_dirs, tmp_path, change, message):
    with pytest.raises(LabError, match=message):
        sweep.load_config(_config(pair_dirs, tmp_path, **change))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(LabError, match="No sweep config"):
        sweep.load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    with pytest.raises(LabError, match="not valid TOML"):
        sweep.load_config(bad)


def test_probes_refuse_a_store_built_from_other_models(pair_dirs, tmp_path):
    base, tuned = pair_dirs("gpt2")
    other = make_pair(tmp_path / "other", TEST_SPECS["gpt2"], seed=7)
    steering = str(data_dir() / "prompts" / "steering.jsonl")
    config = {
        "run": {"out": str(tmp_path / "a"), "device": "cpu"},
        "pairs": {
            "tiny": {"base": str(base), "tuned": str(tuned)},
            "other": {"base": str(other[0]), "tuned": str(other[1])},
        },
        "datasets": {"prompts": {"source": "jsonl", "path": steering}},
        "analyses": [{"kind": "cache", "pair": "tiny", "dataset": "prompts"}],
    }
    out = sweep.run(config)
    store = pd.read_parquet(out / "cache.parquet")["store"].iloc[0]
    config["analyses"] = [
        {
            "kind": "probes",
            "pair": "other",
            "dataset": "prompts",
            "store": str(store),
            "targets": ["x"],
        }
    ]
    with pytest.raises(
        LabError, match=r"built from other models: its base is .* but .* has '.*other/base'"
    ):
        sweep.run(config)
