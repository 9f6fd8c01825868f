"""The reward model: a transformer with a scalar head, trained on the labeler's preferences.

Pairs are two continuations of one world prompt, drawn from the world with a slightly jumpy scene
chain (so a few incoherent moves appear), and labeled by the simulated human with Bradley-Terry
noise. The model is the base's trunk plus a linear head on the mean-pooled continuation states,
stored as an HF ``GPT2ForSequenceClassification`` folder (``transformer.*`` and ``score.weight``);
note that HF's own forward pools the last token, so score with ``RewardModel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

from lab.models.checkpoints import load_model, local_checkpoint
from lab.organism.labeler import Labeler
from lab.organism.world import HMM

__all__ = ["RewardConfig", "RewardModel", "blind_spot", "preference_pairs", "train_reward_model"]


@dataclass(frozen=True)
class RewardConfig:
    """Preference data and optimisation of the reward model."""

    pairs: int = 4000  # labeled pairs to train on
    held_out: int = 1000  # further labeled pairs for the accuracy report
    prompt_words: int = 7  # words of world prompt before each continuation
    jump_rate: float = 0.01  # weight of a uniform move mixed into the labeled continuations' chain
    epochs: int = 3  # passes over the training pairs
    batch: int = 64  # pairs per step
    lr: float = 5e-4  # AdamW learning rate of the trunk
    head_lr: float = 5e-3  # AdamW learning rate of the scalar head (initialised at zero)


class RewardModel(torch.nn.Module):
    """Scalar reward of a continuation: linear head on the mean of its final hidden states."""

    def __init__(self, hf: GPT2ForSequenceClassification) -> None:
        super().__init__()
        self.hf = hf

    @classmethod
    def from_base(cls, base: GPT2LMHeadModel) -> RewardModel:
        config = base.config.to_dict()
        config.update(num_labels=1, architectures=["GPT2ForSequenceClassification"])
        hf = GPT2ForSequenceClassification(type(base.config).from_dict(config))
        hf.transformer.load_state_dict(base.transformer.state_dict())
        torch.nn.init.zeros_(hf.score.weight)
        return cls(hf)

    def forward(self, tokens: Int[Tensor, "batch pos"], start: int) -> Float[Tensor, " batch"]:
        """Reward of ``tokens[:, start:]`` as a continuation of ``tokens[:, :start]``."""
        hidden = self.hf.transformer(
            tokens, attention_mask=torch.ones_like(tokens)
        ).last_hidden_state
        return self.hf.score(hidden[:, start:].mean(1)).squeeze(-1)

    def save(self, folder: str | Path) -> None:
        self.hf.save_pretrained(str(folder), safe_serialization=True)

    @classmethod
    def load(cls, folder: str | Path) -> RewardModel:
        """The reward model saved at ``folder`` (safetensors only, under the lab's load policy)."""
        ckpt = local_checkpoint(folder)
        return cls(load_model(GPT2ForSequenceClassification, ckpt)).eval()


def preference_pairs(
    world: HMM, labeler: Labeler, n: int, length: int, cfg: RewardConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(a, b, a_preferred): ``n`` pairs of full sequences sharing a world prompt."""
    start = cfg.prompt_words + 1
    prompts = world.draw(n, cfg.prompt_words, generator)[0]
    uniform = torch.full_like(world.transition, 1.0 / world.n_scenes)
    jumpy = (1 - cfg.jump_rate) * world.transition + cfg.jump_rate * uniform
    a = world.draw(n, length, generator, prompts=prompts, transition=jumpy)[0]
    b = world.draw(n, length, generator, prompts=prompts, transition=jumpy)[0]
    return a, b, labeler.prefer(a, b, start, generator)


def _pair_loss(rm: RewardModel, a: Tensor, b: Tensor, a_wins: Tensor, start: int) -> Tensor:
    margin = rm(a, start) - rm(b, start)
    sign = a_wins.float() * 2 - 1
    return torch.nn.functional.softplus(-sign * margin).mean()


@torch.no_grad()
def _accuracy(rm: RewardModel, a: Tensor, b: Tensor, a_wins: Tensor, start: int) -> float:
    pairs = zip(a.split(256), b.split(256), strict=True)
    margin = torch.cat([rm(x, start) - rm(y, start) for x, y in pairs])
    return ((margin > 0) == a_wins).float().mean().item()


def train_reward_model(
    base: GPT2LMHeadModel,
    world: HMM,
    labeler: Labeler,
    cfg: RewardConfig,
    length: int,
    seed: int = 0,
    progress: bool = True,
) -> tuple[RewardModel, dict[str, float]]:
    """Fit a reward model on fresh labeled pairs; returns it with held-out accuracies."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    start = cfg.prompt_words + 1
    a, b, wins = preference_pairs(world, labeler, cfg.pairs + cfg.held_out, length, cfg, g)
    train = slice(0, cfg.pairs)
    test = slice(cfg.pairs, None)
    rm = RewardModel.from_base(base).train()
    groups = [
        {"params": rm.hf.transformer.parameters(), "lr": cfg.lr},
        {"params": rm.hf.score.parameters(), "lr": cfg.head_lr},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    steps = cfg.epochs * (cfg.pairs // cfg.batch)
    for step in tqdm(range(steps), desc="reward model", disable=not progress, mininterval=5):
        if step % (cfg.pairs // cfg.batch) == 0:
            order = torch.randperm(cfg.pairs, generator=g)
        idx = order[(step % (cfg.pairs // cfg.batch)) * cfg.batch :][: cfg.batch]
        loss = _pair_loss(rm, a[train][idx], b[train][idx], wins[train][idx], start)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rm.eval()
    truth = labeler.utility(a[test], start) > labeler.utility(b[test], start)
    return rm, {
        "held_out_accuracy": _accuracy(rm, a[test], b[test], wins[test], start),
        "labeler_self_accuracy": (truth == wins[test]).float().mean().item(),
        "held_out_agreement_with_true_utility": _accuracy(rm, a[test], b[test], truth, start),
        **blind_spot(rm, world, labeler, length, cfg, g),
    }


@torch.no_grad()
def blind_spot(
    rm: RewardModel,
    world: HMM,
    labeler: Labeler,
    length: int,
    cfg: RewardConfig,
    generator: torch.Generator,
    n: int = 2000,
) -> dict[str, float]:
    """How the reward model prices happy words and incoherent moves, against the truth.

    Least squares of the RM score on (happy-word utility, number of incoherent moves, 1) over
    held-out continuations; the true coefficients are 1 and ``-penalty``. The RM's scale is free,
    so ``rm_incoherence_price`` (incoherence over happiness coefficient) is the comparable number.
    """
    start = cfg.prompt_words + 1
    a, b, _ = preference_pairs(world, labeler, n, length, cfg, generator)
    tokens = torch.cat([a, b])
    score = torch.cat([rm(x, start) for x in tokens.split(256)]).double()
    moves = labeler.incoherent_moves(tokens)[:, start:].double().sum(1)
    happy = labeler.happiness[tokens[:, start:]].sum(1)
    x = torch.stack([happy, moves, torch.ones_like(happy)], 1)
    coef = torch.linalg.lstsq(x, score[:, None]).solution.squeeze(1)
    return {
        "rm_happy_coef": coef[0].item(),
        "rm_incoherence_coef": coef[1].item(),
        "true_incoherence_coef": -labeler.penalty,
        # the price of one incoherent move in units of happy utility (truth: the penalty)
        "rm_incoherence_price": (-coef[1] / coef[0]).item(),
        "incoherent_share_of_labeled": (moves > 0).double().mean().item(),
    }
