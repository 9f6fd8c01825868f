"""``lab report --check`` fails, with one line naming what failed, when the page is broken."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import lab.report.browser
import lab.report.page
from lab.cli import run as cli
from lab.report.browser import PageCheck

from .test_page import needs_browser

BROKEN = (
    "<!doctype html><html><head><meta charset='utf-8'></head><body>"
    '<div id="cv-1" class="cv" data-component="ColoredTokens"></div>'
    '<div id="cv-2" class="cv" data-component="ColoredTokens"></div>'
    '<script>CircuitsVis.render("cv-1", {"tokens": ["</script><script>'
    'console.error("INJECTED")</script>"]});</script></body></html>'
)


@pytest.fixture
def run_dir(tmp_path):
    pd.DataFrame({"pair": ["p"], "group": ["attn"], "value": [0.1]}).to_parquet(
        tmp_path / "weights.parquet"
    )
    return tmp_path


def _broken_report(run_dir, out=None):
    path = Path(out) if out else Path(run_dir) / "report.html"
    path.write_text(BROKEN, encoding="utf-8")
    return path, []


def test_check_failures_exit_non_zero_with_one_line(run_dir, monkeypatch, capsys):
    seen = PageCheck(
        errors=["Uncaught SyntaxError: Invalid\nor unexpected token", "INJECTED"],
        circuitsvis_ids=["cv-1", "cv-2"],
        rendered_ids=[],
        n_figures=0,
        screenshot=run_dir / "report.png",
    )
    monkeypatch.setattr(lab.report.browser, "check_page", lambda page, shot, **kw: seen)
    assert cli(["report", str(run_dir), "--check"]) == 1
    err = [e for e in capsys.readouterr().err.splitlines() if not e.startswith("missing: ")]
    assert len(err) == 1 and err[0].startswith("error: The page ")
    assert "2 errors in the browser (first: Uncaught SyntaxError: Invalid or unexpected" in err[0]
    assert "0 of 2 circuitsvis elements rendered (not cv-1, cv-2)" in err[0]
    assert not seen.ok
    fine = PageCheck([], ["cv-1"], ["cv-1"], 2, run_dir / "report.png")
    monkeypatch.setattr(lab.report.browser, "check_page", lambda page, shot, **kw: fine)
    assert fine.ok and cli(["report", str(run_dir), "--check"]) == 0


@needs_browser
def test_check_of_an_injected_page_exits_non_zero(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(lab.report.page, "build", _broken_report)
    assert cli(["report", str(run_dir), "--check"]) == 1
    captured = capsys.readouterr()
    assert "0/2 circuitsvis elements rendered" in captured.out
    (line,) = [e for e in captured.err.splitlines() if not e.startswith("missing: ")]
    assert "failed its browser check" in line and "0 of 2 circuitsvis elements rendered" in line


@needs_browser
def test_check_of_a_sound_page_exits_zero(run_dir, capsys):
    assert cli(["report", str(run_dir), "--check"]) == 0
    assert "browser: 0 errors, 0/0 circuitsvis elements rendered" in capsys.readouterr().out
