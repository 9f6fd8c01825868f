"""The sweep's attribution options: classify pruned by attribution, patching by attribution."""

from __future__ import annotations

import pandas as pd
import pytest

from lab.errors import LabError
from lab.models.checkpoints import data_dir
from lab.report import build as build_report
from lab.report.headline import headline
from lab.report.tables import RunDir
from lab.sweeps import sweep

SCORES = ["value", "lo", "hi", "gap", "within_noise", "label"]
KEYS = ["component", "model", "score", "metric"]


def _config(base, tuned, analyses: list[dict]) -> dict:
    return {
        "run": {"seed": 0, "dtype": "float32", "device": "cpu"},
        "pairs": {"tiny": {"base": str(base), "tuned": str(tuned)}},
        "datasets": {
            "steering": {
                "source": "jsonl",
                "path": str(data_dir() / "prompts" / "steering.jsonl"),
            }
        },
        "analyses": [{"pair": "tiny", "dataset": "steering", **a} for a in analyses],
    }


def _sorted(t: pd.DataFrame) -> pd.DataFrame:
    return t.sort_values(KEYS).reset_index(drop=True)[KEYS + SCORES]


def test_pruned_classify_and_attribution_patching_in_a_sweep(pair_dirs, tmp_path):
    base, tuned = pair_dirs("llama")
    common = {"kind": "classify", "n_prompts": 16, "n_chunks": 4}
    full = sweep.run(_config(base, tuned, [common]), out=tmp_path / "full")
    zero = sweep.run(_config(base, tuned, [{**common, "prune_mass": 0.0}]), out=tmp_path / "zero")
    cfg = [
        {**common, "prune_mass": 0.2, "max_exact": 3},
        {"kind": "patching", "method": "attribution", "n_prompts": 16},
        {"kind": "joint", "n_prompts": 16},
    ]
    out = sweep.run(_config(base, tuned, cfg), out=tmp_path / "pruned")
    f, z, p = (pd.read_parquet(d / "classify.parquet") for d in (full, zero, out))
    pd.testing.assert_frame_equal(_sorted(z), _sorted(f))  # prune_mass 0: the exhaustive result
    exact = set(p[p.exact].component)
    assert 1 <= len(exact) <= 3 and p.component.nunique() == f.component.nunique() == 10
    assert p.rank_corr.notna().any() and (p.mass_left_out > 0).all()
    patching = pd.read_parquet(out / "patching.parquet")
    assert set(patching.method) == {"attribution"} and len(patching) == 2 * 10  # both directions
    assert patching.gap.notna().all()
    found = headline(RunDir(out))
    assert found.pruning is not None and found.pruning["exact"] == len(exact)
    assert {c["component"] for c in found.top} <= exact
    assert "exact vs attribution rank correlation" in " ".join(found.lines())
    path, _ = build_report(out)
    assert "chosen by attribution patching" in path.read_text()


@pytest.mark.parametrize(
    ("analysis", "match"),
    [
        ({"kind": "classify", "prune_mass": 1.5}, "prune_mass must be in"),
        ({"kind": "classify", "max_exact": 5}, "give prune_mass too"),
        ({"kind": "patching", "method": "guess"}, "Unknown patching method 'guess'"),
    ],
)
def test_bad_attribution_options_are_refused_when_the_config_loads(pair_dirs, analysis, match):
    base, tuned = pair_dirs("llama")
    with pytest.raises(LabError, match=match):
        sweep.load_config(_config(base, tuned, [analysis]))
