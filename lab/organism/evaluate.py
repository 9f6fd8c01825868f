"""Loading a trained organism and measuring it against the exact world, labeler and pi*.

``load()`` is the one call a notebook makes: the shipped pair as hooked models (``org.pair``)
with its world, labeler and reward model. ``load_organism(folder)`` reads ``base/``, ``rlhf/``
(and ``peak/``, ``reward/`` when present) with their cards, as HF models, without the pair;
``evaluate_organism`` returns one metrics dict per row: ``world``, ``base``, ``rlhf``,
``pi_star`` (and ``peak``, ``reward_model``), all on the same held-out world data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from lab.errors import LabError
from lab.models.checkpoints import load_model, local_checkpoint, organism_dir
from lab.models.outputs import hidden_states, model_logprobs
from lab.models.pair import ModelPair, load_pair
from lab.organism.bayes import PiStar
from lab.organism.labeler import Labeler
from lab.organism.metrics import (
    as_policy,
    belief_probe_r2,
    generation_metrics,
    prediction_metrics,
)
from lab.organism.reward import RewardModel
from lab.organism.world import HMM

__all__ = [
    "EvalConfig",
    "EvalData",
    "Organism",
    "evaluate_organism",
    "evaluate_policy",
    "load",
    "load_organism",
    "read_card",
]


@dataclass(frozen=True)
class EvalConfig:
    """Held-out data for evaluation (seeded apart from every training seed)."""

    texts: int = 1024  # world sequences for prediction metrics and belief probes
    prompts: int = 512  # world prompts for behaviour metrics (one continuation each)
    seed: int = 1_000_003  # seed of the held-out data and of the continuations


@dataclass(frozen=True)
class EvalData:
    """World text and prompts shared by every row of one evaluation."""

    texts: torch.Tensor  # (texts, length + 1) world sequences
    prompts: torch.Tensor  # (prompts, prompt_words + 1) world prompts

    @classmethod
    def draw(cls, world: HMM, length: int, prompt_words: int, cfg: EvalConfig) -> EvalData:
        g = torch.Generator().manual_seed(cfg.seed)
        return cls(world.draw(cfg.texts, length, g)[0], world.draw(cfg.prompts, prompt_words, g)[0])


@dataclass
class Organism:
    """A world with its labeler, and the models trained on it."""

    world: HMM  # the ground-truth HMM
    labeler: Labeler  # the simulated human
    beta: float  # KL coefficient of the RLHF objective (and of pi*)
    length: int  # words per sequence after BOS
    prompt_words: int  # words of world prompt before each continuation
    models: dict[str, GPT2LMHeadModel] = field(default_factory=dict)  # base, rlhf, peak
    reward_model: RewardModel | None = None  # the learned reward model, if saved
    cards: dict[str, dict] = field(default_factory=dict)  # card.json of each folder
    pair: ModelPair | None = None  # base and rlhf as hooked TransformerBridge models (``load``)

    def pi_star(self) -> PiStar:
        return PiStar(self.world, self.labeler, self.beta, self.length)


def read_card(folder: Path) -> dict:
    """The ``card.json`` of one organism checkpoint folder (how it was made, its metrics)."""
    path = folder / "card.json"
    if not path.exists():
        raise LabError(f"{folder} has no card.json; is it an organism checkpoint folder?")
    return json.loads(path.read_text())


def load_organism(folder: str | Path) -> Organism:
    """Read an organism folder written by ``lab organism train``."""
    folder = Path(folder)
    if not (folder / "base").is_dir() or not (folder / "rlhf").is_dir():
        raise LabError(
            f"{folder} is not an organism folder (needs base/ and rlhf/); "
            "make one with `lab organism train --out DIR`."
        )
    card = read_card(folder / "rlhf")
    org = Organism(
        world=HMM.from_dict(card["world"]),
        labeler=Labeler.from_dict(card["labeler"]),
        beta=card["beta"],
        length=card["length"],
        prompt_words=card["prompt_words"],
    )
    for name in ("base", "rlhf", "peak"):
        if (folder / name).is_dir():
            ckpt = local_checkpoint(folder / name)
            org.models[name] = load_model(GPT2LMHeadModel, ckpt).eval()
            org.cards[name] = read_card(folder / name)
    if (folder / "reward").is_dir():
        org.reward_model = RewardModel.load(folder / "reward")
        org.cards["reward"] = read_card(folder / "reward")
    return org


def load(
    folder: str | Path | None = None,
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
) -> Organism:
    """The organism in one call: world, labeler, reward model and the pair, ready to analyse.

    ``folder`` defaults to the shipped organism (``data/organism``, or ``$STEERLAB_DATA``)::

        org = lab.organism.load()
        org.pair                       # ModelPair(base, tuned = rlhf), hooked models on ``device``
        org.world, org.labeler         # the exact HMM and the simulated human
        org.reward_model, org.beta     # the learned reward model, the KL coefficient
        org.length, org.prompt_words   # words per sequence, words of prompt before a continuation
        org.models                     # the same checkpoints as HF models (``evaluate_organism``)

    ``device`` is the CPU by default (the organism is tiny, and world samples are CPU tensors);
    ``dtype`` as in ``lab.load_pair``.
    """
    root = Path(folder) if folder is not None else organism_dir("")
    org = load_organism(root)
    # the shipped pair by its name, so that the pair says where it came from
    base, tuned = ("organism", None) if folder is None else (root / "base", root / "rlhf")
    return replace(org, pair=load_pair(base, tuned, device=device, dtype=dtype))


def evaluate_policy(
    policy: HMM | PiStar | torch.nn.Module,
    org: Organism,
    data: EvalData,
    *,
    base: torch.nn.Module | None = None,
    pi_star: PiStar | None = None,
    probe: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Every metric of one policy: prediction on world text, behaviour on its continuations."""
    wrapped = as_policy(policy)
    out = prediction_metrics(wrapped.next_token_logprobs(data.texts), org.world, data.texts)
    samples = wrapped.sample(data.prompts, org.length, generator)
    own = wrapped.next_token_logprobs(samples[:, :-1])
    base_lp = model_logprobs(base, samples[:, :-1]) if base is not None else None
    rm = org.reward_model
    out |= generation_metrics(
        samples,
        org.prompt_words + 1,
        org.world,
        org.labeler,
        logprobs=own,
        base_logprobs=base_lp,
        pi_star=pi_star,
        reward_model=(lambda t, s: torch.cat([rm(x, s) for x in t.split(256)])) if rm else None,
    )
    if probe:
        beliefs = org.world.forward(data.texts).beliefs
        out |= belief_probe_r2(hidden_states(policy, data.texts), beliefs)
    return out


