"""The HTML report of a run: ``build(tables_or_run_dir, out)`` writes one self-contained page.

Modules: ``page`` (build), ``sections`` (what each part shows), ``headline`` (the run's finding,
shared with ``lab demo``), ``locus`` (component swapping), ``frontier`` (the utility–KL
frontier), ``tables`` (a run folder or in-memory tables), ``html`` (figures, tables and
circuitsvis, script-safe), ``browser`` (the headless check).
"""

from lab.report.headline import Headline, headline
from lab.report.page import build
from lab.report.tables import RunDir, RunTables

__all__ = ["Headline", "RunDir", "RunTables", "build", "headline"]
