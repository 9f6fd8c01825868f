"""The practitioner's reward: a reward model or any reward function, checked against the pair.

A reward scores continuations: ``score(tokens, start) -> [batch]``, the reward of
``tokens[:, start:]`` after the prompt ``tokens[:, :start]`` (``lab.organism.RewardModel``'s
call). ``as_reward`` wraps a reward model or a function; ``load_reward_model`` reads a reward
model folder with its tokenizer. ``check_reward`` refuses a reward whose tokenizer (or
vocabulary size) differs from the model's: its token ids would mean other words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lab.errors import LabError
from lab.models.checkpoints import load_tokenizer, local_checkpoint
from lab.organism.reward import RewardModel

__all__ = ["Reward", "as_reward", "check_reward", "load_reward_model"]

_CHUNK = 256  # sequences scored at once


@dataclass(frozen=True)
class Reward:
    """A reward of continuations, with the tokenizer (or vocabulary size) it reads."""

    score: Callable[[Tensor, int], Tensor]  # (tokens [batch pos], start) -> reward [batch]
    tokenizer: PreTrainedTokenizerBase | None = None  # the tokenizer its ids come from, if known
    vocab: int | None = None  # its vocabulary size, if known
    name: str = "reward"  # for messages

    @torch.no_grad()
    def __call__(self, tokens: Int[Tensor, "batch pos"], start: int) -> Float[Tensor, " batch"]:
        return torch.cat([self.score(t, start).double().cpu() for t in tokens.split(_CHUNK)])


def as_reward(
    reward: Reward | RewardModel | Callable[[Tensor, int], Tensor],
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Reward:
    """A ``Reward`` from a reward model (its vocabulary read from its config) or a function."""
    if isinstance(reward, Reward):
        return reward
    if isinstance(reward, RewardModel):
        tok = tokenizer or getattr(reward, "tokenizer", None)
        vocab = int(reward.hf.config.vocab_size)
        name = str(reward.hf.config.name_or_path or "reward model")
        return Reward(reward, tok, vocab, name)
    if callable(reward):
        return Reward(reward, tokenizer, None, getattr(reward, "__name__", "reward function"))
    raise LabError(
        f"Cannot use a {type(reward).__name__} as a reward; pass a RewardModel or a function "
        "(tokens, start) -> reward per sequence."
    )


def load_reward_model(folder: str | Path) -> Reward:
    """The reward model saved at ``folder`` with the tokenizer saved beside it."""
    model = RewardModel.load(folder)
    return as_reward(model, load_tokenizer(local_checkpoint(folder), "reward"))


def _first_difference(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> str:
    va, vb = a.get_vocab(), b.get_vocab()
    for token, i in sorted(va.items(), key=lambda kv: kv[1]):
        if vb.get(token) != i:
            return f"{token!r} is id {i} in the reward's, {vb.get(token)} in the model's"
    return "their vocabularies differ"


def check_reward(
    reward: Reward, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None = None
) -> None:
    """Refuse a reward whose tokenizer or vocabulary differs from the model's (``tokenizer``:
    the pair's, when the model does not carry one)."""
    theirs = tokenizer or getattr(model, "tokenizer", None)
    vocab = int(model.cfg.d_vocab) if hasattr(model, "cfg") else int(model.config.vocab_size)
    if reward.vocab is not None and reward.vocab != vocab:
        raise LabError(
            f"The reward ({reward.name}) reads a vocabulary of {reward.vocab} tokens; the model "
            f"has {vocab}. Use a reward model trained with this pair's tokenizer."
        )
    known = reward.tokenizer is not None and theirs is not None
    if known and reward.tokenizer.get_vocab() != theirs.get_vocab():
        raise LabError(
            f"The reward's tokenizer ({reward.name}) differs from the pair's: "
            f"{_first_difference(reward.tokenizer, theirs)}. Use a reward model trained "
            "with this pair's tokenizer."
        )
