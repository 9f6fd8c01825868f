"""The probes analysis's random-init baseline is booted with the pair's own loading options."""

from __future__ import annotations

import pandas as pd

from lab.models.checkpoints import data_dir
from lab.sweeps import sweep
from lab.testing import TEST_SPECS, make_pair


def test_random_baseline_of_a_pickle_pair_uses_the_pairs_consent(tmp_path):
    # pickle-only weights load only with allow_pickle, in the config and from the caller; the
    # random model of the pair's shape must be booted with that consent as well, not refused
    base, tuned = make_pair(tmp_path / "pair", TEST_SPECS["gpt2"], safetensors=False)
    config = {
        "run": {"out": str(tmp_path / "run"), "device": "cpu"},
        "pairs": {"tiny": {"base": str(base), "tuned": str(tuned), "allow_pickle": True}},
        "datasets": {
            "w": {"source": "world", "path": str(data_dir() / "worlds" / "mess3.json"), "n": 24}
        },
        "analyses": [
            {"kind": "cache", "pair": "tiny", "dataset": "w", "hooks": ["resid_post"]},
            {"kind": "probes", "pair": "tiny", "dataset": "w", "control": None},
        ],
    }
    out = sweep.run(config, allow_pickle=True)
    probes = pd.read_parquet(out / "probes.parquet")
    assert {"base", "tuned", "random"} <= set(probes["model"])
