"""The store: safetensors shards any reader opens, reads by slice, stacked views, targets."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lab.activations.cache import cache_pair
from lab.activations.shards import ShardReader, write_shard
from lab.activations.store import ActivationStore
from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.models.pair import load_pair


def test_shard_roundtrip_matches_safetensors(tmp_path):
    tensors = {
        "a": torch.randn(5, 3),
        "b": torch.randn(4, 2).to(torch.bfloat16),
        "c": torch.arange(7),
        "d": torch.tensor([True, False, True]),
        "e": torch.empty(0, 8, dtype=torch.float16),
    }
    path = tmp_path / "s.safetensors"
    write_shard(path, tensors, {"rows": "5"})
    assert not list(tmp_path.glob(".*.tmp"))
    official = load_file(path)
    reader = ShardReader(path)
    assert reader.metadata == {"rows": "5"}
    for k, t in tensors.items():
        assert torch.equal(official[k], t) and torch.equal(reader.tensor(k), t)
        assert reader.tensor(k).dtype == t.dtype


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    class Boom(RuntimeError):
        pass

    def explode(*_):
        raise Boom

    monkeypatch.setattr("lab.activations.shards.os.fsync", explode)
    with pytest.raises(Boom):
        write_shard(tmp_path / "s.safetensors", {"a": torch.ones(2)}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def store(pair_dirs, tmp_path_factory):
    pair = load_pair(*pair_dirs("gpt2"), device="cpu")
    seqs = [list(range(4, 4 + n)) for n in (5, 3, 7, 2, 6)]
    n, pos = len(seqs), max(map(len, seqs))
    where = torch.arange(n)[:, None] * 100 + torch.arange(pos)[None]
    ds = Dataset.from_tokens(seqs, targets={"where": where}, labels={"cls": [0, 1, 0, 1, 1]})
    out = tmp_path_factory.mktemp("store") / "s"
    return cache_pair(pair, ds, "resid_post,attn.hook_z", out=out, batch_size=2, progress=False)


def test_store_reports_what_it_holds(store):
    assert store.models == ["base", "tuned"]
    assert store.hooks == [
        "blocks.0.attn.hook_z",
        "blocks.0.hook_resid_post",
        "blocks.1.attn.hook_z",
        "blocks.1.hook_resid_post",
    ]
    assert store.n_tokens == 23 and store.n_shards == 3 and store.complete
    m = store.manifest
    assert m["dataset"]["n_tokens"] == 23 and m["dtype"] == "float32"
    assert m["shapes"]["blocks.0.attn.hook_z"] == [4, 8]
    assert {"torch", "transformers", "transformer-lens", "safetensors"} <= set(m["versions"])
    assert store.target_names == ["where", "cls"]
    again = ActivationStore.open(store.root)
    assert again.n_tokens == 23


def test_rows_sequences_positions_and_targets(store):
    seq, pos = store.sequence_ids(), store.positions()
    assert seq.tolist() == [0] * 5 + [1] * 3 + [2] * 7 + [3] * 2 + [4] * 6
    assert pos.tolist()[:8] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert store.targets("where").tolist() == (seq * 100 + pos).tolist()
    assert store.targets("cls").tolist() == [[0, 1, 0, 1, 1][s] for s in seq.tolist()]
    with pytest.raises(LabError, match=r"No target 'wher'.*Did you mean: where.*It holds: where"):
        store.targets("wher")


def test_read_slices_across_shards(store):
    full = store.read("tuned", "blocks.1.hook_resid_post")
    assert full.shape == (23, 32)
    assert torch.equal(store.read("tuned", "blocks.1.hook_resid_post", 6, 17), full[6:17])
    assert store.read("base", "blocks.0.attn.hook_z", 3, 5).shape == (2, 4, 8)
    assert store.read("base", "blocks.0.hook_resid_post", 30, 40).shape == (0, 32)
    one = store.read("base", "blocks.0.hook_resid_post", 0, 3)  # within a shard: a mapped view
    assert one.data_ptr() == store.read("base", "blocks.0.hook_resid_post", 0, 3).data_ptr()
    assert not torch.equal(full, store.read("base", "blocks.1.hook_resid_post"))


def test_stacked(store):
    stack = store.stacked("base", "resid_post")
    assert stack.shape == (2, 23, 32)
    for layer in range(2):
        assert torch.equal(stack[layer], store.read("base", f"blocks.{layer}.hook_resid_post"))
    names = ["blocks.1.hook_resid_post", "blocks.0.hook_resid_post"]
    assert torch.equal(store.stacked("base", names), stack.flip(0))  # the order given
    half = store.stacked("tuned", ["blocks.1.attn.hook_z"], dtype=torch.float16)
    assert half.shape == (1, 23, 4, 8) and half.dtype == torch.float16
    with pytest.raises(LabError, match="different shapes"):
        store.stacked("base", "resid_post,attn.hook_z")


def test_read_errors(store, tmp_path):
    with pytest.raises(LabError, match=r"No hook 'blocks.1.hook_resid_pst'.*Did you mean"):
        store.read("base", "blocks.1.hook_resid_pst")
    with pytest.raises(LabError, match=r"No model 'chat'.*\['base', 'tuned'\]"):
        store.read("chat", "blocks.1.hook_resid_post")
    with pytest.raises(LabError, match="No activation store"):
        ActivationStore.open(tmp_path)
