"""Sequence-level splits, standardisation, control tasks and the random-init baseline."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lab.errors import LabError
from probes.linear.controls import make_control, random_init_like
from probes.linear.splits import split_by_sequence, standardize


def test_split_keeps_sequences_whole_and_covers_every_row():
    seq = torch.arange(10).repeat_interleave(7)
    split = split_by_sequence(seq, (0.6, 0.2, 0.2), seed=3)
    parts = [set(seq[rows].tolist()) for rows in (split.train, split.val, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sorted(torch.cat([split.train, split.val, split.test]).tolist()) == list(range(70))
    assert [len(p) for p in parts] == [6, 2, 2]
    other = split_by_sequence(seq, (0.6, 0.2, 0.2), seed=4)
    assert not torch.equal(other.train, split.train)


def test_split_refusals():
    with pytest.raises(LabError, match="at least 3"):
        split_by_sequence(torch.tensor([0, 0, 1, 1]))
    with pytest.raises(LabError, match="positive"):
        split_by_sequence(torch.arange(9), (1.0, 0.0, 0.0))


def test_standardize_handles_constant_features():
    x = torch.randn(2, 50, 4)
    x[:, :, 1] = 3.0
    z, _, scale = standardize(x)
    assert torch.allclose(z.mean(1), torch.zeros(2, 4), atol=1e-6)
    assert (z[:, :, 1] == 0).all() and (scale[:, 1] == 1).all()


def test_standardize_scale_is_the_biased_std():
    x = torch.randn(3, 200, 5, dtype=torch.float64) * torch.tensor([0.1, 1.0, 7.0, 30.0, 2.0])
    z, mean, scale = standardize(x + 4.0)
    assert torch.allclose(scale, x.std(1, correction=0), rtol=1e-12)
    assert torch.allclose(mean, x.mean(1) + 4.0) and torch.allclose(
        z.std(1, correction=0), torch.ones(3, 5, dtype=torch.float64)
    )


def test_controls():
    y = torch.arange(40) % 4
    shuffled = make_control("shuffle", y, seed=0)
    assert torch.equal(torch.bincount(shuffled), torch.bincount(y)) and not torch.equal(shuffled, y)
    tokens = torch.arange(40) % 5
    typed = make_control("types", y, seed=0, token_ids=tokens)
    for t in range(5):
        assert len(torch.unique(typed[tokens == t])) == 1  # one label per token type
    with pytest.raises(LabError, match="token id"):
        make_control("types", y, seed=0)
    with pytest.raises(LabError, match="shuffle"):
        make_control("shufle", y, seed=0)


def test_random_init_like_keeps_shape_and_rng():
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=8)
    )
    state = torch.random.get_rng_state()
    fresh = random_init_like(model, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert type(fresh) is type(model)
    for (name, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters(), strict=True):
        assert a.shape == b.shape, name
    assert not torch.equal(model.transformer.wte.weight, fresh.transformer.wte.weight)
    with pytest.raises(LabError, match="config"):
        random_init_like(torch.nn.Linear(2, 2))
