"""Where a sweep's jobs run: in this process, as Ray tasks, or as Slurm jobs through submitit.

Each executor is a registry entry (``EXECUTORS``): the dataclass of its ``[run.<name>]`` table
(checked like every other table) and a function that opens a ``Backend`` for a config. A backend
only starts jobs and reports which finished; ``lab.sweeps.driver`` decides what is ready, retries
and keeps the tables. A job's result is written by the job itself (``runner.run_job``), so the
run folder and the checkpoints must be on a filesystem the workers share with the driver.

Ray and submitit are optional extras (``pip install 'steerlab[ray]'`` / ``'steerlab[slurm]'``):
each is imported when its executor opens, and a missing one is a one-line ``LabError``; so is a
``ray://`` address without Ray's client (grpcio, in the same extra).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lab.errors import LabError
from lab.sweeps.analyses.registry import build_dataset
from lab.sweeps.config import Job, SweepConfig, digest
from lab.sweeps.context import SweepContext
from lab.sweeps.runner import run_job
from lab.sweeps.schema import check_table

__all__ = [
    "EXECUTORS",
    "RESOURCES",
    "Backend",
    "Executor",
    "Finished",
    "LocalSpec",
    "RaySpec",
    "SlurmSpec",
    "check_options",
    "open_backend",
    "work",
]


@dataclass(frozen=True)
class Finished:
    """A job that ended: its id and, when it failed, the exception or the error text."""

    job_id: str
    error: BaseException | str | None = None


class Backend(Protocol):
    """Starts jobs and reports the ones that ended."""

    slots: int | None  # jobs in flight at most (None: as many as are ready)

    def submit(self, config: SweepConfig, jobs: list[Job]) -> None: ...
    def wait(self) -> list[Finished]: ...  # blocks until at least one submitted job ended
    def close(self) -> None: ...


RESOURCES = ("memory", "num_cpus", "num_gpus")  # what a job may ask for ([[analyses]] resources)

_WORKER: dict[str, SweepContext] = {}  # a worker process's loaded pairs, for its next job


def work(config: SweepConfig, job_id: str) -> str:
    """Run one job in a worker process (its pairs and datasets stay loaded for the next job of
    the same sweep) and return its id."""
    key = digest({"out": str(config.out), "raw": config.raw})
    if key not in _WORKER:
        _WORKER.clear()
        _WORKER[key] = SweepContext(config, build_dataset)
    run_job(_WORKER[key], config.job(job_id))
    return job_id


def _outcome(job_id: str, result: Callable[[], Any]) -> Finished:
    """How a job ended, by fetching its ``result``: a Ray task's error holds the job's own
    (``cause``); a dead worker or a killed Slurm job raises its own error."""
    try:
        result()
    except Exception as e:
        return Finished(job_id, getattr(e, "cause", None) or e)
    return Finished(job_id)


def _extra(module: str, extra: str) -> Any:
    # An optional dependency, imported when its executor opens.
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise LabError(
            f"The {extra!r} executor needs {module}: pip install 'steerlab[{extra}]'."
        ) from e


# ---- local: today's behaviour, one job after another in this process --------------------------
@dataclass(frozen=True)
class LocalSpec:
    """``[run.local]``: no options."""


class _Local:
    slots = 1

    def __init__(self, config: SweepConfig, spec: LocalSpec):
        self.ctx = SweepContext(config, build_dataset)  # pairs load once per sweep
        self.queue: list[Job] = []

    def submit(self, config: SweepConfig, jobs: list[Job]) -> None:
        self.queue += jobs

    def wait(self) -> list[Finished]:
        job = self.queue.pop(0)
        try:
            run_job(self.ctx.for_job(job), job)
        except Exception as e:  # reported (and retried) by the driver
            return [Finished(job.id, e)]
        return [Finished(job.id)]

    def close(self) -> None:
        self.queue.clear()


# ---- ray: each ready job a Ray task -----------------------------------------------------------
@dataclass(frozen=True)
class RaySpec:
    """``[run.ray]``: the cluster and what each job asks of it."""

    address: str | None = None  # "auto", "ray://host:10001", or None: start a local cluster
    workers: int | None = None  # CPUs of a started local cluster (None: this machine's)
    num_cpus: float = 1.0  # per job
    num_gpus: float = 0.0  # per job
    memory: int | None = None  # bytes per job (None: no reservation)
    connect_timeout: float = 60.0  # seconds to reach the cluster before giving up


class _Ray:
    slots = None  # the cluster's resources decide

    def __init__(self, config: SweepConfig, spec: RaySpec):
        self.ray = ray = _extra("ray", "ray")
        if (spec.address or "").startswith("ray://"):  # Ray's client, its extra's grpcio
            _extra("grpc", "ray")
        self.started = not ray.is_initialized()
        if self.started:
            start = {
                "include_dashboard": False,
                "log_to_driver": False,  # the driver's one progress bar, not the jobs' own
                "logging_level": "ERROR",
            }
            if spec.address is None:  # not in a thread: a local cluster dies with its thread
                ray.init(num_cpus=spec.workers, **start)
            else:
                _with_timeout(
                    lambda: ray.init(address=spec.address, **start),
                    spec.connect_timeout,
                    f"Could not reach the Ray cluster at {spec.address!r}",
                )
        self.resources = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
        if spec.memory:
            self.resources["memory"] = spec.memory
        self.task = ray.remote(work)
        self.refs: dict[Any, str] = {}
        self.config_ref: Any = None

    def submit(self, config: SweepConfig, jobs: list[Job]) -> None:
        if self.config_ref is None:
            self.config_ref = self.ray.put(config)
        for job in jobs:
            asks = {**self.resources, **job.resources, "max_retries": 0}  # retries: the driver's
            task = self.task.options(**asks)
            self.refs[task.remote(self.config_ref, job.id)] = job.id

    def wait(self) -> list[Finished]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        return [_outcome(self.refs.pop(ref), lambda ref=ref: self.ray.get(ref)) for ref in ready]

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            self.ray.shutdown()


def _with_timeout(call: Callable[[], Any], seconds: float, what: str) -> Any:
    """``call()`` in a thread; a LabError after ``seconds`` (the thread is left to die)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except Exception as e:
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise LabError(f"{what}: no answer within {seconds:g} s.")
    if "error" in box:
        first = str(box["error"]).strip().splitlines()
        raise LabError(f"{what}: {first[0] if first else type(box['error']).__name__}")
    return box.get("value")


