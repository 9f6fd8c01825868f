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

import lab.activations.cache
import lab.activations.cache_checks
from lab.activations.cache import cache_pair
from lab.activations.store import ActivationStore
from lab.cli import run
from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.testing import assert_same_store, ragged_dataset, store_contents

HOOKS = "resid_post,attn.hook_z,mlp_out,hook_embed"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_store_equals_run_with_cache(pairs, arch, side, tmp_path):
    pair, ds = pairs[arch], ragged_dataset()
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
    pair, ds = pairs["llama"], ragged_dataset(5)
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
        cache_pair(
            pair, ragged_dataset(), "blocks.0.hook_resid_post", out=tmp_path / "s", progress=False
        )
        assert fired == []
        cache_pair(
            pair, ragged_dataset(), "ln_final.hook_normalized", out=tmp_path / "t", progress=False
        )
        assert fired == []
        pair.base(torch.tensor([[5, 6]]))
        assert len(fired) == 1
    assert all(not h.fwd_hooks for h in pair.base.hook_dict.values())  # all hooks removed


def test_refusals(pairs, tmp_path):
    pair = pairs["gpt2"]
    with pytest.raises(LabError, match=r"No hook matches 'resid_pst'.*Did you mean"):
        cache_pair(pair, ragged_dataset(), "resid_pst", out=tmp_path / "a")
    too_long = Dataset.from_tokens([[5] * 129])
    with pytest.raises(LabError, match="has 129 tokens but the model's context is 128"):
        cache_pair(pair, too_long, out=tmp_path / "b")
    with pytest.raises(LabError, match="The pair is on cpu but device='cuda'"):
        cache_pair(pair, ragged_dataset(), out=tmp_path / "c", device="cuda")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(LabError, match="not empty and holds no store"):
        cache_pair(pair, ragged_dataset(), out=tmp_path / "d")


def test_folder_holding_another_store(pairs, tmp_path):
    pair, out = pairs["gpt2"], tmp_path / "s"
    cache_pair(pair, ragged_dataset(), "resid_post", out=out, progress=False)
    with pytest.raises(LabError, match=r"holds a different store \(it differs in hooks, shapes\)"):
        cache_pair(pair, ragged_dataset(), "mlp_out", out=out, progress=False)
    with pytest.raises(LabError, match="differs in dataset"):
        cache_pair(pair, ragged_dataset(seed=1), "resid_post", out=out, progress=False)
    with pytest.raises(LabError, match="differs in models"):
        cache_pair(pairs["llama"], ragged_dataset(), "resid_post", out=out, progress=False)
    with pytest.raises(LabError, match=r"already holds this store .* resume=True"):
        cache_pair(pair, ragged_dataset(), "resid_post", out=out, progress=False)


def test_full_disk_stops_cleanly_and_resumes(pairs, tmp_path, monkeypatch, fail_at):
    pair, ds, out = pairs["gpt2"], ragged_dataset(9), tmp_path / "s"
    fail_at(2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(LabError, match=r"disk is full while writing shard 2 .* resume=True"):
        cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    partial = ActivationStore.open(out)
    assert partial.n_shards == 2 and not partial.complete
    assert partial.n_tokens == int(ds.lengths[:4].sum())
    monkeypatch.undo()
    resumed = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, resume=True)
    assert resumed.complete and not list(out.glob(".*.tmp"))
    whole = cache_pair(pair, ds, "resid_post", out=tmp_path / "w", batch_size=2, progress=False)
    assert_same_store(resumed, whole)


def test_not_enough_disk_is_refused_before_computing(pairs, tmp_path, monkeypatch):
    usage = type("Usage", (), {"free": 1000})
    monkeypatch.setattr(lab.activations.cache_checks.shutil, "disk_usage", lambda _: usage)
    with pytest.raises(LabError, match=r"needs about .* GiB more but .* has 0.00 GiB free"):
        cache_pair(
            pairs["gpt2"], ragged_dataset(), "resid_post", out=tmp_path / "s", progress=False
        )
    assert ActivationStore.open(tmp_path / "s").n_shards == 0


KILLED = """
import sys, torch
torch.set_num_threads(1)
from lab.activations.cache import cache_pair
from lab.datasets.dataset import Dataset
from lab.models.pair import load_pair
base, tuned, out = sys.argv[1:]
g = torch.Generator().manual_seed(0)
ds = Dataset.from_tokens(torch.randint(4, 320, (400, 16), generator=g))
cache_pair(load_pair(base, tuned, device="cpu"), ds, "resid_post", out=out, batch_size=2)
"""


def test_kill_9_then_resume_equals_uninterrupted_run(pairs, pair_dirs, tmp_path):
    out = tmp_path / "s"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])}
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
    assert_same_store(resumed, whole)


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
    pair, ds, out = pairs["gpt2"], ragged_dataset(9), tmp_path / "s"
    whole = cache_pair(pair, ds, "resid_post", out=out, batch_size=2, progress=False)
    reference = store_contents(whole)
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
    got = store_contents(resumed)
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) == 5 and not (out / "shards.jsonl").exists()
    for i, rec in enumerate(manifest["shards"]):
        data = (out / f"shard-{i:06d}.safetensors").read_bytes()
        assert rec["bytes"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()


def test_flipped_byte_is_caught_by_the_checksum(pairs, tmp_path, capsys):
    pair, ds, out = pairs["gpt2"], ragged_dataset(5), tmp_path / "s"
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


def test_shard_written_just_before_a_kill_is_kept_and_recorded(
    pairs, tmp_path, monkeypatch, fail_at
):
    """A shard renamed into place whose journal line was lost is intact: resume records it."""
    pair, ds, out = pairs["gpt2"], ragged_dataset(9), tmp_path / "s"
    fail_at(3, OSError(errno.ENOSPC, "No space left on device"))
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
