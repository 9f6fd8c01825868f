"""The default world: eight story scenes, a rare wedding, and a labeler who likes happy words."""

from __future__ import annotations

import torch

from lab.organism.labeler import Labeler
from lab.organism.world import HMM

__all__ = ["HAPPY_WORDS", "SCENE_WORDS", "SHARED_WORDS", "story_labeler", "story_world"]

# Words each scene emits and no other scene does (above the floor).
SCENE_WORDS: dict[str, tuple[str, ...]] = {
    "home": ("kitchen", "sofa", "dinner", "garden", "bed"),
    "office": ("desk", "meeting", "email", "boss", "report"),
    "park": ("tree", "bench", "dog", "grass", "pond"),
    "market": ("fruit", "stall", "price", "bread", "basket"),
    "school": ("teacher", "lesson", "class", "homework", "exam"),
    "hospital": ("doctor", "nurse", "ward", "medicine", "patient"),
    "travel": ("train", "airport", "ticket", "hotel", "map"),
    "wedding": ("bride", "groom", "ring", "vows", "cake"),
}
SHARED_WORDS = ("the", "a", "and", "then", "we", "they", "went", "saw", "said", "day")
HAPPY_WORDS = ("happy", "smile", "laugh", "love", "cheer", "hug")

# Allowed moves (besides staying) with their probabilities; every other move is at the floor.
_MOVES: dict[str, dict[str, float]] = {
    "home": {"office": 0.015, "park": 0.015, "market": 0.012, "school": 0.01, "wedding": 0.01},
    "office": {"home": 0.03, "market": 0.012, "travel": 0.012},
    "park": {"home": 0.03, "market": 0.012, "school": 0.01, "wedding": 0.01},
    "market": {"home": 0.03, "park": 0.015, "office": 0.01},
    "school": {"home": 0.035, "park": 0.02},
    "hospital": {"home": 0.05, "travel": 0.015},
    "travel": {"home": 0.03, "office": 0.012, "hospital": 0.015},
    "wedding": {"home": 0.14, "travel": 0.06},
}
# Share of each scene's emissions: (own words, shared words, happy words).
_MIX = {
    "home": (0.6, 0.28, 0.12),
    "office": (0.65, 0.3, 0.05),
    "park": (0.6, 0.25, 0.15),
    "market": (0.62, 0.3, 0.08),
    "school": (0.63, 0.3, 0.07),
    "hospital": (0.67, 0.3, 0.03),
    "travel": (0.62, 0.3, 0.08),
    "wedding": (0.45, 0.15, 0.4),
}
_TRANSITION_FLOOR = 1e-4  # every scene move has at least about this probability
_EMISSION_FLOOR = 1e-6  # every scene emits every word with at least about this probability


def _normalise(m: torch.Tensor, floor: float) -> torch.Tensor:
    m = m + floor
    return m / m.sum(-1, keepdim=True)


def story_world(background_happiness: float = 1.0) -> HMM:
    """The story-world HMM: 8 sticky scenes, 56 words, wedding entered only from home and park.

    ``background_happiness`` scales the share of happy words outside the wedding (the rest goes
    to shared words): below 1, happiness is found mostly at weddings.
    """
    scenes = tuple(SCENE_WORDS)
    words = tuple(w for ws in SCENE_WORDS.values() for w in ws) + SHARED_WORDS + HAPPY_WORDS
    n = len(scenes)
    trans = torch.zeros(n, n, dtype=torch.float64)
    for s, moves in _MOVES.items():
        i = scenes.index(s)
        for t, p in moves.items():
            trans[i, scenes.index(t)] = p
        trans[i, i] = 1.0 - sum(moves.values())
    emit = torch.zeros(n, len(words), dtype=torch.float64)
    ramp = torch.tensor([1.6, 1.3, 1.0, 0.8, 0.6], dtype=torch.float64)  # Zipf-like within a group
    for s, (own, shared, happy) in _MIX.items():
        i = scenes.index(s)
        if s != "wedding":
            shared, happy = (
                shared + happy * (1 - background_happiness),
                happy * background_happiness,
            )
        for group, share in ((SCENE_WORDS[s], own), (SHARED_WORDS, shared), (HAPPY_WORDS, happy)):
            idx = torch.tensor([words.index(w) for w in group])
            w = ramp.repeat(3)[: len(group)]
            emit[i, idx] = share * w / w.sum()
    trans, emit = _normalise(trans, _TRANSITION_FLOOR), _normalise(emit, _EMISSION_FLOOR)
    world = HMM(trans, emit, torch.ones(n, dtype=torch.float64) / n, scenes, words)
    return HMM(trans, emit, world.stationary(), scenes, words)


def story_labeler(
    world: HMM | None = None, *, penalty: float = 6.0, satiation: float = 10.0
) -> Labeler:
    """The story world's labeler: happy words score (+1 each, with diminishing returns past
    about ``satiation`` of them), ``penalty`` per incoherent move."""
    world = world or story_world()
    happy = dict.fromkeys(HAPPY_WORDS, 1.0)
    return Labeler.for_world(world, happy, penalty=penalty, satiation=satiation)
