"""Tokens that spell HTML stay data: nothing a vocabulary holds can end the report's scripts."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from lab import LabError
from lab.report import build
from lab.report import html as viz
from lab.report.browser import check_page

from .test_page import needs_browser

INJECTED = '<script>console.error("INJECTED");document.title="INJECTED"</script>'


def word_level_tokens() -> list[str]:
    """Every token of a word-level vocabulary holding script tags, decoded one by one (as the
    examples analysis decodes a sampled continuation)."""
    words = ["the", "</script>", INJECTED, "a&amp;b", "<!--", "</SCRIPT >", "\u2028", "x\u2029y"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", *words])}, "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return [tok.decode([i]) for i in range(1, len(words) + 1)]


@pytest.fixture
def injected_run(tmp_path):
    tokens = word_level_tokens()
    n = len(tokens)
    pattern = [[1.0 / (j + 1) if k <= j else 0.0 for k in range(n)] for j in range(n)]
    rows = [
        {
            "kind": "attention",
            "title": "heads </script><script>console.error('INJECTED')</script>",
            "payload": json.dumps({"tokens": tokens, "pattern": [pattern], "labels": [INJECTED]}),
        },
        {
            "kind": "kl_tokens",
            "title": "Per-token KL",
            "payload": json.dumps({"tokens": tokens, "values": [0.1 * i for i in range(n)]}),
        },
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "examples.parquet")
    return tmp_path, tokens


def test_script_data_cannot_end_its_script_block(injected_run):
    run, tokens = injected_run
    path, _ = build(run, run / "report.html")
    text = path.read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.S | re.I)
    # each script element ends at its own end tag: the bundle and one per circuitsvis element
    assert len(scripts) == 3 == text.lower().count("</script")
    assert "INJECTED" not in scripts[0]
    calls = [
        re.fullmatch(r'CircuitsVis\.render\("(cv-\d)", CircuitsVis\.(\w+), (.*)\);', s)
        for s in scripts[1:]
    ]
    assert [(c[1], c[2]) for c in calls] == [
        ("cv-1", "AttentionPatterns"),
        ("cv-2", "ColoredTokens"),
    ]
    props = [json.loads(c[3]) for c in calls]
    assert props[0]["tokens"] == tokens == props[1]["tokens"]  # the data, unchanged
    assert props[0]["headLabels"] == [INJECTED]
    for c in calls:
        assert not set(c[3]) & {"<", ">", "&", "\u2028", "\u2029"}


def test_script_helpers_escape_and_refuse():
    assert viz.script_json({"t": "</script>&\u2028", "none": None}) == (
        '{"t": "\\u003c/script\\u003e\\u0026\\u2028"}'
    )
    assert viz.script_element('x = "</Script>"; // <!--') == (
        '<script>x = "<\\/Script>"; // <\\!--</script>'
    )
    with pytest.raises(LabError, match="not a circuitsvis component name"):
        viz.CircuitsVisPage().element("X</script>", tokens=["a"])


@needs_browser
def test_injected_tokens_do_not_run_in_a_browser(injected_run, tmp_path):
    run, _ = injected_run
    path, _ = build(run, run / "report.html")
    result = check_page(path, tmp_path / "shot.png")
    assert result.errors == []  # the injected script would log "INJECTED"
    assert result.circuitsvis_ids == ["cv-1", "cv-2"] == result.rendered_ids
    assert result.ok
