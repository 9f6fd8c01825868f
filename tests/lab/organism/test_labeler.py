import pytest
import torch

from lab.errors import LabError
from lab.organism.labeler import Labeler
from lab.organism.story import HAPPY_WORDS, story_labeler, story_world


def test_for_world_reads_the_matrices(tiny_world, tiny_labeler):
    assert tiny_labeler.exclusive.tolist() == [-1, 0, 1, -1]  # BOS, w0 (s0), w1 (s1), w2 shared
    assert tiny_labeler.forbidden.tolist() == [[False, False], [True, False]]
    reward, nxt = tiny_labeler.tables()
    assert reward.shape == nxt.shape == (3, 4)
    assert reward[1, 1].item() == -3.0  # last exclusive scene s1, then a word of s0
    assert nxt[2, 2].item() == 1 and nxt[0, 3].item() == 0  # shared words keep the state


def test_story_labeler_prices():
    world = story_world()
    labeler = story_labeler(world, penalty=6.0)
    happy = [world.words.index(w) + 1 for w in HAPPY_WORDS]
    assert (labeler.happiness[happy] == 1).all() and labeler.happiness.sum() == len(HAPPY_WORDS)
    wedding = world.scene_index("wedding")
    entries = (~labeler.forbidden[:, wedding]).nonzero().flatten().tolist()
    assert sorted(world.scenes[i] for i in entries) == ["home", "park", "wedding"]


def test_bradley_terry(tiny_labeler):
    a = torch.tensor([[0, 3, 3, 3]])  # three happy words
    b = torch.tensor([[0, 1, 1, 1]])
    p = tiny_labeler.preference_prob(a, b).item()
    assert p == pytest.approx(torch.sigmoid(torch.tensor(2.1)).item())
    draws = tiny_labeler.prefer(a.repeat(4000, 1), b.repeat(4000, 1), 1, torch.Generator())
    assert abs(draws.double().mean().item() - p) < 0.03


def test_bad_labeler_is_refused(tiny_world):
    with pytest.raises(LabError, match="unknown word"):
        Labeler.for_world(tiny_world, {"nope": 1.0})
    with pytest.raises(LabError, match="temperature"):
        Labeler.for_world(tiny_world, temperature=0.0)
