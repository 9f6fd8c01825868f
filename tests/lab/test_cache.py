"""Paired caching against run_with_cache, early stop, resume, and every refusal."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import lab.cache
import lab.cache_checks
from lab.cache import cache_pair
from lab.cli import run
from lab.datasets import Dataset
from lab.errors import LabError
from lab.models import load_pair
from lab.store import ActivationStore

HOOKS = "resid_post,attn.hook_z,mlp_out,hook_embed"


def _dataset(n: int = 7, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 12, (n,), generator=g)
    return Dataset.from_tokens([torch.randint(4, 320, (int(k),), generator=g) for k in lengths])


@pytest.fixture(scope="module")
def pairs(pair_dirs):
    return {arch: load_pair(*pair_dirs(arch), device="cpu") for arch in ("gpt2", "llama")}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_store_equals_run_with_cache(pairs, arch, side, tmp_path):
    pair, ds = pairs[arch], _dataset()
    store = cache_pair(pair, ds, HOOKS, out=tmp_path / "s", batch_size=3, padding_side=side)
    half = cache_pair(pair, ds, HOOKS, out=tmp_path / "h", batch_size=3, padding_side=side,
                      dtype="bfloat16", progress=False)  # fmt: skip
    row = 0
    for b in ds.batches(3, side):
        for role, model in pair.models.items():
            _, ref = model.run_with_cache(b.tokens, names_filter=store.hooks, **b.forward_kwargs())
            for h in store.hooks:
                want = ref[h][b.keep]
                assert torch.equal(store.read(role, h, row, row + b.n_rows), want), (role, h)
                got = half.read(role, h, row, row + b.n_rows)
                assert got.dtype == torch.bfloat16 and torch.equal(got, want.bfloat16())
        row += b.n_rows
    assert row == store.n_tokens == ds.n_tokens


def test_padding_does_not_change_real_rows(pairs, tmp_path):
    pair, ds = pairs["llama"], _dataset(5)
    store = cache_pair(pair, ds, "resid_post", out=tmp_path / "s", batch_size=5,
                       padding_side="left", progress=False)  # fmt: skip
    seq = store.sequence_ids()
    for i in range(len(ds)):
        alone = ds.tokens[i : i + 1, : int(ds.lengths[i])]
        _, ref = pair.tuned.run_with_cache(alone, names_filter="blocks.1.hook_resid_post")
        got = store.read("tuned", "blocks.1.hook_resid_post")[seq == i]
        torch.testing.assert_close(got, ref["blocks.1.hook_resid_post"][0], atol=1e-5, rtol=1e-5)


def test_forward_stops_after_last_hook(pairs, tmp_path):
    pair = pairs["gpt2"]
    fired = []
    spy = [("hook_unembed", lambda t, hook: fired.append(hook.name))]
    with pair.base.hooks(fwd_hooks=spy), pair.tuned.hooks(fwd_hooks=spy):
        cache_pair(pair, _dataset(), "blocks.0.hook_resid_post", out=tmp_path / "s", progress=False)
        assert fired == []
        cache_pair(pair, _dataset(), "ln_final.hook_normalized", out=tmp_path / "t", progress=False)
        assert fired == []
        pair.base(torch.tensor([[5, 6]]))
        assert len(fired) == 1
    assert all(not h.fwd_hooks for h in pair.base.hook_dict.values())  # all hooks removed


def test_refusals(pairs, tmp_path):
    pair = pairs["gpt2"]
    with pytest.raises(LabError, match=r"No hook matches 'resid_pst'.*Did you mean"):
        cache_pair(pair, _dataset(), "resid_pst", out=tmp_path / "a")
    too_long = Dataset.from_tokens([[5] * 129])
    with pytest.raises(LabError, match="has 129 tokens but the model's context is 128"):
        cache_pair(pair, too_long, out=tmp_path / "b")
    with pytest.raises(LabError, match="The pair is on cpu but device='cuda'"):
        cache_pair(pair, _dataset(), out=tmp_path / "c", device="cuda")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(LabError, match="not empty and holds no store"):
        cache_pair(pair, _dataset(), out=tmp_path / "d")


def test_folder_holding_another_store(pairs, tmp_path):
    pair, out = pairs["gpt2"], tmp_path / "s"
    cache_pair(pair, _dataset(), "resid_post", out=out, progress=False)
    with pytest.raises(LabError, match=r"holds a different store \(it differs in hooks, shapes\)"):
        cache_pair(pair, _dataset(), "mlp_out", out=out, progress=False)
    with pytest.raises(LabError, match="differs in dataset"):
        cache_pair(pair, _dataset(seed=1), "resid_post", out=out, progress=False)
    with pytest.raises(LabError, match="differs in models"):
        cache_pair(pairs["llama"], _dataset(), "resid_post", out=out, progress=False)
    with pytest.raises(LabError, match=r"already holds this store .* resume=True"):
        cache_pair(pair, _dataset(), "resid_post", out=out, progress=False)


def _fail_at(monkeypatch, shard: int, error: BaseException) -> None:
    real = lab.cache.write_shard

    def write(path: Path, tensors, metadata):
        if int(metadata["batch"]) == shard:
            path.with_name(f".{path.name}.tmp").write_bytes(b"half a shard")
            raise error
        return real(path, tensors, metadata)

    monkeypatch.setattr(lab.cache, "write_shard", write)


def _contents(store: ActivationStore) -> dict[str, torch.Tensor]:
    out = {f"{m}/{h}": store.read(m, h) for m in store.models for h in store.hooks}
    return out | {"seq": store.sequence_ids(), "pos": store.positions()}


def _assert_same(a: ActivationStore, b: ActivationStore) -> None:
    ca, cb = _contents(a), _contents(b)
    assert ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)


def test_full_disk_stops_cleanly_and_resumes(pairs, tmp_path, monkeypatch):
    pair, ds, out = pairs["gpt2"], _dataset(9), tmp_path / "s"
    _fail_at(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(LabError, match=r"disk is full while writing shard 2 .* resume=True"):
        cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    partial = ActivationStore.open(out)
    assert partial.n_shards == 2 and not partial.complete
    assert partial.n_tokens == int(ds.lengths[:4].sum())
    monkeypatch.undo()
    resumed = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, resume=True)
    assert resumed.complete and not list(out.glob(".*.tmp"))
    whole = cache_pair(pair, ds, "resid_post", out=tmp_path / "w", batch_size=2, progress=False)
    _assert_same(resumed, whole)


def test_not_enough_disk_is_refused_before_computing(pairs, tmp_path, monkeypatch):
    usage = type("Usage", (), {"free": 1000})
    monkeypatch.setattr(lab.cache_checks.shutil, "disk_usage", lambda _: usage)
    with pytest.raises(LabError, match=r"needs about .* GiB more but .* has 0.00 GiB free"):
        cache_pair(pairs["gpt2"], _dataset(), "resid_post", out=tmp_path / "s", progress=False)
    assert ActivationStore.open(tmp_path / "s").n_shards == 0


KILLED = """
import sys, torch
torch.set_num_threads(1)
from lab.cache import cache_pair
from lab.datasets import Dataset
from lab.models import load_pair
base, tuned, out = sys.argv[1:]
g = torch.Generator().manual_seed(0)
ds = Dataset.from_tokens(torch.randint(4, 320, (400, 16), generator=g))
cache_pair(load_pair(base, tuned, device="cpu"), ds, "resid_post", out=out, batch_size=2)
"""


def test_kill_9_then_resume_equals_uninterrupted_run(pairs, pair_dirs, tmp_path):
    out = tmp_path / "s"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-c", textwrap.dedent(KILLED), *map(str, pair_dirs("gpt2")), str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        len(list(out.glob("shard-*"))) < 5 and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = ActivationStore.open(out)
    assert 5 <= partial.n_shards < 200 and not partial.complete
    g = torch.Generator().manual_seed(0)
    ds = Dataset.from_tokens(torch.randint(4, 320, (400, 16), generator=g))
    resumed = cache_pair(pairs["gpt2"], ds, "resid_post", out=out, batch_size=2, resume=True,
                         progress=False)  # fmt: skip
    whole = cache_pair(pairs["gpt2"], ds, "resid_post", out=tmp_path / "w", batch_size=2,
                       progress=False)  # fmt: skip
    assert resumed.complete
    _assert_same(resumed, whole)


def test_cli_cache_and_store_info(pair_dirs, tmp_path, capsys):
    base, tuned = pair_dirs("gpt2")
    data = tmp_path / "p.jsonl"
    rows = [{"text": "heads or tails", "label": 1}, {"text": "once upon a time", "label": 0}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "s"
    argv = ["cache", str(base), str(tuned), "--data", str(data), "--hooks", "resid_post"]
    assert run([*argv, "--out", str(out), "--device", "cpu", "--store-dtype", "float16"]) == 0
    assert "complete" in capsys.readouterr().out
    assert run(["store", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in text and "float16" in text and "label" in text
    assert run(["store", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["hooks"] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    assert run([*argv[:-1], "resid_pst", "--out", str(tmp_path / "x"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading bars
    assert err.startswith("error: No hook matches 'resid_pst'")
    assert run(["store", "info", str(tmp_path)]) == 1
    assert "No activation store" in capsys.readouterr().err


# ---- integrity (finding 8) ----------------------------------------------------------------------
def _cut(path: Path) -> None:
    """Halve a file in place, as a bad copy or a full disk outside the lab would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_shard_is_named_refused_and_recomputed(pairs, tmp_path, capsys):
    pair, ds, out = pairs["gpt2"], _dataset(9), tmp_path / "s"
    whole = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    reference = _contents(whole)
    _cut(out / "shard-000002.safetensors")
    assert run(["store", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] is False and list(info["damaged"]) == ["2"]
    store = ActivationStore.open(out)
    assert not store.complete and list(store.damaged) == [2] and store.n_shards == 2
    with pytest.raises(LabError, match=r"Shard shard-000002.safetensors of .* damaged .*--resume"):
        store.read("base", "blocks.0.hook_resid_post")
    with pytest.raises(LabError, match=r"already holds this store"):
        cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    resumed = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, resume=True,
                         progress=False)  # fmt: skip
    assert "recomputing shard-000002.safetensors" in capsys.readouterr().err
    assert resumed.complete and not resumed.damaged
    got = _contents(resumed)
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) == 5 and not (out / "shards.jsonl").exists()
    for i, rec in enumerate(manifest["shards"]):
        data = (out / f"shard-{i:06d}.safetensors").read_bytes()
        assert rec["bytes"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()


def test_flipped_byte_is_caught_by_the_checksum(pairs, tmp_path, capsys):
    pair, ds, out = pairs["gpt2"], _dataset(5), tmp_path / "s"
    cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    path = out / "shard-000001.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size, one value changed
    path.write_bytes(bytes(data))
    assert ActivationStore.open(out).complete  # sizes only: not seen
    assert list(ActivationStore.open(out, verify=True).damaged) == [1]
    assert run(["store", "info", str(out)]) == 0  # verifies by default
    assert "shard 1: its SHA-256 differs" in capsys.readouterr().out
    resumed = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, resume=True,
                         progress=False)  # fmt: skip
    assert ActivationStore.open(out, verify=True).complete and resumed.complete


