"""The shipped deep base (data/organism/deep/base): deep enough, calibrated, small, recorded."""

import json
from pathlib import Path

import pytest

import lab

DEEP = Path(__file__).resolve().parents[3] / "data" / "organism" / "deep" / "base"
pytestmark = pytest.mark.skipif(
    not (DEEP / "card.json").exists(), reason="no deep base (lab organism train --deep)"
)


def test_deep_base_meets_its_targets():
    card = json.loads((DEEP / "card.json").read_text())
    cfg = card["config"]
    assert cfg["n_layer"] >= 4 and cfg["n_head"] >= 8
    assert cfg["n_layer"] * (cfg["n_head"] + 1) >= 36
    m = card["metrics"]
    assert m["excess_loss"] <= 0.01 and m["ece"] <= 0.005 and m["belief_probe_r2"] >= 0.9
    assert card["wall_time_s"]["base"] <= 20 * 60
    assert card["command"].startswith("lab organism train --deep")
    assert (DEEP / "model.safetensors").stat().st_size < 5_000_000


def test_deep_base_loads_as_a_hooked_model():
    pair = lab.load_pair(DEEP, DEEP, device="cpu")
    tokens = pair.to_tokens("kitchen dinner happy")
    assert pair.base(tokens).shape == (1, 4, 57)
