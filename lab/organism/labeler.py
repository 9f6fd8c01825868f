"""A simulated human labeler whose utility is known exactly.

The utility of a sequence is a sum of per-token terms driven by a small deterministic state:
- every token scores ``happiness[token]`` (happy words are good);
- an *incoherent move* costs ``penalty``: a word exclusive to scene ``s'`` that follows (skipping
  shared words) a word exclusive to scene ``s`` where ``s -> s'`` is a forbidden transition.

With ``satiation`` s, happy words have diminishing returns: the k-th happy word (k = 0, 1, ...)
is worth ``happiness * (1 - k / s)``, so past about s of them more happiness is worse (a reader
tires of relentless cheer). The state is the scene of the last exclusive word seen (``n_scenes`` =
none yet) together with the number of happy words so far, so the utility
is additive along the chain over (hidden scene, last exclusive scene): ``lab.organism.bayes``
uses exactly this to compute pi*. Comparisons follow Bradley-Terry:
``P(a preferred to b) = sigmoid((U(a) - U(b)) / temperature)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.organism.world import HMM

__all__ = ["Labeler"]


@dataclass(frozen=True)
class Labeler:
    """The labeler's true utility and noise; build one with ``Labeler.for_world``."""

    happiness: Float[Tensor, " vocab"]  # utility of emitting each token (0 for BOS)
    exclusive: Int[Tensor, " vocab"]  # scene owning each exclusive word; -1 for shared and BOS
    forbidden: Bool[Tensor, "scene scene"]  # True where moving scene -> scene' is incoherent
    penalty: float  # utility cost of one incoherent move
    temperature: float  # Bradley-Terry noise scale of the comparisons
    satiation: float = math.inf  # happy words after which one more is worth 0 (inf: no satiation)
    max_count: int = 32  # happy words counted exactly; later ones are valued as the last counted

    def __post_init__(self) -> None:
        n = self.forbidden.shape[0]
        if self.forbidden.shape != (n, n) or self.happiness.shape != self.exclusive.shape:
            raise LabError("Labeler shapes disagree: forbidden (scene, scene), vectors (vocab,).")
        if self.penalty < 0 or self.temperature <= 0:
            raise LabError("Labeler needs penalty >= 0 and temperature > 0.")
        if self.satiation <= 0 or self.max_count < 0:
            raise LabError("Labeler needs satiation > 0 (inf for none) and max_count >= 0.")
        if int(self.exclusive.max()) >= n:
            raise LabError(f"Labeler exclusive scenes must be < {n} (the number of scenes).")

    @classmethod
    def for_world(
        cls,
        world: HMM,
        happiness: dict[str, float] | None = None,
        *,
        penalty: float = 6.0,
        temperature: float = 1.0,
        satiation: float = math.inf,
        forbidden_below: float = 1e-3,
        horizon: int = 1,
        exclusive_ratio: float = 50.0,
    ) -> Labeler:
        """Derive incoherence from the world's matrices.

        A move s -> s' is forbidden when the world's chance of going from s to s' in k steps is
        below ``forbidden_below`` for every k <= ``horizon`` (a brief visit to a scene may emit
        no exclusive word, so the labeler looks a few steps ahead); a word is
        exclusive to scene s when s emits it at least ``exclusive_ratio`` times more often than
        any other scene. ``happiness`` maps word strings to utilities (others score 0).
        """
        happy = torch.zeros(world.vocab_size, dtype=torch.float64)
        for word, value in (happiness or {}).items():
            if word not in world.words:
                raise LabError(f"Happiness names unknown word {word!r}; use the world's words.")
            happy[world.words.index(word) + 1] = value
        e = world.emission  # (scene, word)
        top2 = e.topk(min(2, e.shape[0]), dim=0).values
        second = top2[1] if e.shape[0] > 1 else torch.zeros_like(top2[0])
        owner = e.argmax(0)
        exclusive = torch.where(top2[0] >= exclusive_ratio * second, owner, torch.tensor(-1))
        exclusive = torch.cat([torch.tensor([-1]), exclusive]).long()
        power, reach = world.transition, world.transition
        for _ in range(horizon - 1):
            power = power @ world.transition
            reach = torch.maximum(reach, power)
        forbidden = reach < forbidden_below
        forbidden.fill_diagonal_(False)
        return cls(happy, exclusive, forbidden, float(penalty), float(temperature), satiation)

    @property
    def _levels(self) -> int:
        """Happy-word counts the state distinguishes (1 without satiation)."""
        return self.max_count + 1 if math.isfinite(self.satiation) else 1

    @property
    def n_states(self) -> int:
        """(last exclusive scene or none) x (happy words so far, up to max_count)."""
        return (self.forbidden.shape[0] + 1) * self._levels

    @property
    def initial_state(self) -> int:
        """No exclusive word and no happy word yet."""
        return self.forbidden.shape[0]

    def tables(self) -> tuple[Float[Tensor, "state vocab"], Int[Tensor, "state vocab"]]:
        """Per-(state, token) utility and the next state: the chain that ``bayes`` recurses over."""
        reward, nxt, _ = self._tables()
        return reward, nxt

    def _tables(self) -> tuple[Tensor, Tensor, Tensor]:
        n1, vocab = self.forbidden.shape[0] + 1, self.happiness.shape[0]
        state = torch.arange(self.n_states)
        scene, count = state % n1, state // n1  # state = count * n1 + last exclusive scene
        excl = self.exclusive[None].expand(self.n_states, vocab)
        next_scene = torch.where(excl >= 0, excl, scene[:, None])
        happy = (self.happiness > 0).long()[None]
        next_count = (count[:, None] + happy).clamp(max=self._levels - 1)
        padded = torch.zeros(n1, n1, dtype=torch.bool)
        padded[: n1 - 1, : n1 - 1] = self.forbidden
        incoherent = padded[scene[:, None], excl.clamp(min=0)] & (excl >= 0)
        value = 1.0 - count.double() / self.satiation  # marginal value of a happy word
        reward = self.happiness[None] * value[:, None] - self.penalty * incoherent.double()
        return reward, next_count * n1 + next_scene, incoherent

    def _scan(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        reward, nxt, bad = self._tables()
        state = torch.full((tokens.shape[0],), self.initial_state, dtype=torch.long)
        rewards, incoherent = [torch.zeros(tokens.shape[0], dtype=torch.float64)], [state < 0]
        tokens = tokens.long().cpu()
        for t in range(1, tokens.shape[1]):
            x = tokens[:, t]
            r = reward[state, x]
            rewards.append(r)
            incoherent.append(bad[state, x])
            state = nxt[state, x]
        return torch.stack(rewards, 1), torch.stack(incoherent, 1)

    def token_utilities(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
        """Utility earned by each token given its prefix (0 at BOS)."""
        return self._scan(tokens)[0]

    def incoherent_moves(self, tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
        """Where each sequence makes an incoherent move."""
        return self._scan(tokens)[1]

    def utility(self, tokens: Int[Tensor, "batch pos"], start: int = 1) -> Float[Tensor, " batch"]:
        """U of the tokens at positions >= ``start`` (a continuation), given the whole prefix."""
        return self.token_utilities(tokens)[:, start:].sum(-1)

    def preference_prob(self, a: Tensor, b: Tensor, start: int = 1) -> Float[Tensor, " batch"]:
        """P(the labeler prefers continuation a to b) under Bradley-Terry."""
        diff = self.utility(a, start) - self.utility(b, start)
        return torch.sigmoid(diff / self.temperature)

    def prefer(
        self, a: Tensor, b: Tensor, start: int = 1, generator: torch.Generator | None = None
    ) -> Bool[Tensor, " batch"]:
        """Noisy labels: True where a is preferred."""
        p = self.preference_prob(a, b, start)
        return torch.rand(p.shape, generator=generator, dtype=torch.float64) < p

    def to_dict(self) -> dict:
        return {
            "happiness": self.happiness.tolist(),
            "exclusive": self.exclusive.tolist(),
            "forbidden": self.forbidden.tolist(),
            "penalty": self.penalty,
            "temperature": self.temperature,
            "satiation": self.satiation if math.isfinite(self.satiation) else None,
            "max_count": self.max_count,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Labeler:
        return cls(
            happiness=torch.tensor(d["happiness"], dtype=torch.float64),
            exclusive=torch.tensor(d["exclusive"], dtype=torch.long),
            forbidden=torch.tensor(d["forbidden"], dtype=torch.bool),
            penalty=float(d["penalty"]),
            temperature=float(d["temperature"]),
            satiation=math.inf if d.get("satiation") is None else float(d["satiation"]),
            max_count=int(d.get("max_count", 32)),
        )
