"""Sampling for steering: tokens a model may not emit (BOS, padding ...) are never drawn."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lab import LabError, load_pair
from lab.models.sampling import emittable
from lab.organism.story import story_world
from lab.sweeps import sweep
from probes.sampling import sample


class _BosLover(torch.nn.Module):
    """A "model" whose next-token logits put almost all the mass on BOS (token 0)."""

    def __init__(self, vocab: int = 6) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([8.0] + [0.0] * (vocab - 1)))
        self.tokenizer = story_world().tokenizer()  # BOS = EOS = pad = unk = token 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*tokens.shape, -1)


def test_sampling_never_draws_a_special_token():
    model = _BosLover().eval()
    prompts = torch.zeros(64, 1, dtype=torch.long)
    out = sample(model, prompts, 8, torch.Generator().manual_seed(0))
    assert out.shape == (64, 9)
    assert (out[:, 0] == 0).all()
    assert (out[:, 1:] != 0).all()  # the old sampler drew BOS ~99.7% of the time here
    # the remaining ids are drawn from the renormalised distribution: uniform over 1..5
    counts = torch.bincount(out[:, 1:].reshape(-1), minlength=6)[1:].float()
    assert counts.sum() == 64 * 8 and (counts / counts.sum() - 0.2).abs().max() < 0.05


def test_an_explicit_allowed_set_replaces_the_default():
    model = _BosLover().eval()
    prompts = torch.zeros(16, 1, dtype=torch.long)
    out = sample(model, prompts, 4, torch.Generator().manual_seed(0), allowed=[1, 3])
    assert set(out[:, 1:].unique().tolist()) == {1, 3}
    mask = emittable(model, 6, torch.tensor([False, True, True, False, False, False]))
    assert mask.tolist() == [False, True, True, False, False, False]
    assert emittable(model, 6).tolist() == [False, True, True, True, True, True]
    no_tokenizer = torch.nn.Linear(1, 1)
    assert emittable(no_tokenizer, 4).all()
    with pytest.raises(LabError, match=r"outside 0\.\.5"):
        emittable(model, 6, [9])
    with pytest.raises(LabError, match="No token is allowed"):
        emittable(model, 6, [])


def test_sampling_from_the_organism_never_emits_bos_mid_sequence():
    pair = load_pair("organism", device="cpu")
    world = story_world()
    prompts = world.draw(32, 4, torch.Generator().manual_seed(0))[0]
    out = sample(pair.tuned, prompts, 27, torch.Generator().manual_seed(0))
    assert (out[:, 1:] != world.bos_id).all()
    world.check_tokens(out)  # what the joint analysis's scene_reach runs


def test_joint_analysis_on_the_organism_runs(tmp_path):
    """Finding 3's config: organism pair, n = 64, classify then joint with n_prompts = 32."""
    out = sweep.run(
        {
            "run": {"out": str(tmp_path / "run"), "device": "cpu", "seed": 0},
            "pairs": {"organism": {"base": "organism", "tuned": "organism"}},
            "datasets": {"world": {"source": "organism", "n": 64}},
            "analyses": [
                {"kind": "classify", "pair": "organism", "dataset": "world"},
                {"kind": "joint", "pair": "organism", "dataset": "world", "n_prompts": 32},
            ],
        }
    )
    joint = pd.read_parquet(out / "joint.parquet").set_index("metric")["value"]
    for name in ("tuned", "base", "patched"):
        assert 0.0 <= joint[f"reach_{name}"] <= 1.0
    assert joint["kl_to_base_tuned"] > 0
