"""What the benchmark scripts share: their common options and how they print their figures.

The scripts put the repository root on ``sys.path`` and import this as ``benchmarks.common``.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["benchmark_parser", "print_figures"]


def benchmark_parser(doc: str, *, quick: str, threads: str) -> argparse.ArgumentParser:
    """A parser with the options every model benchmark takes: --quick, --json, --device, --threads.

    ``doc`` is the script's docstring (its first line describes the script); ``quick`` and
    ``threads`` are the help texts of those two options, which differ by script.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help=threads)
    return ap


def print_figures(figures: dict, as_json: bool, width: int) -> None:
    """Print ``figures`` as one JSON object, or one ``name value`` line each, names padded."""
    if as_json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:<{width}} {value}")
