"""The real-pair example config, end to end on tiny random pairs of real architectures."""

from __future__ import annotations

import tomllib

import pandas as pd
import pytest

from lab.models.checkpoints import data_dir
from lab.report.build import build_report
from lab.sweeps import sweep


@pytest.mark.parametrize("arch", ["qwen2", "llama", "olmo2"])
def test_real_pair_config_runs_offline(arch, pair_dirs, tmp_path):
    config = tomllib.loads((data_dir() / "sweeps" / "real_pair.toml").read_text())
    base, tuned = pair_dirs(arch)
    config["pairs"] = {"qwen": {"base": str(base), "tuned": str(tuned)}}
    config["run"].update(dtype="float32", device="cpu")
    config["datasets"]["steering"]["path"] = str(data_dir() / "prompts" / "steering.jsonl")
    out = sweep.run(config, out=tmp_path / "run")
    for kind in ("weights", "calibrate", "patching", "classify", "joint", "examples"):
        assert (out / f"{kind}.parquet").exists(), kind
    patching = pd.read_parquet(out / "patching.parquet")
    assert patching.gap.notna().all()  # every share carries its departure's interval
    assert ((patching.gap_lo <= patching.gap) & (patching.gap <= patching.gap_hi)).all()
    classify = pd.read_parquet(out / "classify.parquet")
    assert set(classify.model) == {"base", "tuned"} and len(classify.component.unique()) == 10
    joint = pd.read_parquet(out / "joint.parquet").set_index("metric")["value"]
    assert joint["kl_to_base_tuned"] > 0 and joint["kl_to_base_patched"] >= 0
    path, missing = build_report(out)
    text = path.read_text()
    assert "Migration map" in text and "CircuitsVis.render" in text
    assert any("probes" in m for m in missing)  # no probes analysis in this config
