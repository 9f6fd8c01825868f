"""A sweep's jobs as a graph: each declared need resolves to one exact job, checked up front.

An analysis kind declares the kinds it reads (``Analysis.needs``: ``joint`` and ``examples`` read
``classify``'s table, ``probes`` reads the ``cache`` job's store). A need resolves to the one job
of that kind on the same pair and dataset; when there are several, the job picks one by name
(``use = {classify = "NAME"}``, the other job having ``name = "NAME"``). Missing needs,
ambiguous ones and cycles are refused before anything runs, and jobs run in dependency order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lab.errors import LabError

__all__ = ["label", "resolve_needs", "topological_order"]


def label(job: Any) -> str:
    """``analyses[3] (classify) on pair 'm', dataset 'd'``: a job as the config names it."""
    where = f"analyses[{job.index}] ({job.kind})"
    if job.name:
        where += f" named {job.name!r}"
    if job.pair is not None:
        where += f" on pair {job.pair!r}"
    if job.dataset is not None:
        where += f", dataset {job.dataset!r}"
    return where


def _toml(kind: str, job: Any) -> str:
    keys = [f'kind = "{kind}"']
    keys += [f'{k} = "{v}"' for k in ("pair", "dataset") if (v := getattr(job, k)) is not None]
    return "[[analyses]] " + ", ".join(keys)


def _resolve(job: Any, need: str, jobs: Sequence[Any]) -> int:
    same = [
        o.index for o in jobs if o.kind == need and o.pair == job.pair and o.dataset == job.dataset
    ]
    wanted = (job.use or {}).get(need)
    if wanted is not None:
        named = [i for i in same if jobs[i].name == wanted]
        if len(named) != 1:
            names = sorted(str(jobs[i].name) for i in same)
            raise LabError(
                f"{label(job)} uses {need} = {wanted!r}, but the {need!r} analyses of the same "
                f"pair and dataset are named {', '.join(names) or '(none)'}; "
                f'give one of them name = "{wanted}".'
            )
        return named[0]
    if not same:
        raise LabError(
            f"{label(job)} needs a {need!r} analysis of the same pair and dataset, and the "
            f"config has none; add {_toml(need, job)} to the TOML."
        )
    if len(same) > 1:
        which = ", ".join(label(jobs[i]) for i in same)
        raise LabError(
            f"{label(job)} needs one {need!r} analysis of the same pair and dataset, but there "
            f'are {len(same)} ({which}); give them names (name = "...") and pick one here '
            f'with use = {{{need} = "NAME"}}.'
        )
    return same[0]


def resolve_needs(jobs: Sequence[Any], needs: Sequence[tuple[str, ...]]) -> list[dict[str, int]]:
    """For each job (``jobs[i].index == i``), its needed kinds -> the index of the job that
    provides each; refuses missing and ambiguous needs and unused ``use`` entries."""
    out = []
    for job, kinds in zip(jobs, needs, strict=True):
        extra = sorted(set(job.use or {}) - set(kinds))
        if extra:
            raise LabError(
                f"{label(job)} has use = {{{extra[0]} = ...}}, but a {job.kind!r} analysis "
                f"reads no {extra[0]!r} result; it reads: {', '.join(kinds) or 'nothing'}."
            )
        out.append({kind: _resolve(job, kind, jobs) for kind in kinds})
    return out


def topological_order(jobs: Sequence[Any], deps: Sequence[dict[str, int]]) -> list[int]:
    """Job indices with every job after the jobs it needs (config order otherwise); refuses a
    cycle, naming the jobs on it."""
    state: dict[int, str] = {}
    order: list[int] = []

    def visit(i: int, path: list[int]) -> None:
        if state.get(i) == "done":
            return
        if state.get(i) == "active":
            cycle = [*path[path.index(i) :], i]
            raise LabError(
                "The analyses' needs form a cycle: "
                + " -> ".join(label(jobs[k]) for k in cycle)
                + "; remove one of these needs."
            )
        state[i] = "active"
        for j in deps[i].values():
            visit(j, [*path, i])
        state[i] = "done"
        order.append(i)

    for i in range(len(jobs)):
        visit(i, [])
    return order
