"""The plot is a pure function of the results table."""

import pytest
import torch
from matplotlib.figure import Figure

from lab.errors import LabError
from probes.linear.layerwise import ProbeConfig, fit_probes
from probes.linear.plots import plot_probe_scores
from probes.linear.source import TensorSource


@pytest.fixture
def source():
    seq = torch.arange(10).repeat_interleave(8)
    x = torch.randn(2, 80, 4)
    y = (x[:, :, 0] > 0).long()
    feats = {"base": x, "tuned": 2 * x}
    hooks = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    return TensorSource(feats, hooks, seq, {"cls": y[1]})


def test_plot_probe_scores(source):
    table = fit_probes(source, ["cls"], ProbeConfig(regs=(1.0,), device="cpu")).table
    fig = plot_probe_scores(table, "cls")
    assert isinstance(fig, Figure)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert sorted(labels) == ["base", "base (shuffle control)", "tuned", "tuned (shuffle control)"]
    with pytest.raises(LabError, match="cls"):
        plot_probe_scores(table, "nope")
