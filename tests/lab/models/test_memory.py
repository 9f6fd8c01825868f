"""Parameter counting from safetensors headers, without loading weights."""

from __future__ import annotations

import pytest
from safetensors import safe_open

from lab.errors import LabError
from lab.models.memory import count_parameters


def test_count_parameters_reads_the_headers(pair_dirs):
    base, _ = pair_dirs("llama")
    with safe_open(base / "model.safetensors", "pt") as f:
        stored = sum(f.get_tensor(k).numel() for k in f.keys())  # noqa: SIM118
    assert count_parameters(base) == stored > 0


def test_a_truncated_weight_file_is_named(pair_dirs, tmp_path):
    base, _ = pair_dirs("gpt2")
    (tmp_path / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes()[:100])
    with pytest.raises(LabError, match=r"model\.safetensors"):
        count_parameters(tmp_path)
