"""The Q head: decode-time beta, saving without pickle, and refusing another model or layer."""

import dataclasses
import math

import pytest
import torch

from lab.errors import LabError
from probes.value import QHead, fingerprint


def _head(betas=(0.1, 1.0), vocab=3, d=4, seed=0) -> QHead:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, len(betas) * vocab, generator=g)
    return QHead(2, betas, weight, torch.randn(len(betas) * vocab, generator=g), vocab, "abc")


def test_exact_at_grid_points_and_log_interpolated_between():
    head = _head()
    resid = torch.randn(5, 4)
    grid = head.values(resid)  # [5 beta vocab]
    torch.testing.assert_close(head.at(resid, 0.1), grid[:, 0])
    torch.testing.assert_close(head.at(resid, 1.0), grid[:, 1])
    mid = math.sqrt(0.1)  # halfway in log beta: the mean of Q / beta, times beta
    expected = mid * (grid[:, 0] / 0.1 + grid[:, 1] / 1.0) / 2
    torch.testing.assert_close(head.at(resid, mid), expected)


def test_candidate_columns_equal_the_full_values():
    head = _head(vocab=6)
    resid = torch.randn(3, 2, 4)
    ids = torch.tensor([[[5, 0], [2, 3]]] * 3)
    full = head.at(resid, 0.4)
    torch.testing.assert_close(head.at(resid, 0.4, ids), full.gather(-1, ids))


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_beta_not_positive_refused(beta):
    with pytest.raises(LabError, match="beta must be a finite number > 0"):
        _head().at(torch.zeros(4), beta)


def test_beta_outside_grid_refused():
    with pytest.raises(LabError, match=r"outside the Q head's grid 0.1..1"):
        _head().at(torch.zeros(4), 3.0)


def test_bounds_clamp_values():
    head = dataclasses.replace(_head(), bounds=(-0.5, 0.5))
    values = head.values(100 * torch.randn(8, 4))
    assert values.abs().max() <= 0.5 and values.abs().max() == 0.5


def test_save_load_round_trip_without_pickle(tmp_path):
    head = dataclasses.replace(_head(), model_name="m", bounds=(-1.0, 2.0))
    head.save(tmp_path / "q")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json", "q.safetensors"]
    back = QHead.load(tmp_path / "q.json")
    torch.testing.assert_close(back.weight, head.weight)
    torch.testing.assert_close(back.bias, head.bias)
    assert dataclasses.replace(back, weight=head.weight, bias=head.bias) == head


def test_load_missing_refused(tmp_path):
    with pytest.raises(LabError, match="No Q head"):
        QHead.load(tmp_path / "nothing")


def test_head_of_another_model_or_layer_refused_naming_both(org, oracle_head):
    oracle_head.check(org.pair.base, 2)
    with pytest.raises(LabError) as e:
        oracle_head.check(org.pair.tuned, 2)
    msg = str(e.value)
    assert oracle_head.model_id in msg and fingerprint(org.pair.tuned) in msg
    assert "organism/base" in msg and "organism/rlhf" in msg
    with pytest.raises(LabError, match="reads layer 2; got layer 1"):
        oracle_head.check(org.pair.base, 1)


def test_fingerprint_same_for_bridge_and_its_hf_model(org):
    assert fingerprint(org.pair.base) == fingerprint(org.models["base"])
    assert fingerprint(org.pair.base) != fingerprint(org.models["rlhf"])
