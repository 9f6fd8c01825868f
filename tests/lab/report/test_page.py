"""The HTML report: built from a real run, opened in headless Chromium, and its refusals."""

from __future__ import annotations

import os
import re
import tomllib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lab import LabError
from lab.models.checkpoints import data_dir
from lab.report import build
from lab.report.browser import check_page, find_chromium
from lab.sweeps import sweep
from probes.components import ClassifyConfig, classify_scores

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
    path, _ = build(run_dir, tmp_path / "report.html")
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
    path, missing = build(run_dir, tmp_path / "r.html")
    assert any(m.startswith("probes: needs probes.parquet") for m in missing)
    html = path.read_text()
    assert 'id="missing"' in html and "Migration map" in html and "Calibration" in html


def test_empty_or_absent_run_folder_is_refused(tmp_path):
    with pytest.raises(LabError, match=r"holds no results.*run `lab demo --out DIR`"):
        build(tmp_path)
    with pytest.raises(LabError, match="No run folder"):
        build(tmp_path / "nothing")


def _classify_table(kl_gap: float, att_gap: float):
    """A classify table (via ``classify_scores``) of two components whose shares divide by the given
    mean departures (base - tuned, per chunk +- 0.02, so a gap near 0 is within noise)."""
    rows = []
    for comp, kind, head in (("L0H0", "head", 0), ("L0 MLP", "mlp", None)):
        for model in ("tuned", "base"):
            for c in range(8):
                for score, metric, gap in (
                    ("prediction", "kl_to_reference", 0.0),
                    ("steering", "kl_to_base", kl_gap),
                    ("steering", "attractor_prob", att_gap),
                ):
                    gap = gap if model == "tuned" else -gap
                    t, s = 0.5 + 0.01 * np.sin(c), 0.5 + 0.01 * np.sin(c) + gap + 0.02 * (-1) ** c
                    rows.append(
                        {"component": comp, "kind": kind, "layer": 0, "head": head,
                         "model": model, "score": score, "metric": metric, "chunk": c,
                         "value": t + 0.017 if score == "steering" else t + 0.05,
                         "target": t, "source": s}
                    )  # fmt: skip
    return classify_scores(pd.DataFrame(rows), ClassifyConfig(n_boot=200))


def _section(html: str, name: str) -> str:
    return re.search(rf'<section id="{name}">(.*?)</section>', html, flags=re.S)[1]


def _patching_table(shares: dict[str, float]):
    return pd.DataFrame(
        [
            {"site": "mlp_out", "layer": 0, "head": None, "position": None, "metric": m,
             "into": "tuned", "value": 0.5 + 0.003 * s, "target": 0.5, "source": 0.503,
             "share": s}
            for m, s in shares.items()
        ]
    )  # fmt: skip


def test_shares_of_a_departure_within_noise_are_flagged(tmp_path):
    # the case: tuned and base differ on the attractor by 0.003, a share of 568%
    _classify_table(kl_gap=-0.2, att_gap=0.003).to_parquet(tmp_path / "classify.parquet")
    _patching_table({"kl_to_base": 0.4, "attractor_prob": 5.68}).to_parquet(
        tmp_path / "patching.parquet"
    )
    html = build(tmp_path, tmp_path / "r.html")[0].read_text()
    headline = _section(html, "headline")
    assert "No finding on attractor_prob: tuned and base differ on attractor_prob by -0.003" in (
        headline
    )
    assert "within noise" in headline and "No finding on kl_to_base" not in headline
    assert headline.count("<li>") == 2  # the kl_to_base findings stay findings
    patching = _section(html, "patching")
    assert "from the classify analysis" in patching
    assert "<p class='noise'>mlp_out, attractor_prob, patched into tuned: tuned and base" in (
        patching
    )
    assert patching.count('class="data noise"') == 1 and patching.count('class="data"') == 1
    assert patching.index("kl_to_base") < patching.index('class="data"') < patching.index("5.68")
    assert patching.index('class="data noise"') < patching.index("5.68")


def test_headline_presents_no_finding_when_the_kl_departure_is_noise(tmp_path):
    _classify_table(kl_gap=0.001, att_gap=-0.3).to_parquet(tmp_path / "classify.parquet")
    html = build(tmp_path, tmp_path / "r.html")[0].read_text()
    headline = _section(html, "headline")
    assert "No finding on kl_to_base" in headline and "<ol>" not in headline
    assert "No finding on attractor_prob" not in headline
    migration = _section(html, "migration")
    assert migration.count('<img class="figure noise"') == 2  # map and layer bars greyed


def test_patching_without_any_interval_says_so(tmp_path):
    _patching_table({"kl_to_base": 0.4}).to_parquet(tmp_path / "patching.parquet")
    html = build(tmp_path, tmp_path / "r.html")[0].read_text()
    assert "No interval of the departures was recorded" in html


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2]", b'{"versions": ["torch"]}'],
    ids=["not-json", "not-utf8", "a-list", "versions-a-list"],
)
def test_a_bad_environment_json_is_named(tmp_path, content):
    (tmp_path / "environment.json").write_bytes(content)
    (tmp_path / "config.toml").write_text("[run]\n")
    with pytest.raises(LabError, match=r"environment\.json is not") as info:
        build(tmp_path, tmp_path / "r.html")
    assert str(tmp_path / "environment.json") in str(info.value)
    assert "\n" not in str(info.value)


def test_a_patching_table_carrying_its_departures_is_judged_by_them(tmp_path):
    table = _patching_table({"kl_to_base": 0.4, "attractor_prob": 5.68})
    # as patching_job writes it when merged with probes.components.classify.departure (base - tuned)
    noise = table.metric == "attractor_prob"
    table = table.assign(gap=0.003, gap_lo=-0.01, gap_hi=0.016, within_noise=noise)
    table.loc[~noise, ["gap", "gap_lo", "gap_hi"]] = [-0.2, -0.21, -0.19]
    table.to_parquet(tmp_path / "patching.parquet")
    patching = _section(build(tmp_path, tmp_path / "r.html")[0].read_text(), "patching")
    assert "from this table" in patching and patching.count('class="data noise"') == 1
    assert "differ on attractor_prob by -0.003 (interval -0.016 to 0.01)" in patching
