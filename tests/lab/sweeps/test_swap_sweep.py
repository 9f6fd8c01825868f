"""The swap analysis on the shipped organism, its report section, and locus beside mediation."""

import numpy as np
import pandas as pd
import pytest

from lab.report import build as build_report
from lab.sweeps import sweep
from probes.components.migration import locus_map, locus_table
from probes.patching.heatmaps import component_heatmap


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("swap_run")
    config = {
        "run": {"out": str(out), "seed": 0},
        "pairs": {"organism": {"base": "organism", "tuned": "organism"}},
        "datasets": {"world": {"source": "organism", "n": 16}},
        "analyses": [
            {"kind": "swap", "pair": "organism", "dataset": "world", "n_prompts": 16},
            {"kind": "patching", "pair": "organism", "dataset": "world", "n_prompts": 16},
        ],
    }
    return sweep.run(config)


def test_swap_analysis_on_the_organism(run_dir):
    table = pd.read_parquet(run_dir / "swap.parquet")
    n_layers = int(table.layer.max()) + 1
    n_heads = int(table["head"].max()) + 1
    per_direction = n_layers * (n_heads + 1)
    assert len(table) == 2 * 2 * per_direction  # two directions, two metrics
    assert set(table.metric) == {"kl_to_base", "attractor_prob"}
    assert set(table.component) >= {"L0H0", "L0.mlp", f"L{n_layers - 1}.mlp"}
    kl = table[(table.metric == "kl_to_base") & (table["into"] == "tuned")]
    # the tuned model's own KL to the base is the departure; the base's is 0
    assert kl.target.iloc[0] > 0 and kl.source.iloc[0] == pytest.approx(0, abs=1e-6)
    assert np.allclose(kl.share, (kl.value - kl.target) / (kl.source - kl.target))
    # some component's weights carry a real part of the steering
    assert kl.share.max() > 0.1
    assert {"gap", "gap_lo", "gap_hi", "within_noise"} <= set(table.columns)


def test_locus_beside_mediation(run_dir):
    swap = pd.read_parquet(run_dir / "swap.parquet")
    patching = pd.read_parquet(run_dir / "patching.parquet")
    both = locus_table(swap, patching)
    assert len(both) == swap[(swap.metric == "kl_to_base") & (swap["into"] == "tuned")].shape[0]
    row = both[both.component == "L0.mlp"].iloc[0]
    sw = swap[
        (swap.component == "L0.mlp") & (swap.metric == "kl_to_base") & (swap["into"] == "tuned")
    ]
    pa = patching[
        (patching.site == "mlp_out")
        & (patching.layer == 0)
        & (patching.metric == "kl_to_base")
        & (patching["into"] == "tuned")
    ]
    assert row.locus == pytest.approx(float(sw.share.iloc[0]))
    assert row.mediation == pytest.approx(float(pa.share.iloc[0]))
    fig = locus_map(swap, patching)
    assert len(fig.axes[0].collections) == 2  # heads and MLPs
    grid = component_heatmap(swap[swap["into"] == "tuned"], metric="kl_to_base")
    labels = [t.get_text() for t in grid.axes[0].get_xticklabels()]
    assert labels[0] == "H0" and labels[-1] == "MLP"


def test_report_has_a_swap_section(run_dir, tmp_path):
    path, missing = build_report(run_dir, tmp_path / "report.html")
    html = path.read_text()
    start = html.index('<section id="swap">')
    section = html[start : html.index("</section>", start)]
    assert "Component swapping" in section and section.count("<img") == 5  # 4 maps + locus
    assert "Locus (swap) beside mediation" in section and "L0.mlp" in section
    assert not any(m.startswith("swap:") for m in missing)