@torch.no_grad()
def evaluate_organism(org: Organism, cfg: EvalConfig | None = None) -> dict[str, dict]:
    """Metrics for world, base, rlhf (and peak), pi* and the reward model on shared data."""
    cfg = cfg or EvalConfig()
    data = EvalData.draw(org.world, org.length, org.prompt_words, cfg)
    pi_star = org.pi_star()
    base = org.models.get("base")
    rows: dict[str, dict] = {}
    policies: dict[str, HMM | PiStar | torch.nn.Module] = {
        "world": org.world,
        **org.models,
        "pi_star": pi_star,
    }
    for name, policy in policies.items():
        g = torch.Generator().manual_seed(cfg.seed + 1)
        is_model = isinstance(policy, torch.nn.Module)
        rows[name] = evaluate_policy(
            policy, org, data, base=base, pi_star=pi_star, probe=is_model, generator=g
        )
    rows["pi_star"]["objective"] = pi_star.objective(data.prompts)
    # pi* rarely makes an observed near-impossible move: floor its rate at one per sample set
    floor = 1.0 / (cfg.prompts * (org.length - org.prompt_words))
    star_rate = max(rows["pi_star"]["impossible_transition_rate"], floor)
    for name in org.models:
        rate = rows[name]["impossible_transition_rate"]
        rows[name]["impossible_transition_ratio_vs_pi_star"] = rate / star_rate
    curve = org.cards.get("rlhf", {}).get("curve")
    if curve:
        rows["rlhf"] |= over_optimisation(curve)
    if org.reward_model is not None:
        rows["reward_model"] = dict(org.cards.get("reward", {}).get("metrics", {}))
    return rows


def over_optimisation(curve: list[dict], window: int = 3) -> dict[str, float]:
    """Gao et al.'s signature along RLHF training, from the logged curve (moving averages over
    ``window`` points): true utility and RM score at the true-utility peak and at the end."""

    def smooth(key: str) -> list[float]:
        vals = [p[key] for p in curve]
        return [
            sum(vals[max(0, i - window + 1) : i + 1]) / len(vals[max(0, i - window + 1) : i + 1])
            for i in range(len(vals))
        ]

    utility, rm = smooth("true_utility"), smooth("rm_score")
    peak = max(range(len(utility)), key=utility.__getitem__)
    return {
        "curve_peak_step": curve[peak]["step"],
        "curve_true_utility_peak": utility[peak],
        "curve_true_utility_final": utility[-1],
        "curve_rm_score_at_peak": rm[peak],
        "curve_rm_score_final": rm[-1],
    }
