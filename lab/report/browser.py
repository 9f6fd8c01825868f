"""Open a page in headless Chromium: console errors, which elements rendered, a screenshot.

Used by the report's tests and by ``lab report --check``, which fails (``PageCheck.require_ok``)
when the page logged an error or a circuitsvis element did not render. Needs Debian's
``chromium`` package (``apt-get install chromium``); the flags are the ones that work on a
machine with no network.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

__all__ = ["PageCheck", "check_page", "find_chromium"]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Prepended to a copy of the page: records uncaught errors and console.error calls in the DOM.
_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message)));
window.addEventListener("unhandledrejection", e => window.__errors.push(String(e.reason)));
const __err = console.error.bind(console);
console.error = (...a) => { window.__errors.push(a.map(String).join(" ")); __err(...a); };
window.addEventListener("load", () => setTimeout(() => {
  const pre = document.createElement("pre"); pre.id = "__steerlab_errors";
  pre.textContent = JSON.stringify(window.__errors); document.body.appendChild(pre);
  const ok = [...document.querySelectorAll(".cv")].filter(d => d.children.length > 0);
  const rendered = document.createElement("pre"); rendered.id = "__steerlab_rendered";
  rendered.textContent = JSON.stringify(ok.map(d => d.id)); document.body.appendChild(rendered);
}, 1500));
</script>"""


@dataclass(frozen=True)
class PageCheck:
    """What a headless browser saw on a page."""

    errors: list[str]  # uncaught errors and console.error messages
    circuitsvis_ids: list[str]  # ids of all circuitsvis elements (class "cv") on the page
    rendered_ids: list[str]  # those that rendered content
    n_figures: int  # inline figures (img.figure) in the page
    screenshot: Path  # PNG of the page's first screen

    @property
    def problems(self) -> list[str]:
        """What went wrong, one phrase each; empty when the page is sound."""
        out = []
        if self.errors:
            first = " ".join(self.errors[0].split())[:160]  # one line
            out.append(f"{len(self.errors)} errors in the browser (first: {first})")
        missed = [i for i in self.circuitsvis_ids if i not in self.rendered_ids]
        if missed:
            out.append(
                f"{len(self.circuitsvis_ids) - len(missed)} of {len(self.circuitsvis_ids)} "
                f"circuitsvis elements rendered (not {', '.join(missed[:5])})"
            )
        return out

    @property
    def ok(self) -> bool:
        """No errors, and every circuitsvis element rendered."""
        return not self.problems

    def require_ok(self, page: str | Path) -> None:
        """Raise a one-line ``LabError`` naming what failed on ``page``, unless ``ok``."""
        if self.problems:
            raise LabError(
                f"The page {page} failed its browser check: {'; '.join(self.problems)}. "
                f"Look at the screenshot {self.screenshot} to see what the reader would."
            )


def find_chromium() -> str | None:
    """The Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _run(args: list[str], timeout: float) -> str:
    exe = find_chromium()
    if exe is None:
        raise LabError("No Chromium found; install it (Debian: apt-get install chromium).")
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return out.stdout


def check_page(page: str | Path, screenshot: str | Path, *, timeout: float = 90) -> PageCheck:
    """Load ``page`` headless; collect errors and rendered elements; save a screenshot."""
    page, screenshot = Path(page).resolve(), Path(screenshot).resolve()
    text = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / page.name
        probe.write_text(text.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
        dom = _run(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], timeout)
    shot = ["--virtual-time-budget=10000", "--window-size=1280,1600", f"--screenshot={screenshot}"]
    _run([*shot, page.as_uri()], timeout)

    def pre(name: str) -> list[str]:
        m = re.search(rf'<pre id="{name}">(.*?)</pre>', dom, re.S)
        if m is None:
            raise LabError(f"The page {page} did not finish loading in the browser.")
        return json.loads(html.unescape(m.group(1)))

    return PageCheck(
        errors=pre("__steerlab_errors"),
        circuitsvis_ids=re.findall(r'<div id="(cv-\d+)" class="cv"', text),
        rendered_ids=pre("__steerlab_rendered"),
        n_figures=len(re.findall(r'<img class="figure"', text)),
        screenshot=screenshot,
    )
