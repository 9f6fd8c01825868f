"""Sweeps: a TOML config expands into a graph of jobs, each writing one tidy table.

A config names pairs, datasets and analyses::

    [run]
    out = "runs/organism"            # where results go (relative to the config file)

    [pairs.organism]
    base = "organism"
    tuned = "organism"

    [datasets.world]
    source = "organism"              # a key of lab.sweeps.analyses.DATASET_SOURCES
    n = 128

    [[analyses]]
    kind = "probes"                  # a key of lab.sweeps.analyses.ANALYSES
    pair = "organism"
    dataset = "world"
    ...                              # the analysis's own parameters

Each analysis kind is a small strategy (``lab.sweeps.config.Analysis``) registered in
``lab.sweeps.analyses.ANALYSES``: its parameters (a frozen dataclass whose annotations type-check
every TOML key before anything loads), the kinds whose results it reads (``lab.sweeps.graph``
resolves each to one exact job), and a function from a ``SweepContext`` and those parameters to a
tidy ``DataFrame``. A job's id hashes everything its result depends on (``lab.sweeps.identity``),
so results of another config are never taken for this one's. ``lab.sweeps.driver`` runs the graph
on an executor (``[run] executor = "local" | "ray" | "slurm"``, ``lab.sweeps.executors``) and
``lab.sweeps.runner`` keeps the top-level tables current; this module is the entry point above
them all.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from lab.errors import LabError, close_matches
from lab.runtime import resolve_dtype
from lab.sweeps.analyses.registry import ANALYSES, DATASET_SOURCES
from lab.sweeps.config import Job, JobSpec, SweepConfig
from lab.sweeps.driver import drive
from lab.sweeps.executors import EXECUTORS, RESOURCES, check_options
from lab.sweeps.graph import resolve_needs, topological_order
from lab.sweeps.identity import identify
from lab.sweeps.runner import plan_text
from lab.sweeps.schema import PairSpec, RunSpec, check_table

__all__ = ["load_config", "plan", "run"]

_TOP_KEYS = ("run", "pairs", "datasets", "analyses")
_OPT_INS = {"allow_pickle": "--allow-pickle", "trust_remote_code": "--trust-remote-code"}


def _refuse_unknown(where: str, what: str, name: Any, valid) -> None:
    if not isinstance(name, str) or name not in valid:
        raise LabError(
            f"{where}: unknown {what} {name!r}. Valid: {', '.join(sorted(valid))}."
            + close_matches(str(name), valid)
        )


def _refuse_unknown_keys(where: str, table: dict, valid) -> None:
    bad = sorted(set(table) - set(valid))
    if bad:
        raise LabError(
            f"{where}: unknown {bad[0]!r}. Valid: {', '.join(sorted(valid))}."
            + close_matches(bad[0], valid)
        )


def _check_pairs(pairs: Any, allow: dict[str, bool]) -> None:
    check_table("[pairs]", pairs, dict)  # a table (of tables)
    for name, spec in pairs.items():
        check_table(f"[pairs.{name}]", spec, PairSpec)
        if spec.get("tuned") is None and spec["base"] != "organism":
            raise LabError(f"[pairs.{name}] lacks the key 'tuned'; add tuned = ... to it.")
        for key, flag in _OPT_INS.items():
            if spec.get(key) and not allow[key]:
                raise LabError(
                    f"[pairs.{name}] sets {key} = true, and a config cannot opt in by itself: "
                    f"run lab sweep with {flag} as well (or remove the key)."
                )


def _check_datasets(datasets: Any) -> None:
    check_table("[datasets]", datasets, dict)
    for name, spec in datasets.items():
        check_table(f"[datasets.{name}]", spec, dict)
        _refuse_unknown(f"[datasets.{name}]", "source", spec.get("source"), DATASET_SOURCES)
        check_table(f"[datasets.{name}]", spec, DATASET_SOURCES[spec["source"]].params)


def _job(i: int, spec: Any, pairs, datasets) -> Job:
    where = f"analyses[{i}]"
    check_table(where, spec, dict)
    _refuse_unknown(where, "kind", spec.get("kind"), ANALYSES)
    kind = spec["kind"]
    analysis, common = ANALYSES[kind], [f.name for f in dataclasses.fields(JobSpec)]
    where = f"{where} ({kind})"
    check_table(where, {k: v for k, v in spec.items() if k in common}, JobSpec)
    own = {k: v for k, v in spec.items() if k not in common}
    check_table(where, own, analysis.params, extra=tuple(common))
    pair, dataset = spec.get("pair"), spec.get("dataset")
    if analysis.needs_pair and pair not in pairs:
        raise LabError(f"{where} names pair {pair!r}; defined: {sorted(pairs)}.")
    if dataset is not None and dataset not in datasets:
        raise LabError(f"{where} names dataset {dataset!r}; defined: {sorted(datasets)}.")
    try:
        params = analysis.params(**own)
    except (TypeError, ValueError) as e:
        raise LabError(f"{where}: {e}") from e
    asks = spec.get("resources") or {}
    _refuse_unknown_keys(f"{where}: resources", asks, RESOURCES)
    resources = {k: int(v) if k == "memory" else v for k, v in asks.items()}  # memory: bytes
    return Job(
        kind, pair, dataset, params, i, spec.get("name"), spec.get("use"), resources=resources
    )


def load_config(
    source: str | Path | dict[str, Any],
    *,
    out: str | Path | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    executor: str | None = None,
) -> SweepConfig:
    """Parse and validate a sweep config (a TOML path or a dict) into a ``SweepConfig``.

    Every table is type-checked and every need resolved before anything loads. A pair may set
    ``allow_pickle`` or ``trust_remote_code`` only when the caller allows it as well (the CLI's
    ``--allow-pickle`` and ``--trust-remote-code``): a config cannot opt in by itself.
    ``executor`` (the CLI's ``--executor``) replaces ``[run] executor``.
    """
    path = None
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise LabError(f"No sweep config at {path}; see data/sweeps/ for examples.")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise LabError(f"{path} is not valid TOML: {e}") from e
    check_table("The config", raw, dict)
    bad = sorted(set(raw) - set(_TOP_KEYS))
    if bad:
        raise LabError(
            f"Unknown top-level sections: {', '.join(bad)}. Valid: {', '.join(sorted(_TOP_KEYS))}."
            + close_matches(bad[0], _TOP_KEYS)
        )
    run_cfg = raw.get("run", {})
    check_table("[run]", run_cfg, RunSpec, extra=tuple(EXECUTORS))
    where = "--executor" if executor else "[run]"
    executor = executor or run_cfg.get("executor", RunSpec.executor)
    _refuse_unknown(where, "executor", executor, EXECUTORS)
    for name in EXECUTORS:
        if name in run_cfg:
            check_options(name, run_cfg[name])
    if run_cfg.get("max_retries", 0) < 0:
        raise LabError(f"[run] max_retries must be 0 or more, got {run_cfg['max_retries']}.")
    pairs, datasets = raw.get("pairs", {}), raw.get("datasets", {})
    _check_pairs(pairs, {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code})
    _check_datasets(datasets)
    for dtype in [run_cfg.get("dtype"), *(p.get("dtype") for p in pairs.values())]:
        resolve_dtype(dtype)
    specs = raw.get("analyses", [])
    if not isinstance(specs, list):
        raise LabError("analyses must be a list of tables: write each one as [[analyses]].")
    jobs = [_job(i, spec, pairs, datasets) for i, spec in enumerate(specs)]
    if not jobs:
        raise LabError("The config has no [[analyses]]; add at least one.")
    deps = resolve_needs(jobs, [ANALYSES[j.kind].needs(j.params) for j in jobs])
    root = path.parent if path else Path.cwd()
    config = SweepConfig(
        path=path,
        out=Path(out) if out else root / run_cfg.get("out", RunSpec.out),
        seed=run_cfg.get("seed", RunSpec.seed),
        device=run_cfg.get("device"),
        dtype=run_cfg.get("dtype"),
        pairs=pairs,
        datasets=datasets,
        jobs=jobs,
        raw=raw,
        order=topological_order(jobs, deps),
        executor=executor,
        max_retries=run_cfg.get("max_retries", RunSpec.max_retries),
    )
    return dataclasses.replace(config, jobs=identify(config, deps, DATASET_SOURCES))


def run(
    source: str | Path | dict | SweepConfig,
    *,
    out: str | Path | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    executor: str | None = None,
) -> Path:
    """Run every job not yet done, each as soon as the jobs it reads are done, on the config's
    executor (or ``executor``); return the output folder."""
    if not isinstance(source, SweepConfig):
        source = load_config(
            source,
            out=out,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            executor=executor,
        )
    elif executor is not None:
        _refuse_unknown("--executor", "executor", executor, EXECUTORS)
        source = dataclasses.replace(source, executor=executor)
    return drive(source)


def plan(source: str | Path | dict | SweepConfig, **load: Any) -> str:
    """The job graph in run order, each job done, to do, or stale (``lab sweep --plan``)."""
    return plan_text(source if isinstance(source, SweepConfig) else load_config(source, **load))
