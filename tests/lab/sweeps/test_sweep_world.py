"""A world file from the CLI to a probe sweep: train a Mess3 base, then probe its beliefs."""

from __future__ import annotations

import tomllib

import pandas as pd

from lab.cli import run
from lab.models.checkpoints import data_dir
from lab.sweeps import sweep

MESS3 = data_dir() / "worlds" / "mess3.json"


def test_mess3_base_is_probed_for_its_exact_beliefs(tmp_path):
    out = tmp_path / "mess3"
    args = ["organism", "train", "--quick", "--world", str(MESS3), "--out", str(out)]
    assert run([*args, "--steps", "60", "--length", "12"]) == 0
    config = tomllib.loads((data_dir() / "sweeps" / "mess3.toml").read_text())
    config["pairs"]["mess3"] = {"base": str(out / "base"), "tuned": str(out / "base")}
    config["datasets"]["mess3"].update(path=str(MESS3), n=64, length=12)
    config["run"].update(device="cpu")
    done = sweep.run(config, out=tmp_path / "run")
    probes = pd.read_parquet(done / "probes.parquet")
    assert set(probes.target) >= {"belief", "next_token_entropy"}
    test = probes[(probes.split == "test") & (probes.metric == "r2") & (probes.model == "base")]
    belief = test[test.target == "belief"].set_index(["control", "layer"]).value
    # the belief simplex is read from the residual stream, far above its shuffled control
    assert belief["task"].max() > 0.85 and belief["shuffle"].max() < 0.1
