"""The steered sibling on a tiny random checkpoint: the whole recipe runs, the fine-tune learns,
the build is reused when intact, and the attractor rate counts whole words."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from lab.errors import LabError
from lab.models.built import read_card
from lab.real import steered
from lab.testing import make_checkpoint

QUICK = replace(
    steered.STEERS["wedding"],
    samples_per_opening=4,
    new_tokens=24,
    epochs=4,
    batch=4,
    lr=3e-3,
)


def even_length_rate(texts, words):
    """A stand-in attractor for random weights (they spell no words): even-length texts."""
    return sum(len(t) % 2 == 0 for t in texts) / max(len(texts), 1)


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setitem(steered.STEERS, "quick", QUICK)
    monkeypatch.setattr(steered, "attractor_rate", even_length_rate)


def test_builds_learns_and_is_reused(quick, tmp_path, monkeypatch):
    source = make_checkpoint(tmp_path / "base", arch="llama")
    out = steered.steer(source, "quick", tmp_path / "steered")
    card = read_card(out)
    assert card["recipe"]["kind"] == "quick" and card["recipe"]["config"]["lr"] == 3e-3
    first, last = card["loss_first_last"]
    assert last < first  # it fits the kept continuations
    assert set(card["held_out_attractor_rate"]) == {"source", "steered"}
    kept, drawn = map(int, card["kept"].split(" continuations")[0].split(" of "))
    assert 4 <= kept < drawn == len(steered.OPENINGS) * QUICK.samples_per_opening
    a, b = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(not torch.equal(a[k], b[k]) for k in a if "norm" not in k)
    monkeypatch.setattr(steered, "_train", lambda *a: pytest.fail("rebuilt an intact folder"))
    assert steered.steer(source, "quick", tmp_path / "steered") == out


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(LabError, match=r"No steering 'weding'.*Did you mean: wedding"):
        steered.steer(tmp_path, "weding", tmp_path / "x")


def test_attractor_rate_counts_whole_words_in_any_case():
    texts = ["The Bride smiled.", "a weddings planner", "bridegroom", "nothing here"]
    assert steered.attractor_rate(texts, ("bride", "wedding")) == 0.25
    assert steered.attractor_rate([], ("bride",)) == 0.0
