"""``lab demo``: the main job on the shipped organism, end to end, and its report in a browser."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pandas as pd
import pytest

from lab.cli import run
from lab.report import RunDir, headline
from lab.report.browser import check_page

from .report.test_page import needs_browser


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out, printed = tmp_path_factory.mktemp("demo"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run(["demo", "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def demo_dir(demo_run):
    return demo_run[0]


def test_demo_names_the_steering_components(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    top = summary["top_steering"]
    assert len(top) == 5 and top[0]["kl_share_removed"] > 0.3
    assert all(c["ci"][0] <= c["kl_share_removed"] <= c["ci"][1] for c in top)
    joint = summary["top5_joint"]
    # the top five carry most of the departure and of the excess wedding-reach rate
    assert joint["kl_share"] > 0.5 and joint["reach_share"] > 0.5
    assert joint["reach_tuned"] > 0.8 > joint["reach_base"]
    ev = pd.read_parquet(demo_dir / "organism_eval.parquet").set_index(["model", "metric"])
    assert ev.loc[("rlhf", "ece"), "value"] > 10 * ev.loc[("base", "ece"), "value"]


def test_demo_prints_the_reports_headline(demo_run):
    out, printed = demo_run
    found = headline(RunDir(out))
    assert len(found.top) == 5 and "\n".join(found.lines()) in printed
    assert printed.rstrip().endswith(f"summary: {out / 'summary.json'}")
    report = (out / "report.html").read_text()
    section = re.search(r'<section id="headline">(.*?)</section>', report, flags=re.S)[1]
    assert section == f"<h2>Headline</h2>{found.html()}"
    assert [c["component"] for c in found.top] == [
        c["component"] for c in json.loads((out / "summary.json").read_text())["top_steering"]
    ]


def test_demo_wrote_every_section(demo_dir):
    for name in ("probes", "patching", "classify", "joint", "examples", "reliability"):
        assert (demo_dir / f"{name}.parquet").exists(), name
    html = (demo_dir / "report.html").read_text()
    assert 'id="missing"' not in html


@needs_browser
def test_demo_report_renders(demo_dir, tmp_path):
    result = check_page(demo_dir / "report.html", tmp_path / "demo.png")
    assert result.errors == [] and result.rendered_ids == result.circuitsvis_ids
    assert len(result.circuitsvis_ids) == 2 and result.n_figures >= 10
