"""Test-wide settings (offline, one CPU thread, seeded) and the tiny-checkpoint factory."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from lab import load_pair
from lab.testing import TEST_SPECS, make_pair

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def pair_dirs(tmp_path_factory):
    """``pair_dirs(arch)`` -> (base folder, tuned folder) of a tiny random pair, made once."""
    made: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in made:
            made[arch] = make_pair(tmp_path_factory.mktemp(arch), TEST_SPECS[arch])
        return made[arch]

    return get


@pytest.fixture(scope="session")
def loaded_pair(pair_dirs):
    """``loaded_pair(arch)`` -> that tiny pair loaded on the CPU (eval mode), once a session."""
    loaded: dict[str, object] = {}

    def get(arch: str):
        if arch not in loaded:
            loaded[arch] = load_pair(*pair_dirs(arch), device="cpu")
        return loaded[arch]

    return get
