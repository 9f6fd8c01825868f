"""The one sampler: inverse-CDF draws, the mask, and its step strategies agree."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from lab.models.sampling import categorical, kv_cached, recompute, sample
from lab.testing import make_checkpoint


def test_categorical_draws_follow_the_distribution():
    p = torch.tensor([[0.1, 0.0, 0.6, 0.3]], dtype=torch.float64).repeat(40_000, 1)
    draws = categorical(p.cumsum(-1), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4) / len(draws)
    assert freq[1] == 0  # a zero-probability token is never drawn
    assert torch.allclose(freq.double(), p[0], atol=0.01)
    unnormalised = categorical((3 * p[:5]).cumsum(-1), torch.Generator().manual_seed(0))
    assert torch.equal(unnormalised, draws[:5])  # the draw scales by the total mass


def test_categorical_never_draws_a_zero_probability_token_at_a_boundary(monkeypatch):
    # u exactly 0 (float32 rand can return it) or exactly a cdf value: the empty intervals of
    # zero-probability tokens (first, middle) are skipped; `cdf < u` drew token 0 at u = 0.
    cdf = torch.tensor([[0.0, 0.25, 0.25, 1.0]] * 2)
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor([[0.0], [0.25]]))
    assert categorical(cdf, None).tolist() == [1, 3]


def test_kv_cache_and_recompute_draw_the_same_tokens(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_checkpoint(tmp_path / "m", arch="llama"))
    model = model.double().eval()
    prompts = torch.randint(4, 300, (6, 3), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(model.config.vocab_size, dtype=torch.bool)
    mask[:4] = False
    with torch.no_grad():
        cached = sample(kv_cached(model), prompts, 12, torch.Generator().manual_seed(2), mask=mask)
        full = recompute(lambda t: model(t).logits.float())  # kv_cached gives float32
        again = sample(full, prompts, 12, torch.Generator().manual_seed(2), mask=mask)
    assert torch.equal(cached, again)
    assert torch.equal(cached[:, :3], prompts) and cached.shape == (6, 15)
    assert (cached[:, 3:] >= 4).all()  # masked tokens are never drawn
