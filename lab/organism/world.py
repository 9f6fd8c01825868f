"""A hidden Markov world with exact inference: the organism's ground truth.

Any HMM given by matrices works: ``HMM(transition, emission, initial)``. Tokens are words: token 0
is BOS and word ``i`` is token ``i + 1``; every sequence starts with BOS. Hidden scene ``z_t``
emits the word at position ``t >= 1``.

Conventions (all exact, float64, computed in log space):
- ``beliefs[b, t]`` is the predictive belief state ``P(z_{t+1} | tokens[b, :t+1])``, the
  distribution over the scene of the *next* word; at BOS it is ``initial``.
- ``filtered[b, t]`` is ``P(z_t | tokens[b, :t+1])`` for ``t >= 1`` and ``initial`` at BOS.
- ``next_token_logprobs[b, t]`` is ``log P(token t+1 | tokens[b, :t+1])`` over the vocabulary
  (``-inf`` on BOS, which the world never emits after the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from lab.errors import LabError
from lab.models.sampling import categorical
from lab.organism.tokenizer import BOS, word_tokenizer

__all__ = ["HMM", "Forward", "WorldSample"]

_ATOL = 1e-6
# The float64 matrices of an HMM, as ``to_dict`` writes them and ``from_dict`` reads them.
_MATRICES = ("transition", "emission", "initial")


def _check_stochastic(name: str, matrix: Tensor) -> None:
    if not torch.isfinite(matrix).all():
        raise LabError(f"HMM {name} has non-finite entries; give finite probabilities.")
    if (matrix < 0).any():
        raise LabError(f"HMM {name} has negative entries; probabilities must be >= 0.")
    sums = matrix.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=_ATOL):
        bad = (sums - 1).abs().argmax().item()
        raise LabError(
            f"HMM {name} rows must sum to 1 (row {bad} sums to {sums.reshape(-1)[bad]:.6f}); "
            "normalise it, e.g. matrix / matrix.sum(-1, keepdim=True)."
        )


@dataclass(frozen=True)
class Forward:
    """The forward algorithm's output for a batch of sequences (see the module docstring)."""

    beliefs: Float[Tensor, "batch pos scene"]  # P(scene of next word | prefix)
    filtered: Float[Tensor, "batch pos scene"]  # P(scene of this word | prefix)
    next_token_logprobs: Float[Tensor, "batch pos vocab"]  # log P(next token | prefix)
    token_logprobs: Float[Tensor, "batch pos"]  # log P(token t | prefix before t); 0 at BOS

    @property
    def log_likelihood(self) -> Float[Tensor, " batch"]:
        """log P(sequence) under the world."""
        return self.token_logprobs.sum(-1)


@dataclass(frozen=True)
class WorldSample:
    """Sequences drawn from a world, with their hidden scenes and exact inference."""

    tokens: Int[Tensor, "batch pos"]  # BOS then words
    scenes: Int[Tensor, "batch pos"]  # hidden scene of each word; -1 at BOS (and in prompts)
    forward: Forward  # exact beliefs and predictive distributions