# ---- slurm: each ready job a Slurm job (an array when several are ready), through submitit ----
@dataclass(frozen=True)
class SlurmSpec:
    """``[run.slurm]``: the partition and what each job asks of it."""

    partition: str | None = None  # Slurm partition (None: the cluster's default)
    time: int = 60  # minutes per job
    gpus: int = 0  # GPUs per job
    cpus: int = 1  # CPUs per job
    mem_gb: float | None = None  # memory per job (None: the partition's default)
    array_parallelism: int = 4  # jobs running at once
    cluster: str | None = None  # "slurm", "local" (no sbatch: subprocesses), None: auto-detect
    folder: str = "slurm"  # submitit's logs and pickles, inside the run folder
    poll: float = 1.0  # seconds between checks of the jobs' states
    extra: dict[str, Any] = field(default_factory=dict)  # more submitit slurm_* parameters


class _Slurm:
    def __init__(self, config: SweepConfig, spec: SlurmSpec):
        submitit = _extra("submitit", "slurm")
        self.spec, self.slots = spec, spec.array_parallelism
        self.executor = submitit.AutoExecutor(folder=config.out / spec.folder, cluster=spec.cluster)
        self.params: dict[str, Any] = {
            "timeout_min": spec.time,
            "gpus_per_node": spec.gpus,
            "cpus_per_task": spec.cpus,
            "slurm_array_parallelism": spec.array_parallelism,
            **{f"slurm_{k}": v for k, v in spec.extra.items()},
        }
        if spec.partition:
            self.params["slurm_partition"] = spec.partition
        if spec.mem_gb:
            self.params["mem_gb"] = spec.mem_gb
        self.jobs: dict[Any, str] = {}

    def _asks(self, job: Job) -> dict[str, Any]:
        r = job.resources
        own = {"gpus_per_node": r.get("num_gpus"), "cpus_per_task": r.get("num_cpus")}
        own["mem_gb"] = r["memory"] / 2**30 if r.get("memory") else None
        own = {k: int(v) if k != "mem_gb" else v for k, v in own.items() if v is not None}
        return {**self.params, **own}

    def submit(self, config: SweepConfig, jobs: list[Job]) -> None:
        groups: dict[str, list[Job]] = {}
        for job in jobs:  # one array per set of resources among the jobs ready together
            groups.setdefault(digest(self._asks(job)), []).append(job)
        for group in groups.values():
            self.executor.update_parameters(**self._asks(group[0]))
            with self.executor.batch():
                handles = [self.executor.submit(work, config, job.id) for job in group]
            self.jobs.update({h: job.id for h, job in zip(handles, group, strict=True)})

    def wait(self) -> list[Finished]:
        while True:
            ended = [h for h in self.jobs if h.done()]
            if ended:
                break
            time.sleep(self.spec.poll)
        return [_outcome(self.jobs.pop(handle), handle.result) for handle in ended]

    def close(self) -> None:
        for handle in self.jobs:
            handle.cancel(check=False)
        self.jobs.clear()


# ---- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Executor:
    """One way to run jobs: its ``[run.<name>]`` table's class and its backend."""

    spec: type  # a frozen dataclass of the table's keys
    open: Callable[[SweepConfig, Any], Backend]


EXECUTORS: dict[str, Executor] = {
    "local": Executor(LocalSpec, _Local),
    "ray": Executor(RaySpec, _Ray),
    "slurm": Executor(SlurmSpec, _Slurm),
}


def check_options(name: str, table: Any) -> None:
    """Refuse a ``[run.<name>]`` table with unknown keys or values of the wrong type."""
    check_table(f"[run.{name}]", table, EXECUTORS[name].spec)


def open_backend(config: SweepConfig) -> Backend:
    """The backend of ``config.executor``, with its ``[run.<executor>]`` options."""
    executor = EXECUTORS[config.executor]
    table = config.raw.get("run", {}).get(config.executor, {})
    check_options(config.executor, table)
    return executor.open(config, executor.spec(**table))