def test_shard_written_just_before_a_kill_is_kept_and_recorded(pairs, tmp_path, monkeypatch):
    """A shard renamed into place whose journal line was lost is intact: resume records it."""
    pair, ds, out = pairs["gpt2"], _dataset(9), tmp_path / "s"
    _fail_at(monkeypatch, 3, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(LabError, match="disk is full"):
        cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    monkeypatch.undo()
    journal = out / "shards.jsonl"
    lines = [line for line in journal.read_text().splitlines() if line]
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    journal.write_text("\n".join(lines[:2]) + '\n{"index": 2, "by')  # the last line cut short
    before = (out / "shard-000002.safetensors").stat().st_mtime_ns
    resumed = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, resume=True,
                         progress=False)  # fmt: skip
    assert resumed.complete and (out / "shard-000002.safetensors").stat().st_mtime_ns == before
    assert len(resumed.manifest["shards"]) == 5


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
        cache_pair(pair, _dataset(), "resid_post", out=out, progress=False, **option)
    assert not out.exists()
    store = cache_pair(pair, _dataset(), "resid_post", out=out, progress=False)  # corrected
    assert store.complete


def test_cli_bad_option_is_refused_before_loading(pair_dirs, tmp_path, capsys, monkeypatch):
    import lab.models

    def never(*_, **__):
        raise AssertionError("loaded a model before checking the options")

    monkeypatch.setattr(lab.models, "load_pair", never)
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
        cache_pair(pairs["gpt2"], _dataset(), out=out, progress=False)
    with pytest.raises(LabError, match=r"lies under .*taken, which is a file"):
        cache_pair(pairs["gpt2"], _dataset(), out=out / "s", progress=False)
    data = tmp_path / "p.txt"
    data.write_text("heads or tails")
    base, tuned = map(str, pair_dirs("gpt2"))
    assert run(["cache", base, tuned, "--data", str(data), "--out", str(out)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "mine"


def test_unwritable_out_is_named_not_a_full_disk(pairs, tmp_path, monkeypatch):
    def denied(root, manifest):
        raise PermissionError(errno.EACCES, "Permission denied", str(root / "manifest.json"))

    monkeypatch.setattr(lab.cache, "write_manifest", denied)
    with pytest.raises(LabError, match=r"Cannot write the store to .*Permission denied") as e:
        cache_pair(pairs["gpt2"], _dataset(), out=tmp_path / "s", progress=False)
    assert "0..-1" not in str(e.value) and "free space" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_named(pairs, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(LabError, match=r"Cannot write to .*ro"):
            cache_pair(pairs["gpt2"], _dataset(), out=ro / "s", progress=False)
    finally:
        ro.chmod(0o755)


# ---- the same checkpoint named two ways (from finding 5) ---------------------------------------
def test_resume_with_the_checkpoint_named_relative_then_absolute(pair_dirs, tmp_path, monkeypatch):
    base, tuned = pair_dirs("gpt2")
    ds, out = _dataset(9), tmp_path / "s"
    monkeypatch.chdir(base.parent)
    relative = load_pair(base.name, f"./{tuned.name}", device="cpu")
    assert relative.sources == {"base": base.name, "tuned": f"./{tuned.name}"}
    _fail_at(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
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
import lab.cache
import lab.cache_checks
real = lab.cache.write_shard
def slow(*args):  # slow enough that SIGINT lands mid-run
    time.sleep(0.2)
    return real(*args)
lab.cache.write_shard = slow
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
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
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
    _assert_same(resumed, ActivationStore.open(tmp_path / "w"))


# ---- --trust-remote-code (item 6) --------------------------------------------------------------
def test_cli_cache_passes_trust_remote_code(pair_dirs, tmp_path, capsys, monkeypatch):
    import lab.models

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise LabError("stop here")

    monkeypatch.setattr(lab.models, "load_pair", spy)
    data = tmp_path / "p.txt"
    data.write_text("heads or tails")
    base, tuned = map(str, pair_dirs("gpt2"))
    argv = ["cache", base, tuned, "--data", str(data), "--out", str(tmp_path / "s")]
    assert run([*argv, "--trust-remote-code"]) == 1
    assert "stop here" in capsys.readouterr().err and seen["trust_remote_code"] is True
    assert run(argv) == 1 and seen["trust_remote_code"] is False
