"""Sweep config tables checked against dataclass annotations, before anything loads.

One routine (``check_table``) validates every table of a sweep config, ``[run]``, each
``[pairs.NAME]``, each ``[datasets.NAME]`` and each ``[[analyses]]``, against a frozen dataclass:
unknown keys are refused by name, required keys must be present, and every value must fit its
field's annotation (``int``, ``float``, ``bool``, ``str``, ``list[...]``, ``dict[...]``, unions).
TOML's ``true`` is not an integer, ``4.5`` is not an integer, ``"belief"`` is not a list.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError, close_matches

__all__ = ["PairSpec", "RunSpec", "check_table", "describe", "fits"]


@dataclass(frozen=True)
class RunSpec:
    """The ``[run]`` table."""

    out: str = "runs/sweep"  # output folder, relative to the config file
    seed: int = 0  # base seed for every job
    device: str | None = None  # device for the models (None: CUDA when available)
    dtype: str | None = None  # model dtype name (None: float32)
    executor: str = "local"  # where jobs run: a key of lab.sweeps.executors.EXECUTORS
    max_retries: int = 2  # times a failed job is submitted again before the sweep fails
    # plus one optional table per executor, [run.ray] or [run.slurm] (lab.sweeps.executors)


@dataclass(frozen=True)
class PairSpec:
    """A ``[pairs.NAME]`` table: ``lab.load_pair``'s arguments."""

    base: str  # base checkpoint: a folder, a hub id, or 'organism'
    tuned: str | None = None  # tuned checkpoint (None only for base = 'organism')
    compat: bool = False  # allow pairs that differ in processing details (lab.load_pair)
    allow_pickle: bool = False  # load pickle weights; needs --allow-pickle on the CLI as well
    trust_remote_code: bool = False  # run the checkpoint's code; needs --trust-remote-code too
    device: str | None = None  # this pair's device (None: the [run] device)
    dtype: str | None = None  # this pair's dtype (None: the [run] dtype)
    device_map: str | dict[str, Any] | None = None  # spread over GPUs (e.g. 'auto')


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as TOML or a dict config gives it) fits the annotation ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            fits(k, args[0]) and fits(v, args[1]) for k, v in value.items()
        )
    if tp in (int, float) and isinstance(value, bool):
        return False
    if tp is float:
        return isinstance(value, int | float)
    return isinstance(value, tp)


def describe(tp: Any) -> str:
    """``tp`` in words: 'an integer', 'a list of strings', 'a string (or left out)'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        words = " or ".join(describe(a) for a in real)
        return words + (" (or left out)" if len(real) < len(args) else "")
    if origin in (list, tuple):
        inner = describe(args[0]).removeprefix("an ").removeprefix("a ")
        return f"a list of {inner}s" if not inner.endswith("false") else "a list of true/false"
    if origin is dict or tp is dict:
        return "a table"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return {int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "a table" if isinstance(value, dict) else type(value).__name__
    )


def check_table(where: str, table: Any, schema: type, *, extra: tuple[str, ...] = ()) -> None:
    """Refuse ``table`` unless it is a table whose keys are ``schema``'s fields (or ``extra``),
    with every required field present and every value of its field's type."""
    if not isinstance(table, dict):
        raise LabError(f"{where} must be a table of keys, got {table!r}.")
    if schema is dict:  # any keys
        return
    hints = _hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    valid = [*fields, *extra]
    bad = sorted(set(table) - set(valid))
    if bad:
        raise LabError(
            f"Unknown keys in {where}: {', '.join(bad)}. Valid: {', '.join(sorted(valid))}."
            + close_matches(bad[0], valid)
        )
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in table:
            if required:
                raise LabError(f"{where} lacks the key {name!r}; add {name} = ... to it.")
            continue
        value, tp = table[name], hints[name]
        if not fits(value, tp):
            raise LabError(
                f"{where}: {name} must be {describe(tp)}, got {value!r} ({_kind_of(value)})."
            )