@dataclass(frozen=True)
class HMM:
    """A validated hidden Markov model over word tokens, with exact inference and sampling.

    Build one from matrices (``HMM(transition, emission, initial)``); names are optional.
    Invalid input (rows not summing to one, negative entries, shape mismatches) raises LabError.
    """

    transition: Float[Tensor, "scene scene"]  # P(next scene | scene), rows sum to 1
    emission: Float[Tensor, "scene word"]  # P(word | scene), rows sum to 1; BOS excluded
    initial: Float[Tensor, " scene"]  # P(scene of the first word)
    scenes: tuple[str, ...] = ()  # scene names; default s0, s1, ...
    words: tuple[str, ...] = ()  # word strings (token id = index + 1); default w0, w1, ...
    log_transition: Tensor = field(init=False, repr=False)  # cached log of transition
    log_emission: Tensor = field(init=False, repr=False)  # (scene, vocab) log P, -inf on BOS

    def __post_init__(self) -> None:
        def as64(x: object, name: str) -> Tensor:
            try:
                return torch.as_tensor(x, dtype=torch.float64).clone()
            except (TypeError, ValueError) as exc:
                raise LabError(f"HMM {name} must be a numeric matrix: {exc}") from exc

        t, e = as64(self.transition, "transition"), as64(self.emission, "emission")
        i = as64(self.initial, "initial")
        if t.ndim != 2 or t.shape[0] != t.shape[1]:
            raise LabError(f"HMM transition must be square (scene, scene); got {tuple(t.shape)}.")
        n = t.shape[0]
        if e.ndim != 2 or e.shape[0] != n:
            raise LabError(
                f"HMM emission must be (scene={n}, word); got {tuple(e.shape)}. "
                "Give one row of word probabilities per scene."
            )
        if i.shape != (n,):
            raise LabError(f"HMM initial must have shape ({n},); got {tuple(i.shape)}.")
        for name, m in (("transition", t), ("emission", e), ("initial", i)):
            _check_stochastic(name, m)
        # exact normalisation after validation (inputs may carry float32 rounding)
        t, e, i = (m / m.sum(-1, keepdim=True) for m in (t, e, i))
        scenes = tuple(self.scenes) or tuple(f"s{k}" for k in range(n))
        words = tuple(self.words) or tuple(f"w{k}" for k in range(e.shape[1]))
        if len(scenes) != n or len(set(scenes)) != n:
            raise LabError(f"HMM needs {n} distinct scene names; got {scenes}.")
        if len(words) != e.shape[1] or len(set(words)) != len(words) or BOS in words:
            raise LabError(f"HMM needs {e.shape[1]} distinct word names (not {BOS!r}).")
        set_ = object.__setattr__
        for name, value in (("transition", t), ("emission", e), ("initial", i)):
            set_(self, name, value)
        set_(self, "scenes", scenes)
        set_(self, "words", words)
        set_(self, "log_transition", t.log())
        log_e = torch.full((n, e.shape[1] + 1), -math.inf, dtype=torch.float64)
        log_e[:, 1:] = e.log()
        set_(self, "log_emission", log_e)

    # ---- sizes and names -------------------------------------------------------------------
    @property
    def n_scenes(self) -> int:
        return self.transition.shape[0]

    @property
    def vocab_size(self) -> int:
        """Words plus BOS."""
        return len(self.words) + 1

    @property
    def bos_id(self) -> int:
        """BOS is token 0."""
        return 0

    @property
    def vocab(self) -> list[str]:
        """Token strings by id: BOS then the words."""
        return [BOS, *self.words]

    def scene_index(self, name: str) -> int:
        if name not in self.scenes:
            raise LabError(f"Unknown scene {name!r}; the world has {', '.join(self.scenes)}.")
        return self.scenes.index(name)

    def stationary(self) -> Float[Tensor, " scene"]:
        """The stationary distribution of the scene chain (power iteration)."""
        p = torch.full((self.n_scenes,), 1.0 / self.n_scenes, dtype=torch.float64)
        for _ in range(10_000):
            nxt = p @ self.transition
            if (nxt - p).abs().max() < 1e-15:
                break
            p = nxt
        return p / p.sum()

    # ---- exact inference -------------------------------------------------------------------
    def check_tokens(self, tokens: Tensor) -> Tensor:
        """Validate a (batch, pos) token tensor: BOS first, only words after, ids in range."""
        if tokens.ndim != 2 or tokens.shape[1] < 1:
            raise LabError(f"tokens must be (batch, pos) with pos >= 1; got {tuple(tokens.shape)}.")
        tokens = tokens.long().cpu()
        if (tokens[:, 0] != self.bos_id).any():
            raise LabError("Every sequence must start with BOS (token 0); prepend it.")
        if tokens.shape[1] > 1 and ((tokens[:, 1:] < 1) | (tokens[:, 1:] >= self.vocab_size)).any():
            raise LabError(f"Tokens after BOS must be word ids in 1..{self.vocab_size - 1}.")
        return tokens

    def initial_log_belief(self, batch: int) -> Tensor:
        return self.initial.log().expand(batch, -1).clone()

    def step(self, log_belief: Tensor, token: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One forward step: (log P(token | prefix), log filtered, log next belief)."""
        joint = log_belief + self.log_emission[:, token].T  # (batch, scene)
        log_p = torch.logsumexp(joint, -1)
        log_f = joint - log_p[:, None]
        # filtered beliefs are normalised, so the product in probability space is exact in float64
        log_b = (log_f.exp() @ self.transition).log()
        return log_p, log_f, log_b

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Forward:
        """The exact forward algorithm (log space) at every position of every sequence."""
        tokens = self.check_tokens(tokens)
        batch, pos = tokens.shape
        log_b = self.initial_log_belief(batch)
        beliefs, filtered, tok_lp = [log_b], [log_b], [torch.zeros(batch, dtype=torch.float64)]
        for t in range(1, pos):
            log_p, log_f, log_b = self.step(log_b, tokens[:, t])
            beliefs.append(log_b)
            filtered.append(log_f)
            tok_lp.append(log_p)
        log_beliefs = torch.stack(beliefs, 1)  # (batch, pos, scene)
        nxt = (log_beliefs.exp() @ self.log_emission.exp()).log()  # (batch, pos, vocab)
        return Forward(
            beliefs=log_beliefs.exp(),
            filtered=torch.stack(filtered, 1).exp(),
            next_token_logprobs=nxt,
            token_logprobs=torch.stack(tok_lp, 1),
        )

    def log_likelihood(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
        """log P(tokens) under the world (BOS is given, not scored)."""
        return self.forward(tokens).log_likelihood

    # ---- sampling --------------------------------------------------------------------------
    def sample(
        self, n: int, length: int, generator: torch.Generator | None = None, **options
    ) -> WorldSample:
        """Draw ``n`` sequences of ``length`` words after BOS, with exact inference attached.

        Shape ``(n, length + 1)``. ``options`` are ``draw``'s keyword options: with ``prompts``
        (BOS-first, ``n`` rows), the words continue each prompt from its exact belief state up
        to ``length`` words in total; ``transition`` optionally replaces the scene chain for the
        sampled words (e.g. a noisier chain).
        """
        tokens, scenes = self.draw(n, length, generator, **options)
        return WorldSample(tokens=tokens, scenes=scenes, forward=self.forward(tokens))

    def draw(
        self,
        n: int,
        length: int,
        generator: torch.Generator | None = None,
        *,
        prompts: Int[Tensor, "batch prompt"] | None = None,
        transition: Float[Tensor, "scene scene"] | None = None,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Like ``sample`` but only (tokens, scenes): the fast path for training data."""
        if length < 1 or n < 1:
            raise LabError(f"sample needs n >= 1 and length >= 1; got n={n}, length={length}.")
        trans = self.transition if transition is None else torch.as_tensor(transition).double()
        if prompts is None:
            probs = self.initial.expand(n, -1)
            prompts = torch.full((n, 1), self.bos_id, dtype=torch.long)
        else:
            prompts = self.check_tokens(prompts)
            if prompts.shape[0] != n or prompts.shape[1] > length + 1:
                raise LabError(
                    f"prompts must be (n={n}, <= {length + 1}); got {tuple(prompts.shape)}."
                )
            probs = self.forward(prompts).beliefs[:, -1]
        tokens = torch.empty(n, length + 1, dtype=torch.long)
        scenes = torch.full((n, length + 1), -1, dtype=torch.long)
        start = prompts.shape[1]
        tokens[:, :start] = prompts
        emit_cdf, trans_cdf = self.emission.cumsum(-1), trans.cumsum(-1)
        z = categorical(probs.cumsum(-1), generator)
        for t in range(start, length + 1):
            if t > start:
                z = categorical(trans_cdf[z], generator)
            tokens[:, t] = categorical(emit_cdf[z], generator) + 1
            scenes[:, t] = z
        return tokens, scenes

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready description (matrices as nested lists) that ``from_dict`` restores."""
        return {
            "scenes": list(self.scenes),
            "words": list(self.words),
            **{k: getattr(self, k).tolist() for k in _MATRICES},
        }

    @classmethod
    def from_dict(cls, d: dict) -> HMM:
        matrices = {k: torch.tensor(d[k], dtype=torch.float64) for k in _MATRICES}
        return cls(**matrices, scenes=tuple(d["scenes"]), words=tuple(d["words"]))

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """A HF fast tokenizer whose ids match the world's tokens (``word_tokenizer``)."""
        return word_tokenizer(self.vocab)

    def save_tokenizer(self, folder: str | Path) -> None:
        self.tokenizer().save_pretrained(str(folder))

    def decode(self, tokens: Int[Tensor, " pos"]) -> str:
        return " ".join(self.vocab[int(t)] for t in tokens)
