"""The sweep driver: schedules a config's job graph on its executor, one driver per run folder.

Each job is submitted as soon as the jobs it reads are done (never in config order), with at
most the backend's ``slots`` in flight. One progress bar counts jobs. A failed job is reported
with its id and its one-line error and submitted again, up to ``[run] max_retries`` times (a
``LabError`` is a refusal, not bad luck, and is never retried); then no new job starts, the
running ones finish, and the sweep fails keeping every finished job, so a rerun does the rest.

A driver holds ``<out>/.lock`` (its host and pid) while it runs: a second driver on the same
folder is refused, and the lock of a driver that no longer runs is taken over, with a message.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from lab.errors import LabError
from lab.sweeps.config import Job, SweepConfig
from lab.sweeps.executors import Backend, open_backend
from lab.sweeps.graph import label
from lab.sweeps.runner import start_run, write_table

__all__ = ["drive", "driver_lock", "one_line"]


def one_line(error: BaseException | str) -> str:
    """An error as one line: a ``LabError``'s message, else ``Type: first line``."""
    if isinstance(error, str):
        lines = [ln for ln in error.strip().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "failed"  # a traceback's last line says what
    lines = str(error).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if isinstance(error, LabError):
        return first
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def driver_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while the body runs; refuse when a live driver holds it."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text())
            except (OSError, ValueError):  # being written, or half-written by a killed driver
                held = {}
            host, pid = held.get("host"), held.get("pid")
            if host is not None and (host != mine["host"] or _alive(int(pid))):
                raise LabError(
                    f"Another driver (pid {pid} on {host}) is running the sweep in {out}; "
                    f"wait for it to end (or delete {lock} if it no longer runs)."
                ) from None
            if host is None and time.time() - lock.stat().st_mtime < 5:
                time.sleep(0.2)  # give its writer a moment
                continue
            print(
                f"taking over the stale lock {lock} of driver pid {pid}, which no longer runs",
                file=sys.stderr,
            )
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _schedule(config: SweepConfig, todo: list[Job], backend: Backend) -> None:
    pending = {j.id: j for j in todo}  # in dependency order
    done = {j.id for j in config.jobs if j.id not in pending}
    running: set[str] = set()
    tries: Counter[str] = Counter()
    failed: list[tuple[Job, BaseException | str]] = []
    bar = tqdm(total=len(todo), desc="sweep", unit="job", disable=not todo)
    try:
        while True:
            if not failed:
                ready = [
                    j
                    for j in pending.values()
                    if j.id not in running and all(n in done for n in j.needs.values())
                ]
                if backend.slots is not None:
                    ready = ready[: max(0, backend.slots - len(running))]
                if ready:
                    backend.submit(config, ready)
                    running |= {j.id for j in ready}
            if not running:
                break
            for end in backend.wait():
                running.discard(end.job_id)
                job = pending[end.job_id]
                if end.error is None:
                    done.add(job.id)
                    del pending[job.id]
                    write_table(config, job.kind)
                    bar.update(1)
                    continue
                tries[job.id] += 1
                again = tries[job.id] <= config.max_retries and not isinstance(end.error, LabError)
                what = f"retrying ({tries[job.id]}/{config.max_retries})" if again else "giving up"
                tqdm.write(
                    f"job {job.id} ({label(job)}) failed, {what}: {one_line(end.error)}",
                    file=sys.stderr,
                )
                if not again:
                    failed.append((job, end.error))
                    del pending[job.id]
    finally:
        bar.close()
    if failed:
        job, error = failed[0]
        more = f" (and {len(failed) - 1} more, above)" if len(failed) > 1 else ""
        raise LabError(
            f"The sweep failed: job {job.id} ({label(job)}) failed: {one_line(error)}{more}. "
            f"{len(done)} finished jobs are kept in {config.out}; run the sweep again to do "
            f"the rest."
        ) from (error if isinstance(error, BaseException) else None)


def drive(config: SweepConfig) -> Path:
    """Run every job of ``config`` not yet done on its executor; return the output folder."""
    with driver_lock(config.out):
        todo = start_run(config)
        if not todo:
            return config.out
        backend = open_backend(config)
        try:
            _schedule(config, todo, backend)
        finally:
            backend.close()
    return config.out
