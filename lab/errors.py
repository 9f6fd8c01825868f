"""The lab's error type: every refusal says what is wrong and how to fix it.

The CLI prints a ``LabError`` as one line (no traceback unless ``--debug``); anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["LabError", "close_matches"]


class LabError(ValueError):
    """A clear, user-facing error: the message names the problem and the fix."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """A short ``did you mean`` phrase listing the candidates closest to ``name``."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
