"""Pieces of self-contained HTML: matplotlib figures as inline PNG, circuitsvis elements with the
circuitsvis script embedded once per page (never fetched from a CDN), and escaped tables.

Pure functions of data: nothing here touches a model.
"""

from __future__ import annotations

import base64
import html
import io
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "CircuitsVisPage",
    "circuitsvis_script",
    "figure_html",
    "table_html",
]


def figure_html(fig: Any, alt: str, *, dpi: int = 110) -> str:
    """A matplotlib figure as an inline PNG ``<img>`` (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def table_html(rows: list[dict[str, Any]], *, floatfmt: str = "{:.4g}") -> str:
    """A list of dicts (one per row, same keys) as an HTML table."""
    if not rows:
        return "<p><em>(empty)</em></p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return html.escape(floatfmt.format(v) if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


@cache
def circuitsvis_script() -> str:
    """The circuitsvis browser bundle as one inline ``<script>`` that defines ``CircuitsVis``."""
    import circuitsvis

    bundle = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    js = bundle.read_text(encoding="utf-8").replace("</script>", "")
    return f"<script>{js}</script>"


class CircuitsVisPage:
    """Numbered circuitsvis elements for one page; the page embeds ``circuitsvis_script()`` once.

    ``element("AttentionPatterns", tokens=..., attention=...)`` returns a ``div`` and the script
    that renders into it; ids are deterministic (``cv-1``, ``cv-2`` ...) so reports reproduce.
    """

    def __init__(self) -> None:
        self.count = 0

    def element(self, component: str, **props: Any) -> str:
        from circuitsvis.utils.convert_props import convert_props

        self.count += 1
        uid = f"cv-{self.count}"
        return (
            f'<div id="{uid}" class="cv" data-component="{html.escape(component)}"></div>'
            f'<script>CircuitsVis.render("{uid}", CircuitsVis.{component}, '
            f"{convert_props(props)});</script>"
        )
