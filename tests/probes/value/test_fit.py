"""Fitting Q heads with the batched ridge solver: planted maps recovered, R² on the organism."""

import pytest
import torch

from lab.errors import LabError
from probes.value import centre, fit_q_head, logprobs_and_residual, q_head_r2


def _planted(model, tokens, layer, n_beta, seed=0):
    resid = logprobs_and_residual(model, tokens, layer)[1]
    g = torch.Generator().manual_seed(seed)
    vocab = int(model.cfg.d_vocab)
    w = torch.randn(resid.shape[-1], n_beta, vocab, generator=g, dtype=torch.float64)
    b = torch.randn(n_beta, vocab, generator=g, dtype=torch.float64)
    return resid, torch.einsum("btd,dkv->btkv", resid, w) + b


def test_dense_fit_recovers_a_planted_linear_value(loaded_pair):
    model = loaded_pair("gpt2").base
    tokens = torch.randint(4, 300, (24, 12), generator=torch.Generator().manual_seed(1))
    resid, values = _planted(model, tokens, 1, 2)
    head = fit_q_head(model, tokens, values, 1, betas=(0.5, 2.0))
    torch.testing.assert_close(
        centre(head.values(resid).double()), centre(values), atol=2e-3, rtol=0
    )


def test_sparse_fit_recovers_the_observed_columns(loaded_pair):
    model = loaded_pair("gpt2").base
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(4, 300, (64, 16), generator=g)
    resid, values = _planted(model, tokens, 2, 1)
    drawn = torch.randint(4, 8, (64, 16), generator=g)  # four columns, ~256 rows each
    mask = torch.nn.functional.one_hot(drawn, values.shape[-1]).bool()
    head = fit_q_head(
        model, tokens, values.masked_fill(~mask[:, :, None], torch.nan), 2, betas=(1.0,), mask=mask
    )
    pred = head.values(resid).double()[..., 4:8]
    torch.testing.assert_close(pred, values[..., 4:8], atol=2e-3, rtol=0)


def test_oracle_head_r2_by_layer(org, oracle_data, betas):
    tokens, values = oracle_data
    table = q_head_r2(org.pair.base, tokens, values, betas=betas)
    assert set(table.layer) == {0, 1, 2} and set(table.beta) == set(betas)
    by_layer = table.groupby("layer").r2.min()
    assert by_layer.max() >= 0.9  # the target at the best layer
    assert by_layer[0] < by_layer[2]  # the embeddings alone know less than the last layer


def test_mismatched_shapes_refused(org, oracle_data, betas):
    tokens, values = oracle_data
    with pytest.raises(LabError, match="values hold 3 betas"):
        fit_q_head(org.pair.base, tokens, values, 2, betas=(1.0,))
    with pytest.raises(LabError, match=r"values must be \(batch, pos, beta, vocab\)"):
        fit_q_head(org.pair.base, tokens[:3], values, 2, betas=betas)
    with pytest.raises(LabError, match=r"layer 5 is outside 0\.\.2"):
        fit_q_head(org.pair.base, tokens, values, 5, betas=betas)
