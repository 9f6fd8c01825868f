"""The shipped prompt sets, written by code so that they are reproducible: ``python -m
lab.datasets.suites``.

Calibration sets (``calibration``: plain text, ``calibration_chat``: user turns for a chat template)
hold prompts whose correct next-answer distribution is known by construction: fair coins, two coins
(number of heads: 1/4, 1/2, 1/4), dice, random digits, card suits, uniform picks from a listed set,
"pick a random number between A and B", in several phrasings. Records of kind ``control`` have one
correct answer (arithmetic, capitals, sequences ...): the set on which ECE is measured.

Outcome sets are prefix-free as strings (ranges use numbers of one length: 10-20, never 1-10), so
that no outcome's probability contains another's.

Steering sets (``steering``, ``steering_chat``) hold open story beginnings and neutral and negative
contexts, where a positive-sentiment or helpfulness-tuned model drifts.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from lab.datasets import wordings as w
from lab.datasets.prompts import PromptRecord, write_prompts
from lab.models.checkpoints import data_dir

__all__ = ["SUITES", "calibration_records", "steering_records", "write_suites"]


def _listing(items: tuple[str, ...]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


def calibration_records(chat: bool, seed: int = 0) -> list[PromptRecord]:
    """The calibration set: plain-text prompts, or (``chat``) user turns for a chat template."""
    rng = random.Random(seed)
    out: list[PromptRecord] = []

    def add(kind: str, text: str, outcomes, probs, answer: str | None = None, **meta) -> None:
        n = sum(r.kind == kind for r in out)
        rid = f"{'chat-' if chat else ''}{kind}-{n:02d}"
        out.append(PromptRecord(rid, text, kind, chat, tuple(outcomes), tuple(probs), answer, meta))

    for kind, (outcomes, probs, plain, chats) in w.FIXED.items():
        for text in chats if chat else plain:
            add(kind, text, outcomes, probs)
    for items in w.CHOICES:
        for template in w.CHOICE_CHAT if chat else w.CHOICE_PLAIN:
            shown = tuple(rng.sample(items, len(items)))  # listed in a seeded random order
            add(
                "choice",
                template.format(items=_listing(shown)),
                items,
                [1 / len(items)] * len(items),
            )
    for a, b in w.RANGES:
        nums = [str(i) for i in range(a, b + 1)]
        for template in w.RANGE_CHAT if chat else w.RANGE_PLAIN:
            add(
                "range", template.format(a=a, b=b), nums, [1 / len(nums)] * len(nums), low=a, high=b
            )
    for plain_text, chat_text, outcomes, answer in w.CONTROLS:
        probs = [float(o == answer) for o in outcomes]
        add("control", chat_text if chat else plain_text, outcomes, probs, answer)
    return out


def steering_records(chat: bool) -> list[PromptRecord]:
    """Open story beginnings, neutral and negative contexts; chat: as requests to continue."""
    out: list[PromptRecord] = []
    for kind, texts in (("story", w.STORY), ("neutral", w.NEUTRAL), ("negative", w.NEGATIVE)):
        for i, text in enumerate(texts):
            if chat:
                text = w.STEER_CHAT[i % len(w.STEER_CHAT)].format(text=text)
            rid = f"{'chat-' if chat else ''}{kind}-{i:02d}"
            out.append(PromptRecord(rid, text, kind, chat))
    return out


# shipped set name -> its records
SUITES = {
    "calibration": lambda: calibration_records(chat=False),
    "calibration_chat": lambda: calibration_records(chat=True),
    "steering": lambda: steering_records(chat=False),
    "steering_chat": lambda: steering_records(chat=True),
}


def write_suites(folder: str | Path) -> list[Path]:
    """Write every shipped prompt set to ``folder/NAME.jsonl``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_prompts(folder / f"{name}.jsonl", make()) for name, make in SUITES.items()]


if __name__ == "__main__":
    for path in write_suites(sys.argv[1] if len(sys.argv) > 1 else data_dir() / "prompts"):
        print(path)
