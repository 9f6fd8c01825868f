"""Caching's options, errors, checkpoint naming and Ctrl-C: each checked before or as it bites."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab.activations.cache_checks
import lab.cli.pair
from lab.activations.cache import cache_pair
from lab.activations.store import ActivationStore
from lab.cli import run
from lab.errors import LabError
from lab.models.pair import load_pair
from lab.testing import assert_same_store, ragged_dataset


# ---- options are checked before anything is written (finding 9) -------------------------------
@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"padding_side": "middle"}, r"padding_side \(--padding-side\) must be 'left' or 'right'"),
        ({"batch_size": -3}, r"batch_size \(--batch-size\) must be a whole number >= 1; got -3"),
        ({"batch_size": 0}, r"batch_size \(--batch-size\) must be a whole number >= 1; got 0"),
        ({"batch_size": 2.5}, r"batch_size .* got 2.5"),
        ({"queue_depth": -1}, r"queue_depth must be a whole number >= 0"),
    ],
)
def test_bad_option_writes_nothing(pairs, tmp_path, option, match):
    pair, out = pairs["gpt2"], tmp_path / "s"
    with pytest.raises(LabError, match=match):
        cache_pair(pair, ragged_dataset(), "resid_post", out=out, progress=False, **option)
    assert not out.exists()
    store = cache_pair(pair, ragged_dataset(), "resid_post", out=out, progress=False)  # corrected
    assert store.complete


def test_cli_bad_option_is_refused_before_loading(pair_dirs, tmp_path, capsys, monkeypatch):
    import lab.models.pair

    def never(*_, **__):
        raise AssertionError("loaded a model before checking the options")

    monkeypatch.setattr(lab.models.pair, "load_pair", never)
    data = tmp_path / "p.txt"
    data.write_text("heads or tails")
    base, tuned = map(str, pair_dirs("gpt2"))
    argv = ["cache", base, tuned, "--data", str(data), "--out", str(tmp_path / "s")]
    for flag, value, match in [
        ("--padding-side", "middle", "padding_side (--padding-side) must be 'left' or 'right'"),
        ("--batch-size", "-3", "batch_size (--batch-size) must be a whole number >= 1; got -3"),
        ("--batch-size", "0", "batch_size (--batch-size) must be a whole number >= 1; got 0"),
        ("--store-dtype", "float8", "Unknown dtype 'float8'"),
    ]:
        assert run([*argv, flag, value]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {match}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


# ---- --out that cannot hold a store (errors that name the problem) ------------------------------
def test_out_that_is_a_file_is_named(pairs, pair_dirs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("mine")
    with pytest.raises(LabError, match=r"out='.*taken' \(--out\) is a file, not a folder"):
        cache_pair(pairs["gpt2"], ragged_dataset(), out=out, progress=False)
    with pytest.raises(LabError, match=r"lies under .*taken, which is a file"):
        cache_pair(pairs["gpt2"], ragged_dataset(), out=out / "s", progress=False)
    data = tmp_path / "p.txt"
    data.write_text("heads or tails")
    base, tuned = map(str, pair_dirs("gpt2"))
    assert run(["cache", base, tuned, "--data", str(data), "--out", str(out)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "mine"


def test_unwritable_out_is_named_not_a_full_disk(pairs, tmp_path, monkeypatch):
    def denied(root, manifest):
        raise PermissionError(errno.EACCES, "Permission denied", str(root / "manifest.json"))

    monkeypatch.setattr(lab.activations.cache, "write_manifest", denied)
    with pytest.raises(LabError, match=r"Cannot write the store to .*Permission denied") as e:
        cache_pair(pairs["gpt2"], ragged_dataset(), out=tmp_path / "s", progress=False)
    assert "0..-1" not in str(e.value) and "free space" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_named(pairs, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(LabError, match=r"Cannot write to .*ro"):
            cache_pair(pairs["gpt2"], ragged_dataset(), out=ro / "s", progress=False)
    finally:
        ro.chmod(0o755)


# ---- the same checkpoint named two ways (from finding 5) ---------------------------------------
def test_resume_with_the_checkpoint_named_relative_then_absolute(
    pair_dirs, tmp_path, monkeypatch, fail_at
):
    base, tuned = pair_dirs("gpt2")
    ds, out = ragged_dataset(9), tmp_path / "s"
    monkeypatch.chdir(base.parent)
    relative = load_pair(base.name, f"./{tuned.name}", device="cpu")
    assert relative.sources == {"base": base.name, "tuned": f"./{tuned.name}"}
    fail_at(2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(LabError, match="disk is full"):
        cache_pair(relative, ds, "resid_post", out=out, batch_size=2, progress=False)
    monkeypatch.undo()
    absolute = load_pair(base.resolve(), tuned.resolve(), device="cpu")
    resumed = cache_pair(absolute, ds, "resid_post", out=out, batch_size=2, resume=True,
                         progress=False)  # fmt: skip
    assert resumed.complete and resumed.n_tokens == ds.n_tokens
    with pytest.raises(LabError, match="differs in models"):  # another checkpoint still is not
        cache_pair(load_pair(tuned, base, device="cpu"), ds, "resid_post", out=out,
                   batch_size=2, resume=True, progress=False)  # fmt: skip


# ---- Ctrl-C (finding 10) -------------------------------------------------------------------------
SLOW_CLI = """
import sys, time
import lab.activations.cache
import lab.activations.cache_checks
import lab.cli.pair
real = lab.activations.cache.write_shard
def slow(*args):  # slow enough that SIGINT lands mid-run
    time.sleep(0.2)
    return real(*args)
lab.activations.cache.write_shard = slow
from lab.cli import main
main()
"""


def test_ctrl_c_exits_130_saying_what_was_kept_then_resume_finishes(pair_dirs, tmp_path, capsys):
    base, tuned = map(str, pair_dirs("gpt2"))
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"heads or tails {i} times"}) for i in range(40)))
    out = tmp_path / "s"
    argv = ["cache", base, tuned, "--data", str(data), "--hooks", "resid_post", "--device", "cpu",
            "--batch-size", "2"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-c", SLOW_CLI, "--threads", "1", *argv, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (
        len(list(out.glob("shard-*"))) < 3 and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    partial = ActivationStore.open(out, verify=True)
    assert 3 <= partial.n_shards < 20 and not partial.complete and not partial.damaged
    assert lines == [
        f"interrupted: {out} keeps {partial.n_shards} of 20 shards; rerun the same command "
        "with --resume to finish it."
    ]
    assert run([*argv, "--out", str(out), "--resume"]) == 0
    assert run([*argv, "--out", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    resumed = ActivationStore.open(out, verify=True)
    assert resumed.complete
    assert_same_store(resumed, ActivationStore.open(tmp_path / "w"))


# ---- --trust-remote-code (item 6) --------------------------------------------------------------
def test_cli_cache_passes_trust_remote_code(pair_dirs, tmp_path, capsys, monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise LabError("stop here")

    monkeypatch.setattr(lab.cli.pair, "load_pair", spy)  # what every command calls
    data = tmp_path / "p.txt"
    data.write_text("heads or tails")
    base, tuned = map(str, pair_dirs("gpt2"))
    argv = ["cache", base, tuned, "--data", str(data), "--out", str(tmp_path / "s")]
    assert run([*argv, "--trust-remote-code"]) == 1
    assert "stop here" in capsys.readouterr().err and seen["trust_remote_code"] is True
    assert run(argv) == 1 and seen["trust_remote_code"] is False
