"""Heatmaps are pure functions of result tables."""

import pandas as pd
import pytest
from matplotlib.figure import Figure

from lab import LabError
from probes.patching.heatmaps import layer_head_heatmap, layer_position_heatmap
from probes.patching.table import COLUMNS


def table(kind, axis, n_layers=2, n=3, metrics=("m",)):
    rows = []
    for metric in metrics:
        for layer in range(n_layers):
            for i in range(n):
                head, pos = (i, None) if axis == "head" else (None, i)
                rows.append((kind, layer, head, pos, metric, 0.1 * i, 0.0, 1.0, 0.1 * i - layer))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype({"head": "Int64", "position": "Int64"})


def test_layer_position_heatmap_has_one_cell_per_site():
    fig = layer_position_heatmap(table("resid_pre", "position"), tokens=["a", "b", "c"])
    assert isinstance(fig, Figure)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, 3)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]


def test_layer_head_heatmap_colours_by_the_chosen_column():
    fig = layer_head_heatmap(table("z", "head", n=4), value="value")
    assert fig.axes[0].images[0].get_array()[1, 3] == pytest.approx(0.3)


def test_heatmap_refuses_tables_it_cannot_lay_out():
    with pytest.raises(LabError, match="several metrics"):
        layer_head_heatmap(table("z", "head", metrics=("a", "b")))
    with pytest.raises(LabError, match="No rows with a position"):
        layer_position_heatmap(table("z", "head"))
    with pytest.raises(LabError, match="No column 'effect'"):
        layer_head_heatmap(table("z", "head"), value="effect")
