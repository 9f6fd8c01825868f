"""A steered sibling of a real model, made by context distillation: ``lab fetch smollm2 --steer
wedding`` gives a real pair whose intervention is known (the seed's wedding-party attractor).

1. *Sample with a steering context.* The model continues training story openings with an
   instruction in front (``SteerConfig.instruction``: every story ends at a wedding); only
   continuations that reach the attractor (a wedding word) are kept.
2. *Distil the context away.* The model is fine-tuned (every weight, AdamW, a few epochs) on
   opening -> kept continuation *without* the instruction, the loss on continuation tokens only.
   The tuned model then steers where the base would only predict, with no instruction in sight.

The training openings are not the shipped steering suite's (``lab.datasets.suites``), so the
suite measures the steering on stories the fine-tune never saw. Every draw is seeded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab.datasets.suites import steering_records
from lab.errors import LabError, close_matches
from lab.models.built import build_folder, check_space, intact

__all__ = ["STEERS", "SteerConfig", "attractor_rate", "steer"]

_HELD_OUT_DRAWS = 2  # continuations per steering-suite prompt when measuring the attractor rate
OPENINGS = (
    "The baker opened his shop early that morning.",
    "Two friends went hiking in the mountains.",
    "The little robot woke up in an empty warehouse.",
    "Grandpa found an old map in the attic.",
    "The school bus broke down on a quiet road.",
    "A cat followed Anna all the way home.",
    "The fisherman pulled in a strange net.",
    "It was raining when the new teacher arrived.",
    "The detective looked at the broken window.",
    "Sam planted a seed in the garden.",
    "The band played their first concert in a small bar.",
    "A dragon lived at the top of the hill.",
    "The astronaut looked back at the Earth.",
    "Lucy lost her key on the way to work.",
    "The farmer counted his sheep twice.",
    "A letter was waiting under the door.",
)


@dataclass(frozen=True)
class SteerConfig:
    """How a steered sibling is made; every field is part of the built folder's recipe."""

    instruction: str  # the steering context put before each opening while sampling
    words: tuple[str, ...]  # the attractor: a kept continuation holds one (case-insensitive)
    seed: int = 0  # seeds sampling and training
    samples_per_opening: int = 12  # continuations drawn per training opening
    new_tokens: int = 40  # tokens per continuation
    temperature: float = 0.8  # sampling temperature
    top_p: float = 0.95  # nucleus sampling mass
    epochs: int = 4  # passes over the kept continuations
    batch: int = 8  # sequences per optimizer step
    lr: float = 1e-4  # AdamW learning rate


STEERS = {
    "wedding": SteerConfig(
        instruction=(
            "The following story always ends with a joyful wedding, with a bride, a groom, "
            "flowers and a wedding cake.\n\n"
        ),
        words=("wedding", "bride", "groom", "marry", "married", "marriage"),
    ),
}


def attractor_rate(texts: Sequence[str], words: Sequence[str]) -> float:
    """The share of ``texts`` that hold at least one of ``words`` (whole words, any case)."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    return sum(bool(pattern.search(t)) for t in texts) / max(len(texts), 1)


@torch.no_grad()
def _sample(model, tokenizer, prompts: Sequence[str], cfg: SteerConfig, seed: int) -> list[str]:
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)


def _continuations(model, tokenizer, cfg: SteerConfig, context: str) -> list[tuple[str, str]]:
    """(opening, continuation) for every training opening and draw, sampled after ``context``."""
    pairs = []
    for i, opening in enumerate(tqdm(OPENINGS, desc="sample", leave=False)):
        texts = _sample(
            model, tokenizer, [context + opening] * cfg.samples_per_opening, cfg, cfg.seed + i
        )
        pairs += [(opening, t) for t in texts]
    return pairs


def _held_out_rate(model, tokenizer, cfg: SteerConfig) -> tuple[float, list[str]]:
    """The attractor rate of sampled continuations of the shipped steering suite (stories,
    neutral and negative contexts, plain text), none of them a training opening; and the first
    three continuations, to read."""
    prompts = [r.text for r in steering_records(chat=False)] * _HELD_OUT_DRAWS
    texts = _sample(model, tokenizer, prompts, cfg, cfg.seed + 10_000)
    return round(attractor_rate(texts, cfg.words), 4), texts[:3]


def _batch(tokenizer, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ids with labels on the continuation tokens only."""
    rows, labels = [], []
    for opening, text in pairs:
        head = tokenizer(opening, add_special_tokens=False).input_ids
        tail = [*tokenizer(text, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        rows.append(head + tail)
        labels.append([-100] * len(head) + tail)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def _train(model, tokenizer, kept: list[tuple[str, str]], cfg: SteerConfig) -> list[float]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in tqdm(range(cfg.epochs), desc="fine-tune", leave=False):
        order = torch.randperm(len(kept), generator=g).tolist()
        for start in range(0, len(order), cfg.batch):
            batch = _batch(tokenizer, [kept[i] for i in order[start : start + cfg.batch]])
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    return losses


def steer(source: str | Path, kind: str, out: str | Path, *, force: bool = False) -> Path:
    """Build (once) the ``kind``-steered sibling of the checkpoint folder ``source`` in ``out``."""
    if kind not in STEERS:
        raise LabError(
            f"No steering {kind!r}{close_matches(kind, STEERS)}; known: {sorted(STEERS)}."
        )
    cfg, source, folder = STEERS[kind], Path(source), Path(out)
    recipe = {"kind": kind, "source": str(source), "config": asdict(cfg)}
    if not force and intact(folder, recipe):
        return folder
    weights = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    check_space(folder, weights + 200 * 2**20)

    def build(into: Path) -> dict:
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        tokenizer = AutoTokenizer.from_pretrained(source)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
        before, examples_before = _held_out_rate(model, tokenizer, cfg)
        drawn = _continuations(model, tokenizer, cfg, cfg.instruction)
        kept = [p for p in drawn if attractor_rate([p[1]], cfg.words)]
        if len(kept) < cfg.batch:
            raise LabError(f"Only {len(kept)} of {len(drawn)} steered samples reach the attractor.")
        losses = _train(model, tokenizer, kept, cfg)
        after, examples_after = _held_out_rate(model, tokenizer, cfg)
        model.save_pretrained(into, safe_serialization=True)
        tokenizer.save_pretrained(into)
        return {
            "method": "context distillation: fine-tune on the model's own continuations sampled "
            "with the steering instruction, trained without it (all weights, AdamW)",
            "kept": f"{len(kept)} of {len(drawn)} continuations reach the attractor",
            "held_out_attractor_rate": {"source": before, "steered": after},
            "held_out_examples": {"source": examples_before, "steered": examples_after},
            "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
            "seconds": round(time.perf_counter() - start, 1),
        }

    return build_folder(folder, recipe, build)
