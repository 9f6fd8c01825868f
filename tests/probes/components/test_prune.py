"""Attribution-pruned classification: exact where the attribution mass is, estimates elsewhere."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from lab import LabError
from lab.organism import load as load_organism
from lab.organism.story import SCENE_WORDS
from probes.components import ClassifyConfig, classify, score_components, top_steering
from probes.components.prune import select_candidates
from probes.patching.metrics import TokenSetProb

SCORES = ["value", "lo", "hi", "gap", "gap_lo", "gap_hi", "within_noise", "label"]
KEYS = ["component", "model", "score", "metric"]


def _tokens(n: int = 16, pos: int = 8) -> torch.Tensor:
    tokens = torch.randint(4, 300, (n, pos), generator=torch.Generator().manual_seed(3))
    tokens[:, 0] = 0
    return tokens


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request, loaded_pair):
    pair = loaded_pair(request.param)
    cfg = ClassifyConfig(n_chunks=4, n_boot=100)
    tokens = _tokens()
    return pair, tokens, cfg, classify(pair, tokens, config=cfg)


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(KEYS).reset_index(drop=True)


def test_prune_mass_zero_equals_the_exhaustive_classify(tiny):
    pair, tokens, cfg, full = tiny
    pruned = classify(pair, tokens, config=dataclasses.replace(cfg, prune_mass=0.0))
    assert pruned.exact.all() and len(pruned) == len(full)
    pd.testing.assert_frame_equal(_sorted(pruned)[KEYS + SCORES], _sorted(full)[KEYS + SCORES])
    assert full.estimate.isna().all() and pruned.estimate.notna().all()
    assert (pruned.mass_left_out == 0).all()
    steer = pruned.query("score == 'steering' and model == 'tuned'")
    assert steer.rank_corr.between(-1, 1).all()  # attribution's ranking of the exact shares


def test_pruning_skips_what_it_says(tiny):
    pair, tokens, cfg, full = tiny
    pruned = classify(pair, tokens, config=dataclasses.replace(cfg, prune_mass=0.3, max_exact=4))
    exact = set(pruned[pruned.exact].component)
    assert 1 <= len(exact) <= 4 and set(pruned.component) == set(full.component)
    # every score of a candidate is exact, in both models; every other one an estimate
    assert pruned.groupby("component").exact.nunique().eq(1).all()
    # the candidates are the components selected from the steering estimates into tuned
    est = pruned.query("score == 'steering' and model == 'tuned'")
    est = est.assign(effect=est.estimate * est.gap)
    assert set(select_candidates(est, 0.3, 4)) == exact
    # an exact score is the exhaustive run's (same chunks, same bootstrap draws per group)
    ex = _sorted(pruned[pruned.exact]).set_index(KEYS)
    ref = _sorted(full).set_index(KEYS).loc[ex.index]
    pd.testing.assert_series_equal(ex.value, ref.value)
    # a skipped score is attribution's estimate, without an interval
    skipped = pruned[~pruned.exact]
    assert (skipped.value == skipped.estimate).all() and skipped[["lo", "hi"]].isna().all().all()
    assert (skipped.query("score == 'steering'").gap.notna()).all()
    left = est.mass_left_out.iloc[0]
    assert 0 < left < 1 and est.mass_left_out.nunique() == 1
    assert set(top_steering(pruned, n=10).component) <= exact  # estimates are no finding


def test_selection_keeps_mass_until_below_the_fraction():
    est = pd.DataFrame(
        {
            "component": ["a", "b", "c", "d"] * 2,
            "metric": ["kl"] * 4 + ["att"] * 4,
            "effect": [-6.0, 3.0, 1.0, 0.0, 0.0, 0.1, 0.0, 0.9],
        }
    )
    # kl: a (0.6) leaves 0.4, a+b leave 0.1, a+b+c leave 0; att: d (0.9) leaves 0.1, d+b 0;
    # order: best rank in any metric, then the larger mass there (d 0.9 before a 0.6)
    assert select_candidates(est, 0.5) == ["d", "a"]
    assert select_candidates(est, 0.15) == ["d", "a", "b"]
    assert select_candidates(est, 0.05) == ["d", "a", "b", "c"]
    assert select_candidates(est, 0.0) == ["d", "a", "b", "c"]  # 0: every component
    assert select_candidates(est, 0.05, max_exact=2) == ["d", "a"]
    flat = est.assign(effect=0.0)
    assert len(select_candidates(flat, 0.5)) == 1 and len(select_candidates(flat, 0.0)) == 4


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"prune_mass": 1.0}, "prune_mass must be in"),
        ({"prune_mass": -0.1}, "prune_mass must be in"),
        ({"prune_mass": float("nan")}, "prune_mass must be in"),
        ({"prune_mass": "5%"}, "prune_mass must be a number"),
        ({"prune_mass": 0.05, "max_exact": 0}, "max_exact must be"),
        ({"prune_mass": 0.05, "max_exact": 2.5}, "max_exact must be"),
        ({"max_exact": 10}, "give prune_mass too"),
    ],
)
def test_bad_pruning_is_refused(options, match):
    with pytest.raises(LabError, match=match):
        ClassifyConfig(**options)


def test_pruned_organism_keeps_its_planted_steering():
    """On the shipped organism (truth as reference, the wedding words' probability as a steering
    metric): prune_mass = 0 is the exhaustive result; pruning keeps its top steering component."""
    org = load_organism()
    pair = org.pair
    tokens = org.world.sample(32, 12, torch.Generator().manual_seed(0)).tokens
    words = SCENE_WORDS["wedding"]
    ids = tuple(pair.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words)
    steering = {"attractor_prob": TokenSetProb(positions=tuple(range(12)), tokens=ids)}
    cfg = ClassifyConfig(n_chunks=4, n_boot=100)
    full = classify(pair, tokens, steering=steering, config=cfg)
    zero = classify(pair, tokens, steering=steering, config=dataclasses.replace(cfg, prune_mass=0))
    pd.testing.assert_frame_equal(_sorted(zero)[KEYS + SCORES], _sorted(full)[KEYS + SCORES])
    pruned = classify(
        pair, tokens, steering=steering, config=dataclasses.replace(cfg, prune_mass=0.2)
    )
    assert not pruned.exact.all()
    top = top_steering(full, n=1, metric="attractor_prob").component[0]
    assert top in set(pruned[pruned.exact].component)
    raw = score_components(
        pair, tokens, steering=steering, config=dataclasses.replace(cfg, prune_mass=0.2)
    )
    assert set(raw.chunk) == {-1, 0, 1, 2, 3} and not raw[raw.chunk == -1].exact.any()
