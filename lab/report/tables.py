"""Where a report's results come from: a run folder, or tables held in memory.

A sweep writes one tidy table per analysis kind, ``<kind>.parquet``, next to ``config.toml`` (or
``config.json``) and ``environment.json``. ``RunDir`` reads those files on demand; ``RunTables``
holds the same results in memory, keyed as a sweep names them (``"classify"`` or
``"classify.parquet"``). The report's sections read either one through the same four methods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from lab.errors import LabError

__all__ = ["Run", "RunDir", "RunTables", "open_run"]


class Run(Protocol):
    """The results a report reads: tables (parquet), JSON records and text files by file name."""

    @property
    def where(self) -> tuple[str, str]:
        """Where the results come from: what (``"Run folder"``) and which (its path)."""
        ...

    def locate(self, name: str) -> str:
        """Where ``name`` is, for messages (a file's path, or the in-memory table's name)."""
        ...

    def has(self, name: str) -> bool: ...

    def table(self, name: str) -> pd.DataFrame: ...

    def json(self, name: str) -> Any: ...

    def text(self, name: str) -> str: ...


class RunDir:
    """A run folder's files, read on demand (JSON as dicts, parquet as DataFrames)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise LabError(f"No run folder at {self.root}; run `lab demo --out DIR` first.")

    @property
    def where(self) -> tuple[str, str]:
        return "Run folder", str(self.root)

    def locate(self, name: str) -> str:
        return str(self.root / name)

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def json(self, name: str) -> Any:
        try:
            return json.loads((self.root / name).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LabError(
                f"{self.locate(name)} is not valid UTF-8 JSON ({e}); rerun `lab sweep` or "
                "`lab demo`, which rewrite it."
            ) from None

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.root / name)

    def text(self, name: str) -> str:
        return (self.root / name).read_text(encoding="utf-8")


class RunTables:
    """Results held in memory: a dict of name -> DataFrame, as a sweep writes them (``classify``
    for ``classify.parquet``); a dict or list is a JSON record, a string a text file."""

    def __init__(self, tables: Mapping[str, Any]):
        self.items: dict[str, Any] = {}
        for name, value in tables.items():
            if not isinstance(value, pd.DataFrame | dict | list | str):
                raise LabError(
                    f"Report table {name!r} is a {type(value).__name__}; give a DataFrame (a "
                    "table), a dict or list (a JSON record) or a str (a text file)."
                )
            suffix = ".parquet" if isinstance(value, pd.DataFrame) else ""
            self.items[name if "." in name else name + suffix] = value

    @property
    def where(self) -> tuple[str, str]:
        return "Tables in memory:", ", ".join(self.items) or "none"

    def locate(self, name: str) -> str:
        return f"the in-memory table {name!r}"

    def has(self, name: str) -> bool:
        return name in self.items

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.items[name]
        if not isinstance(value, kind):
            raise LabError(
                f"The in-memory {name!r} is a {type(value).__name__}; the report reads it as "
                f"{what}."
            )
        return value

    def json(self, name: str) -> Any:
        return self._get(name, (dict, list), "a JSON record (a dict or list)")

    def table(self, name: str) -> pd.DataFrame:
        return self._get(name, pd.DataFrame, "a table (a DataFrame)")

    def text(self, name: str) -> str:
        return self._get(name, str, "text (a str)")


def open_run(source: str | Path | Mapping[str, Any]) -> RunDir | RunTables:
    """A run folder (a path) or in-memory tables (a mapping of name -> table)."""
    if isinstance(source, Mapping):
        return RunTables(source)
    return RunDir(source)
