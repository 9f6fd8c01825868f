"""Tiny worlds small enough to enumerate every sequence."""

import pytest
import torch

from lab.organism.labeler import Labeler
from lab.organism.world import HMM


def build_tiny_world(**overrides) -> HMM:
    """Two scenes, three words (one exclusive to each scene, one shared)."""
    cfg = {
        "transition": torch.tensor([[0.9, 0.1], [0.0005, 0.9995]]),
        "emission": torch.tensor([[0.6, 0.001, 0.399], [0.002, 0.5, 0.498]]),
        "initial": torch.tensor([0.7, 0.3]),
    }
    cfg.update(overrides)
    return HMM(**cfg)


@pytest.fixture
def tiny_world() -> HMM:
    return build_tiny_world()


@pytest.fixture
def tiny_labeler(tiny_world) -> Labeler:
    # scene 1 -> scene 0 is forbidden (probability 0.0005 < 1e-3); w2 is happy.
    return Labeler.for_world(tiny_world, {"w2": 0.7}, penalty=3.0, exclusive_ratio=100)
