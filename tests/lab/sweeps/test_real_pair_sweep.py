"""The real-pair example config, end to end on tiny random pairs of real architectures."""

from __future__ import annotations

import tomllib

import pandas as pd
import pytest

from lab.datasets.dataset import Dataset
from lab.models.checkpoints import data_dir
from lab.models.outputs import model_kl
from lab.models.pair import load_pair
from lab.report import build as build_report
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
    # KL(tuned || base) is the two models' own, on the config's 32 prompts cut to a common length
    pair = load_pair(base, tuned, device="cpu")
    # the sweep reads text with a BOS first only where the tokenizer's own settings say so
    # (these tiny checkpoints' tokenizers do not: it used to prepend one anyway)
    assert not pair.bos.prepend
    data = Dataset.from_jsonl(
        data_dir() / "prompts" / "steering.jsonl", pair.tokenizer, prepend_bos=pair.bos.prepend
    )
    tokens = data.tokens[:32, : int(data.lengths[:32].min())]
    kl = model_kl(pair.tuned, pair.base, tokens).mean().item()
    assert kl > 0 and joint["kl_to_base_tuned"] == pytest.approx(kl, rel=5e-3)  # float32 vs 64
    share = 1 - joint["kl_to_base_patched"] / joint["kl_to_base_tuned"]
    assert joint["kl_share"] == pytest.approx(share)
    path, missing = build_report(out)
    text = path.read_text()
    assert "Migration map" in text and "CircuitsVis.render" in text
    assert any("probes" in m for m in missing)  # no probes analysis in this config
