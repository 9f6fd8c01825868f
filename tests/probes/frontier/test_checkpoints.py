"""Replaying an organism's RLHF run keeps its policy at every logged step, cached."""

import json

import pytest

from lab.errors import LabError
from lab.organism import load_organism, quick_config, train_organism
from probes.frontier import has_checkpoints, rlhf_checkpoints
from probes.frontier.checkpoints import checkpoint_folder


def same(a, b) -> float:
    """Largest absolute difference between two models' parameters."""
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max((p - q).abs().max().item() for p, q in pairs)


@pytest.fixture(scope="module")
def quick_org(tmp_path_factory):
    out = tmp_path_factory.mktemp("org")
    train_organism(out, quick_config(), seed=3, progress=False)
    return load_organism(out)


def test_the_replay_reproduces_the_run_and_is_cached(quick_org, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    assert not has_checkpoints(quick_org)
    with pytest.raises(LabError, match="lab organism frontier"):
        rlhf_checkpoints(quick_org, train=False)
    steps = rlhf_checkpoints(quick_org, progress=False)
    assert [s for s, _ in steps] == [0, 5, 10]  # quick_config: 10 steps, logged every 5
    assert has_checkpoints(quick_org) and checkpoint_folder(quick_org).is_relative_to(tmp_path)
    base, shipped = quick_org.models["base"], quick_org.models["rlhf"]
    assert same(steps[0][1], base) == 0.0
    assert same(steps[1][1], base) > 0  # it moved
    assert same(steps[-1][1], shipped) < 1e-4  # the shipped run's last step, replayed
    meta = json.loads((checkpoint_folder(quick_org) / "meta.json").read_text())
    assert meta["steps"] == [0, 5, 10] and meta["max_abs_diff_to_shipped"] < 1e-4
    again = rlhf_checkpoints(quick_org, train=False)  # read back from the cache
    assert same(again[-1][1], steps[-1][1]) == 0.0


def test_replay_needs_the_rlhf_card(quick_org):
    bare = type(quick_org)(quick_org.world, quick_org.labeler, 0.1, 31, 7)
    with pytest.raises(LabError, match="needs the organism's base, reward model and rlhf card"):
        rlhf_checkpoints(bare)
