"""Custom worlds from a file: state-emitting or edge-emitting HMMs given by their matrices.

A world file is JSON (or safetensors, with the same keys as tensors and the names as metadata)
in one of two forms, chosen by ``"kind"`` (inferred from the keys when absent):

``"kind": "state"`` (exactly ``HMM.to_dict()``, so a card's ``"world"`` works too)::

    {"kind": "state",
     "transition": [[...]],  # (scene, scene): P(next scene | scene), rows sum to 1
     "emission": [[...]],    # (scene, word): P(word | scene), rows sum to 1
     "initial": [...],       # (scene,): P(scene of the first word)
     "scenes": [...], "words": [...]}  # optional names

``"kind": "edge"`` (the emission depends on the transition, as in the belief-state-geometry
literature; Mess3 is one, see ``data/worlds/mess3.json``)::

    {"kind": "edge",
     "transitions": [[[...]]],  # (word, state, state): T[x][s, s'] = P(emit x, go to s' | s);
                                # for every s the sum over x and s' is 1
     "initial": [...],          # optional (state,): P(first state); default: stationary
     "states": [...], "words": [...]}  # optional names

Tokens are words as in ``lab.organism.world``: BOS is token 0 and word ``x`` is token ``x + 1``.
An edge-emitting HMM runs as the state-emitting HMM over pairs ``(s_t, s_{t+1})`` (``to_hmm``):
the pair emits ``x`` with ``T[x][s, s'] / P(s' | s)`` and moves to ``(s', s'')`` with
``P(s'' | s') = sum_x T[x][s', s'']``; pairs that never occur are dropped. The expanded world's
predictive belief summed over the second state (``state_beliefs``) is the edge HMM's belief
``P(s_{t+1} | words 1..t)``, the mixed state whose geometry the literature probes for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError, safe_open
from torch import Tensor

from lab.errors import LabError
from lab.organism.world import HMM, _check_stochastic

__all__ = ["EdgeHMM", "load_world", "read_world"]

_KEYS = {
    "state": ({"transition", "emission", "initial"}, {"scenes", "words", "kind"}),
    "edge": ({"transitions"}, {"initial", "states", "words", "kind"}),
}


def _matrix(x: object, key: str) -> Tensor:
    try:
        return torch.as_tensor(x, dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LabError(f"{key!r} must be a numeric array: {exc}") from exc


@dataclass(frozen=True)
class EdgeHMM:
    """A validated edge-emitting HMM: ``transitions[x, s, s'] = P(emit x, go to s' | s)``."""

    transitions: Float[Tensor, "word state state"]  # per word, P(emit it and move | state)
    initial: Float[Tensor, " state"] | None = None  # P(first state); None: the stationary one
    states: tuple[str, ...] = ()  # state names; default s0, s1, ...
    words: tuple[str, ...] = ()  # word strings (token id = index + 1); default w0, w1, ...
    moves: Tensor = field(init=False, repr=False)  # (state, state) P(s' | s), summed over words

    def __post_init__(self) -> None:
        t = _matrix(self.transitions, "transitions")
        if t.ndim != 3 or t.shape[1] != t.shape[2] or t.shape[0] < 1:
            raise LabError(
                f"'transitions' must have shape (word, state, state); got {tuple(t.shape)}."
            )
        n_words, n = t.shape[0], t.shape[1]
        if not torch.isfinite(t).all() or (t < 0).any():
            raise LabError("'transitions' must hold finite probabilities >= 0.")
        sums = t.sum((0, 2))
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
            bad = int((sums - 1).abs().argmax())
            raise LabError(
                f"'transitions' must sum to 1 over (word, next state) for every state; state "
                f"{bad} sums to {sums[bad]:.6f}. Normalise it."
            )
        t = t / sums[None, :, None]
        moves = t.sum(0)
        if self.initial is None:  # the state chain's stationary distribution
            chain = HMM(moves, torch.ones(n, 1), torch.full((n,), 1.0 / n))  # one dummy word
            initial = chain.stationary()
        else:
            initial = _matrix(self.initial, "initial")
            if initial.shape != (n,):
                raise LabError(f"'initial' must have shape ({n},); got {tuple(initial.shape)}.")
            try:
                _check_stochastic("initial", initial)
            except LabError as exc:
                raise LabError(f"'initial': {exc}") from exc
        states = tuple(self.states) or tuple(f"s{k}" for k in range(n))
        words = tuple(self.words) or tuple(f"w{k}" for k in range(n_words))
        if len(states) != n or len(set(states)) != n:
            raise LabError(f"'states' must be {n} distinct names; got {list(states)}.")
        if len(words) != n_words or len(set(words)) != n_words:
            raise LabError(f"'words' must be {n_words} distinct names; got {list(words)}.")
        for name, value in (
            ("transitions", t),
            ("initial", initial / initial.sum()),
            ("states", states),
            ("words", words),
            ("moves", moves),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_states(self) -> int:
        return self.transitions.shape[1]

    def pairs(self) -> list[tuple[int, int]]:
        """The (state, next state) pairs that can occur: the expanded world's scenes, in order."""
        return [
            (a, b)
            for a in range(self.n_states)
            for b in range(self.n_states)
            if self.moves[a, b] > 0
        ]

    def to_hmm(self) -> HMM:
        """The equivalent state-emitting HMM over (state, next state) pairs (module docstring)."""
        pairs = self.pairs()
        index = {p: i for i, p in enumerate(pairs)}
        trans = torch.zeros(len(pairs), len(pairs), dtype=torch.float64)
        for (_, b), i in index.items():
            for c in range(self.n_states):
                if (b, c) in index:
                    trans[i, index[b, c]] = self.moves[b, c]
        emission = torch.stack([self.transitions[:, a, b] / self.moves[a, b] for a, b in pairs])
        initial = torch.stack([self.initial[a] * self.moves[a, b] for a, b in pairs])
        names = tuple(f"{self.states[a]}>{self.states[b]}" for a, b in pairs)
        return HMM(trans, emission, initial, scenes=names, words=self.words)

    def state_beliefs(self, beliefs: Float[Tensor, "*batch pair"]) -> Float[Tensor, "*batch state"]:
        """The expanded world's predictive beliefs summed over the pair's second state: the
        edge HMM's belief ``P(s_{t+1} | words 1..t)``."""
        first = torch.zeros(len(self.pairs()), self.n_states, dtype=beliefs.dtype)
        for i, (a, _) in enumerate(self.pairs()):
            first[i, a] = 1.0
        return beliefs @ first

    def beliefs(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos state"]:
        """``P(s_{t+1} | words 1..t)`` by the edge HMM's own filter: ``eta_0 = initial`` and
        ``eta_t`` proportional to ``eta_{t-1} @ T[x_t]``."""
        hmm_words = tokens[:, 1:].long() - 1
        eta = self.initial.expand(tokens.shape[0], -1)
        out = [eta]
        for t in range(hmm_words.shape[1]):
            eta = torch.einsum("bs,bst->bt", eta, self.transitions[hmm_words[:, t]])
            eta = eta / eta.sum(-1, keepdim=True)
            out.append(eta)
        return torch.stack(out, 1)

    def to_dict(self) -> dict:
        return {
            "kind": "edge",
            "transitions": self.transitions.tolist(),
            "initial": self.initial.tolist(),
            "states": list(self.states),
            "words": list(self.words),
        }


def _parse(d: dict) -> HMM | EdgeHMM:
    if not isinstance(d, dict):
        raise LabError(
            "A world file must hold one object (a JSON dict); see lab.organism.worldfile."
        )
    kind = d.get("kind", "edge" if "transitions" in d else "state")
    if kind not in _KEYS:
        raise LabError(f"'kind' must be 'state' or 'edge'; got {kind!r}.")
    required, optional = _KEYS[kind]
    if missing := sorted(required - set(d)):
        raise LabError(f"A {kind!r} world needs the key(s) {', '.join(missing)}.")
    if unknown := sorted(set(d) - required - optional):
        valid = ", ".join(sorted(required | optional))
        raise LabError(f"Unknown key(s) {', '.join(unknown)} for a {kind!r} world; valid: {valid}.")
    for key in ("scenes", "states", "words"):
        if key in d and not (isinstance(d[key], list) and all(isinstance(w, str) for w in d[key])):
            raise LabError(f"{key!r} must be a list of strings.")
    if kind == "edge":
        return EdgeHMM(
            d["transitions"],
            d.get("initial"),
            states=tuple(d.get("states", ())),
            words=tuple(d.get("words", ())),
        )
    return HMM(
        _matrix(d["transition"], "transition"),
        _matrix(d["emission"], "emission"),
        _matrix(d["initial"], "initial"),
        scenes=tuple(d.get("scenes", ())),
        words=tuple(d.get("words", ())),
    )


def _read_safetensors(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            d: dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise LabError(f"not a readable safetensors file ({exc})") from exc
    for key, value in meta.items():
        try:
            d[key] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise LabError(f"metadata {key!r} must be JSON (e.g. a list of names)") from exc
    return d


def read_world(path: str | Path) -> HMM | EdgeHMM:
    """The world a file describes (module docstring); a bad file is a LabError naming it."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"No world file at {path}; give a JSON or safetensors file.")
    try:
        if path.suffix == ".safetensors":
            return _parse(_read_safetensors(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabError(f"not valid JSON ({exc})") from exc
        return _parse(data)
    except LabError as exc:
        raise LabError(f"World file {path}: {exc}") from exc


def load_world(path: str | Path) -> HMM:
    """The file's world as a state-emitting HMM (an edge-emitting one expanded by ``to_hmm``)."""
    world = read_world(path)
    return world.to_hmm() if isinstance(world, EdgeHMM) else world
