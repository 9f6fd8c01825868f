"""Fixtures shared by the caching and store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import lab.activations.cache
from lab.models.pair import load_pair


@pytest.fixture(scope="module")
def pairs(pair_dirs):
    """The tiny GPT-2 and Llama pairs on the CPU, by architecture."""
    return {arch: load_pair(*pair_dirs(arch), device="cpu") for arch in ("gpt2", "llama")}


@pytest.fixture
def fail_at(monkeypatch):
    """``fail_at(shard, error)``: writing that shard leaves half a temp file and raises ``error``
    (undo with ``monkeypatch.undo()``)."""

    def arm(shard: int, error: BaseException) -> None:
        real = lab.activations.cache.write_shard

        def write(path: Path, tensors, metadata):
            if int(metadata["batch"]) == shard:
                path.with_name(f".{path.name}.tmp").write_bytes(b"half a shard")
                raise error
            return real(path, tensors, metadata)

        monkeypatch.setattr(lab.activations.cache, "write_shard", write)

    return arm
