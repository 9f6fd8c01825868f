"""``lab report RUN_DIR``: one self-contained HTML page of a run's results, openable offline.

``build`` takes a run folder (written by ``lab demo`` or ``lab sweep``) or the same tables in
memory (a dict of name -> DataFrame, as a sweep names them). Each section of ``SECTIONS`` renders
when any of its files is there; the others are listed as missing, with the command that makes
them; results with none of them are refused. Figures are inline PNG, and circuitsvis's script is
embedded once, never fetched.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.report.html import CircuitsVisPage, circuitsvis_script
from lab.report.sections import SECTIONS
from lab.report.tables import RunDir, open_run

__all__ = ["build"]

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.data{border-collapse:collapse;font-size:.85em;margin:.5em 0}table.data td,table.data th{
border:1px solid #ddd;padding:3px 8px;text-align:right}img.figure{max-width:100%;display:block;
margin:.8em 0}.missing{color:#a33}.finding{background:#f3f7ff;padding:.6em;border-left:3px solid
#36c}code,pre{background:#f6f6f6;padding:2px 4px}.noise{color:#888}table.noise,img.figure.noise{
opacity:.4}p.noise{background:#f4f4f4;padding:.4em;border-left:3px solid #bbb}"""


def build(
    tables_or_run_dir: str | Path | Mapping[str, Any], out: str | Path | None = None
) -> tuple[Path, list[str]]:
    """Write the HTML report of a run folder or of in-memory tables (``{"classify": scores,
    "patching": table}``); return its path and the missing sections' notes.

    ``out`` defaults to ``RUN_DIR/report.html``; in-memory tables need it.
    """
    run = open_run(tables_or_run_dir)
    if out is None and not isinstance(run, RunDir):
        raise LabError("In-memory tables have no run folder: give `out`, the report's path.")
    page = CircuitsVisPage()
    body, missing = [], []
    for name, section in SECTIONS.items():
        if not any(run.has(f) for f in section.needs):
            missing.append(
                f"{name}: needs {' or '.join(section.needs)} (made by {section.made_by})"
            )
            continue
        body.append(
            f'<section id="{name}"><h2>{html.escape(section.title)}</h2>'
            f"{section.render(run, page)}</section>"
        )
    what, which = run.where
    if not body:
        wanted = sorted({f for s in SECTIONS.values() for f in s.needs})
        raise LabError(
            f"{which} holds no results (none of {', '.join(wanted)}); "
            "run `lab demo --out DIR` or `lab sweep CONFIG` first."
        )
    notes = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    missing_html = (
        f'<section id="missing"><h2>Missing</h2><ul class="missing">{notes}</ul></section>'
        if missing
        else ""
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Steerlab report</title>"
        f"<style>{_STYLE}</style>{circuitsvis_script()}</head><body>"
        f"<h1>Steerlab report: which components stopped predicting and started steering?</h1>"
        f"<p>{what} <code>{html.escape(which)}</code>, written {when}.</p>"
        + "".join(body)
        + missing_html
        + "</body></html>"
    )
    path = Path(out) if out else Path(which) / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path, missing
