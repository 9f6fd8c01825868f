"""The organism sweep on a local Ray cluster of 2 workers and on submitit's local executor gives
the local executor's tables; a worker killed mid-job is retried; bad executors are refused."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from lab.errors import LabError
from lab.sweeps import sweep
from lab.sweeps.analyses import registry
from lab.sweeps.analyses.causal import ClassifyParams
from lab.sweeps.config import Analysis
from lab.sweeps.driver import driver_lock
from lab.sweeps.executors import RaySpec, open_backend

KINDS = ("weights", "classify", "joint")


def _config(out, executor="local", **options):
    """A small organism sweep: weights, classify on 16 prompts, and joint (which reads it)."""
    return {
        "run": {"out": str(out), "seed": 0, "device": "cpu", "executor": executor, **options},
        "pairs": {"organism": {"base": "organism", "tuned": "organism"}},
        "datasets": {"world": {"source": "organism", "n": 32}},
        "analyses": [
            {"kind": "weights", "pair": "organism"},
            {"kind": "classify", "pair": "organism", "dataset": "world", "n_prompts": 16,
             "n_chunks": 2},
            {"kind": "joint", "pair": "organism", "dataset": "world", "n_prompts": 8, "top": 2},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return sweep.run(_config(tmp_path_factory.mktemp("local")))


def _same_tables(a, b):
    for kind in KINDS:
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / f"{kind}.parquet"), pd.read_parquet(b / f"{kind}.parquet")
        )


def _kill_first_worker(marker: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first process under this one whose command line holds ``marker``."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            try:
                if marker in " ".join(proc.cmdline()):
                    proc.kill()
                    killed.append(proc.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def _run_killing(config, marker):
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_first_worker, args=(marker, killed, stop))
    watcher.start()
    try:
        out = sweep.run(config)
    finally:
        stop.set()
        watcher.join()
    assert killed, f"no {marker} worker was seen to kill"
    return out


def test_ray_two_workers_equal_local(local, tmp_path, capsys):
    config = _config(tmp_path / "ray", "ray", ray={"workers": 2})
    config["analyses"][1]["resources"] = {"num_cpus": 2}  # classify takes the whole cluster
    out = sweep.run(config)
    _same_tables(local, out)  # the job ids too: where a job runs is not part of its id


def test_ray_worker_killed_mid_job_is_retried(local, tmp_path, capsys):
    config = _config(tmp_path / "ray", "ray", ray={"workers": 2})
    out = _run_killing(config, "ray::work")  # a Ray worker's title while it runs a job
    _same_tables(local, out)
    assert "retrying (1/2)" in capsys.readouterr().err


def test_submitit_local_executor_equal_local(local, tmp_path):
    config = _config(tmp_path / "slurm", "slurm", slurm={"cluster": "local", "poll": 0.2})
    config["analyses"][1]["resources"] = {"num_cpus": 2, "memory": 2**30}
    out = sweep.run(config)
    _same_tables(local, out)
    assert any((out / "slurm").glob("*_result.pkl"))  # the jobs ran through submitit


def test_submitit_job_killed_is_retried(local, tmp_path, capsys):
    config = _config(tmp_path / "slurm", "slurm", slurm={"cluster": "local", "poll": 0.2})
    out = _run_killing(config, "submitit.core._submit")
    _same_tables(local, out)
    err = capsys.readouterr().err
    assert "failed, retrying (1/2)" in err


@pytest.mark.parametrize(
    "options",
    [{"slurm": {"cluster": "local", "poll": 0.2}}, {"ray": {"workers": 2}}],
    ids=["submitit", "ray"],
)
def test_a_killed_driver_rerun_runs_only_the_unfinished_jobs(local, tmp_path, capsys, options):
    name = next(iter(options))
    config = _config(tmp_path / name, name, **options)
    (tmp_path / "c.json").write_text(json.dumps(config))
    code = "import json, sys; from lab.sweeps import sweep; sweep.run(json.load(open(sys.argv[1])))"
    driver = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "c.json")],
        start_new_session=True,  # its own process group: the driver and its workers
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = tmp_path / name / "results"
    deadline = time.time() + 120
    while not any(results.glob("*/*.parquet")) and time.time() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    kept = {p: p.stat().st_mtime_ns for p in results.glob("*/*.parquet")}
    assert 0 < len(kept) < len(KINDS)  # killed half-way
    out = sweep.run(config)
    assert f"of driver pid {driver.pid}, which no longer runs" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished jobs were not redone
    _same_tables(local, out)


def test_the_executor_option_replaces_the_config(local, tmp_path):
    config = sweep.load_config(_config(tmp_path / "run", "ray"), executor="local")
    assert config.executor == "local"
    _same_tables(local, sweep.run(config))


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"executor": "dask"}, r"unknown executor 'dask'\. Valid: local, ray, slurm\."),
        ({"ray": {"adress": "auto"}}, r"Unknown keys in \[run\.ray\]: adress\. Valid: address"),
        ({"slurm": {"gpus": "2"}}, r"\[run\.slurm\]: gpus must be an integer"),
        ({"max_retries": -1}, r"max_retries must be 0 or more"),
        ({"gpus": 1}, r"analyses\[1\] \(classify\): resources: unknown 'gpus'\. Valid: memory, "),
    ],
)
def test_bad_executor_settings_are_refused(tmp_path, run, message):
    config = _config(tmp_path / "run")
    if "gpus" in run:
        config["analyses"][1]["resources"] = run
    else:
        config["run"].update(run)
    with pytest.raises(LabError, match=message):
        sweep.load_config(config)
    with pytest.raises(LabError, match=r"^--executor: unknown executor 'dask'\. Valid: local, ray"):
        sweep.load_config(_config(tmp_path / "run"), executor="dask")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(temp: str) -> tuple[subprocess.Popen, str] | None:
    """``ray start --head --block`` with its client server on a free port of 127.0.0.1 (Ray
    binds the loopback address when clusters are off, as on a laptop): the process and its
    ray:// address once the client server answers, or None if the head gave up starting."""
    port = _free_port()
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--port=0", f"--ray-client-server-port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        # no token authentication (a cluster that has it wants RAY_AUTH_MODE=token on drivers)
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the head and all it starts
    )  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and head.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return head, f"ray://127.0.0.1:{port}"
        time.sleep(0.5)
    _stop_head(head, set())
    return None


