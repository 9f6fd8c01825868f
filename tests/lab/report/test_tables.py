"""``lab.report.build`` on in-memory tables: the same sections as from the run folder."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from lab import LabError
from lab.report import RunTables, build

from .test_page import _classify_table, _patching_table


@pytest.fixture
def tables() -> dict:
    """A run's results as a sweep names them: tables, a JSON record and a config's text."""
    return {
        "classify": _classify_table(kl_gap=-0.2, att_gap=0.003),
        "patching": _patching_table({"kl_to_base": 0.4, "attractor_prob": 5.68}),
        "joint": pd.DataFrame(
            {"metric": ["kl_share"], "value": [0.61], "components": ["L0H0, L0 MLP"]}
        ),
        "weights": pd.DataFrame({"pair": ["p"], "group": ["attn"], "value": [0.1]}),
        "environment.json": {"python": "3.11", "versions": {"torch": "2.13.0"}},
        "config.toml": "[run]\nseed = 0\n",
    }


def _write(tables: dict, folder) -> None:
    for name, value in tables.items():
        if isinstance(value, pd.DataFrame):
            value.to_parquet(folder / f"{name}.parquet")
        elif isinstance(value, str):
            (folder / name).write_text(value)
        else:
            (folder / name).write_text(json.dumps(value))


def _sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', html, flags=re.S))


def test_in_memory_tables_give_the_run_folders_sections(tables, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _write(tables, folder)
    from_folder, missing_folder = build(folder)
    from_memory, missing_memory = build(tables, tmp_path / "memory.html")
    assert from_folder == folder / "report.html" and from_memory == tmp_path / "memory.html"
    assert missing_memory == missing_folder and len(missing_folder) == 5  # frontier among them
    ours, theirs = _sections(from_memory.read_text()), _sections(from_folder.read_text())
    assert set(ours) == {"headline", "run", "patching", "migration", "missing"}
    assert ours == theirs  # byte for byte, figures included
    assert "L0H0, L0 MLP" in ours["headline"] and "seed = 0" in ours["run"]
    assert "<p>Tables in memory: <code>classify.parquet, patching.parquet" in (
        from_memory.read_text()
    )


def test_in_memory_names_may_carry_their_suffix(tables, tmp_path):
    named = {"classify.parquet": tables["classify"]}
    html = build(named, tmp_path / "r.html")[0].read_text()
    assert (
        _sections(html)["headline"]
        == _sections(build({"classify": tables["classify"]}, tmp_path / "s.html")[0].read_text())[
            "headline"
        ]
    )


def test_in_memory_tables_are_refused_when_unusable(tables, tmp_path):
    with pytest.raises(LabError, match="give `out`"):
        build(tables)
    with pytest.raises(LabError, match=r"holds no results"):
        build({"unknown": tables["weights"]}, tmp_path / "r.html")
    with pytest.raises(LabError, match=r"'probes' is a ndarray; give a DataFrame"):
        RunTables({"probes": tables["weights"].to_numpy()})
    with pytest.raises(LabError, match=r"'environment.json' is a str; the report reads it as a"):
        build({**tables, "environment.json": "{}"}, tmp_path / "r.html")


def test_a_patching_table_straight_from_probes_has_no_direction(tables, tmp_path):
    table = tables["patching"].drop(columns="into")
    html = build({"patching": table}, tmp_path / "r.html")[0].read_text()
    assert "<h3>mlp_out, kl_to_base</h3>" in _sections(html)["patching"]
    assert "patched into" not in _sections(html)["patching"]
