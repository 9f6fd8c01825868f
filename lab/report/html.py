"""Pieces of self-contained HTML: matplotlib figures as inline PNG, circuitsvis elements with the
circuitsvis script embedded once per page (never fetched from a CDN), and escaped tables.

Everything written inside a ``<script>`` element goes through ``script_json`` (data) or
``script_element`` (code), so that no token, label or title can end the script early: a token
``</script><script>...`` stays a string instead of becoming page HTML.

Pure functions of data: nothing here touches a model.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import circuitsvis
import matplotlib.pyplot as plt
from circuitsvis.utils.convert_props import convert_prop_type

from lab.errors import LabError

__all__ = [
    "CircuitsVisPage",
    "circuitsvis_script",
    "figure_html",
    "script_element",
    "script_json",
    "table_html",
]

# Characters that may not appear raw in JSON inside <script>: "<" and ">" (which could spell
# "</script>" or "<!--"), "&", and the two line separators that older JavaScript rejects.
_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _classes(base: str, cls: str) -> str:
    return html.escape(f"{base} {cls}".strip())


def figure_html(fig: Any, alt: str, *, cls: str = "", dpi: int = 110) -> str:
    """A matplotlib figure as an inline PNG ``<img>`` (the figure is closed afterwards); ``cls``
    adds classes to its ``figure`` class (``"noise"`` greys it out)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    classes, alt = _classes("figure", cls), html.escape(alt)
    return f'<img class="{classes}" alt="{alt}" src="data:image/png;base64,{data}"/>'


def table_html(rows: list[dict[str, Any]], *, cls: str = "", floatfmt: str = "{:.4g}") -> str:
    """A list of dicts (one per row, same keys) as an HTML table; ``cls`` adds classes to its
    ``data`` class (``"noise"`` greys it out)."""
    if not rows:
        return "<p><em>(empty)</em></p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return html.escape(floatfmt.format(v) if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    classes = _classes("data", cls)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def script_json(value: Any) -> str:
    """``value`` as a JSON (hence JavaScript) literal that is safe inside a ``<script>`` element.

    ``<``, ``>``, ``&``, U+2028 and U+2029 only ever occur inside JSON strings, where their
    ``\\uXXXX`` escapes mean the same characters; so the literal decodes to ``value`` unchanged.
    """
    if isinstance(value, dict):
        value = {k: convert_prop_type(v) for k, v in value.items() if v is not None}
    return json.dumps(convert_prop_type(value)).translate(_JSON_ESCAPES)


def script_element(js: str) -> str:
    """JavaScript code as an inline ``<script>`` element that only its own end tag can close.

    ``</script`` and ``<!--`` are written ``<\\/script`` and ``<\\!--``: the same text inside a
    JavaScript string, regex or comment, which is the only place code can hold them. Data must
    not be spliced into ``js`` as text; give it to ``script_json`` first.
    """
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)
    return "<script>" + js.replace("<!--", "<\\!--") + "</script>"


@cache
def circuitsvis_script() -> str:
    """The circuitsvis browser bundle as one inline ``<script>`` that defines ``CircuitsVis``."""
    bundle = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return script_element(bundle.read_text(encoding="utf-8"))


class CircuitsVisPage:
    """Numbered circuitsvis elements for one page; the page embeds ``circuitsvis_script()`` once.

    ``element("AttentionPatterns", tokens=..., attention=...)`` returns a ``div`` and the script
    that renders into it; ids are deterministic (``cv-1``, ``cv-2`` ...) so reports reproduce.
    """

    def __init__(self) -> None:
        self.count = 0

    def element(self, component: str, **props: Any) -> str:
        if not re.fullmatch(r"[A-Za-z_]\w*", component):
            raise LabError(
                f"{component!r} is not a circuitsvis component name (e.g. AttentionPatterns)."
            )
        self.count += 1
        uid = f"cv-{self.count}"
        call = f"CircuitsVis.render({script_json(uid)}, CircuitsVis.{component}, "
        return f'<div id="{uid}" class="cv" data-component="{component}"></div>' + script_element(
            call + f"{script_json(props)});"
        )
