"""The HTML report: built from a real run, opened in headless Chromium, and its refusals."""

from __future__ import annotations

import os
import re
import tomllib

import pytest

from lab import LabError
from lab.browser import check_page, find_chromium
from lab.checkpoints import data_dir
from lab.report import build_report
from probes import sweep

needs_browser = pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("STEERLAB_REQUIRE_BROWSER"),
    reason="no Chromium here (CI installs it and sets STEERLAB_REQUIRE_BROWSER=1)",
)


@pytest.fixture(scope="module")
def run_dir(pair_dirs, tmp_path_factory):
    config = tomllib.loads((data_dir() / "sweeps" / "real_pair.toml").read_text())
    base, tuned = pair_dirs("llama")
    config["pairs"] = {"qwen": {"base": str(base), "tuned": str(tuned)}}
    config["run"].update(dtype="float32", device="cpu")
    config["datasets"]["steering"]["path"] = str(data_dir() / "prompts" / "steering.jsonl")
    return sweep.run(config, out=tmp_path_factory.mktemp("run"))


@needs_browser
def test_report_renders_in_a_real_browser(run_dir, tmp_path):
    from PIL import Image

    path, _ = build_report(run_dir, tmp_path / "report.html")
    text = path.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text)  # every script embedded, none fetched
    result = check_page(path, tmp_path / "shot.png")
    assert result.errors == []
    assert result.circuitsvis_ids and result.rendered_ids == result.circuitsvis_ids
    assert result.n_figures >= 5  # calibration, two head heatmaps, migration map, layers
    image = Image.open(result.screenshot).convert("L")
    assert image.size == (1280, 1600)
    pixels = list(image.getdata())
    ink = sum(p < 200 for p in pixels) / len(pixels)
    assert 0.01 < ink < 0.9 and len(set(pixels)) > 20  # text and figures, not a blank page


def test_partial_run_lists_what_is_missing(run_dir, tmp_path):
    path, missing = build_report(run_dir, tmp_path / "r.html")
    assert any(m.startswith("probes: needs probes.parquet") for m in missing)
    html = path.read_text()
    assert 'id="missing"' in html and "Migration map" in html and "Calibration" in html


def test_empty_or_absent_run_folder_is_refused(tmp_path):
    with pytest.raises(LabError, match=r"holds no results.*run `lab demo --out DIR`"):
        build_report(tmp_path)
    with pytest.raises(LabError, match="No run folder"):
        build_report(tmp_path / "nothing")