def _stop_head(head: subprocess.Popen, started: set[int]) -> None:
    with contextlib.suppress(psutil.Error):
        started |= {p.pid for p in psutil.Process(head.pid).children(recursive=True)}
    head.terminate()  # ray start --block stops the processes it started
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    with contextlib.suppress(ProcessLookupError):  # its process group, if any is left in it
        os.killpg(head.pid, signal.SIGKILL)
    for pid in started:  # any that left the group, by their ids
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray cluster started apart from the sweep, as `ray start --head` does, reached at
    its ray:// client address; torn down, with every process it started, whatever the test did.
    Started again up to 3 times: a raylet gives up when its agents take over 15 s to start, as
    they can on a loaded machine."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit
    head, started = None, set()
    try:
        for _ in range(3):
            head = _start_head(temp)
            if head is not None:
                break
        if head is None:
            pytest.fail("the Ray head node did not start (3 tries)")
        started = {p.pid for p in psutil.Process(head[0].pid).children(recursive=True)}
        yield head[1]
    finally:
        if head is not None:
            _stop_head(head[0], started)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_ray_client_address_runs_the_sweep_on_that_cluster(local, tmp_path, ray_head):
    ray = {"address": ray_head, "connect_timeout": 180.0}  # a loaded machine connects slowly
    config = _config(tmp_path / "client", "ray", ray=ray)
    out = sweep.run(config)
    _same_tables(local, out)


def test_a_ray_client_address_without_grpcio_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)
    config = sweep.load_config(
        _config(tmp_path / "run", "ray", ray={"address": "ray://127.0.0.1:1"})
    )
    with pytest.raises(LabError, match=r"needs grpc: pip install 'steerlab\[ray\]'") as e:
        open_backend(config)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("name", "extra"), [("ray", "ray"), ("slurm", "slurm")])
def test_a_missing_extra_says_what_to_install(tmp_path, monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, {"ray": "ray", "slurm": "submitit"}[name], None)
    config = sweep.load_config(_config(tmp_path / "run", name))
    with pytest.raises(LabError, match=rf"pip install 'steerlab\[{extra}\]'") as e:
        open_backend(config)
    assert "\n" not in str(e.value)


def test_a_failing_job_is_retried_then_fails_the_sweep_keeping_the_rest(
    tmp_path, monkeypatch, capsys
):
    calls = []

    def crash(ctx, params):
        calls.append(1)
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(registry.ANALYSES, "classify", Analysis(ClassifyParams, crash))
    with pytest.raises(LabError, match=r"The sweep failed: job organism-world-\w+ \(analyses\[1\]"):
        sweep.run(_config(tmp_path / "run"))
    err = capsys.readouterr().err
    assert len(calls) == 3 and "retrying (2/2): RuntimeError: boom\n" in err
    assert "giving up: RuntimeError: boom\n" in err
    assert (tmp_path / "run" / "weights.parquet").exists()  # the finished job is kept
    assert not (tmp_path / "run" / "joint.parquet").exists()  # it reads the failed job


def test_a_second_driver_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    with driver_lock(out), pytest.raises(LabError, match=r"Another driver \(pid \d+ on"):
        sweep.run(_config(out))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 0})
    )
    sweep.run(_config(out))
    assert f"taking over the stale lock {out / '.lock'} of driver pid {dead.pid}" in (
        capsys.readouterr().err
    )
    assert not (out / ".lock").exists()


def test_an_unreachable_ray_address_fails_within_its_timeout(tmp_path):
    start = time.time()
    with pytest.raises(LabError, match=r"Could not reach the Ray cluster at '127\.0\.0\.1:1'"):
        open_backend(
            sweep.load_config(
                _config(tmp_path / "run", "ray", ray={"address": "127.0.0.1:1",
                                                      "connect_timeout": 3.0})
            )
        )  # fmt: skip
    assert time.time() - start < 30
    assert RaySpec().connect_timeout == 60.0
