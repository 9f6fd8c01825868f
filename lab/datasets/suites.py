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

from lab.datasets.prompts import PromptRecord, write_prompts

__all__ = ["SUITES", "calibration_records", "steering_records", "write_suites"]

_COIN = ("heads", "tails")
_SUITS = ("hearts", "diamonds", "clubs", "spades")
_CHOICES = (
    ("red", "blue", "green", "yellow"),
    ("apple", "banana", "cherry", "orange"),
    ("A", "B", "C", "D"),
    ("cat", "dog", "horse", "rabbit"),
    ("Alice", "Bob", "Carol", "Dave", "Eve"),
)
_RANGES = ((1, 5), (1, 9), (2, 7), (10, 20), (11, 19), (30, 39))

# kind -> (outcomes, probs, plain phrasings, chat phrasings)
_FIXED: dict[str, tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...], tuple[str, ...]]] = {
    "coin": (
        _COIN,
        (0.5, 0.5),
        (
            "I flipped a fair coin and it landed on",
            "We tossed a fair coin. The result was",
            "Coin flip (fair coin). Outcome:",
            "She flipped a fair coin into the air. When it came down, it showed",
            "A fair coin is tossed once. It comes up",
        ),
        (
            "Flip a fair coin and tell me the result. Answer with one word: heads or tails.",
            "Simulate a fair coin toss. Reply with only heads or tails.",
            "Toss a coin for me. Just say heads or tails, nothing else.",
        ),
    ),
    "two_coins": (
        ("0", "1", "2"),
        (0.25, 0.5, 0.25),
        (
            "I flipped two fair coins. The number of heads was",
            "Two fair coins are tossed. Number of heads:",
            "After tossing two fair coins, the count of heads is",
        ),
        ("Flip two fair coins and tell me how many came up heads. Reply with only the number.",),
    ),
    "die": (
        tuple(str(i) for i in range(1, 7)),
        (1 / 6,) * 6,
        (
            "I rolled a fair six-sided die and got a",
            "Rolling a fair die. The number that came up is",
            "Die roll (fair, six-sided):",
            "He rolled a fair die. It showed a",
            "Roll of a fair d6. Result:",
        ),
        (
            "Roll a fair six-sided die. Reply with only the number.",
            "Simulate one roll of a fair die and tell me the number, nothing else.",
        ),
    ),
    "digit": (
        tuple(str(i) for i in range(10)),
        (0.1,) * 10,
        (
            "Here is a random digit from 0 to 9:",
            "A random digit, chosen uniformly:",
            "Random digit generator output:",
            "I picked a digit uniformly at random between 0 and 9. It is",
            "Uniform random digit (0-9):",
        ),
        (
            "Give me a random digit from 0 to 9. Reply with only the digit.",
            "Pick a digit uniformly at random. Answer with the digit alone.",
        ),
    ),
    "suit": (
        _SUITS,
        (0.25,) * 4,
        (
            "I drew a card at random from a well-shuffled deck. Its suit was",
            "A card drawn from a shuffled standard deck is of the suit",
            "Suit of a random card from a full deck:",
            "She cut a shuffled deck and turned over a card. The suit was",
        ),
        (
            "Draw a random card from a shuffled deck and tell me only its suit "
            "(hearts, diamonds, clubs or spades).",
            "Pick a random card suit. Reply with one word.",
        ),
    ),
}
_CHOICE_PLAIN = (
    "From the list {items}, I picked one at random. I picked",
    "Options: {items}. A uniformly random choice:",
    "Choose one of {items} at random. The choice is",
)
_CHOICE_CHAT = ("Pick one of these at random: {items}. Reply with only your choice.",)
_RANGE_PLAIN = (
    "Pick a random number between {a} and {b}. My number is",
    "Here is a number chosen uniformly at random from {a} to {b}:",
    "Random number between {a} and {b} (inclusive):",
    "I asked a friend to pick a random number from {a} to {b}, and she said",
)
_RANGE_CHAT = (
    "Pick a random number between {a} and {b}. Reply with only the number.",
    "Give me a random integer from {a} to {b} inclusive, nothing else.",
)

# Controls with one correct answer: (plain text, chat text, outcomes, answer)
_DIGITS = tuple(str(i) for i in range(10))
_CAPITALS = ("Paris", "London", "Berlin", "Madrid", "Rome")
_CONTROLS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    *(
        (f"{a} + {b} =", f"What is {a} + {b}? Reply with only the number.", _DIGITS, str(a + b))
        for a, b in ((2, 2), (1, 3), (3, 5), (4, 2), (6, 1), (2, 7), (5, 0), (3, 3))
    ),
    *(
        (
            f"The capital of {country} is",
            f"What is the capital of {country}? Reply with one word.",
            _CAPITALS,
            city,
        )
        for country, city in (
            ("France", "Paris"),
            ("Germany", "Berlin"),
            ("Spain", "Madrid"),
            ("Italy", "Rome"),
            ("the United Kingdom", "London"),
        )
    ),
    (
        "The color of the clear daytime sky is",
        "What color is the clear daytime sky? One word.",
        ("blue", "green", "red", "yellow"),
        "blue",
    ),
    (
        "The color of fresh grass is",
        "What color is fresh grass? One word.",
        ("blue", "green", "red", "yellow"),
        "green",
    ),
    (
        "Is water wet? Answer yes or no:",
        "Is water wet? Answer yes or no.",
        ("yes", "no"),
        "yes",
    ),
    (
        "Is the sun cold? Answer yes or no:",
        "Is the sun cold? Answer yes or no.",
        ("yes", "no"),
        "no",
    ),
    (
        "one, two, three, four,",
        "What comes after one, two, three, four? Reply with one word.",
        ("five", "six", "three", "ten"),
        "five",
    ),
    (
        "Monday, Tuesday, Wednesday,",
        "Which day comes after Wednesday? One word.",
        ("Thursday", "Friday", "Sunday", "Monday"),
        "Thursday",
    ),
    (
        "A, B, C, D,",
        "Which letter comes after D? Reply with the letter.",
        ("E", "F", "G", "H"),
        "E",
    ),
)


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

    for kind, (outcomes, probs, plain, chats) in _FIXED.items():
        for text in chats if chat else plain:
            add(kind, text, outcomes, probs)
    for items in _CHOICES:
        for template in _CHOICE_CHAT if chat else _CHOICE_PLAIN:
            shown = tuple(rng.sample(items, len(items)))  # listed in a seeded random order
            add(
                "choice",
                template.format(items=_listing(shown)),
                items,
                [1 / len(items)] * len(items),
            )
    for a, b in _RANGES:
        nums = [str(i) for i in range(a, b + 1)]
        for template in _RANGE_CHAT if chat else _RANGE_PLAIN:
            add(
                "range", template.format(a=a, b=b), nums, [1 / len(nums)] * len(nums), low=a, high=b
            )
    for plain_text, chat_text, outcomes, answer in _CONTROLS:
        probs = [float(o == answer) for o in outcomes]
        add("control", chat_text if chat else plain_text, outcomes, probs, answer)
    return out


_STORY = (
    "Once upon a time, in a small village by the sea,",
    "The old house at the end of the street had been empty for years. One evening,",
    "Maria opened the letter slowly.",
    "It was the first day of the new job, and Tom",
    "The train stopped in the middle of nowhere.",
    "When the storm finally ended, the children",
    "He had never seen the city from this high before.",
    "The last customer left the cafe, and the owner",
    "On the morning of the exam, Sara woke up and",
    "The ship's captain looked at the horizon and",
    "Nobody in the family talked about what happened that summer.",
    "The package arrived without a return address.",
)
_NEUTRAL = (
    "The meeting was scheduled for three o'clock. The agenda included",
    "The report describes the quarterly figures of the company.",
    "To assemble the shelf, first attach the side panels.",
    "The bus leaves the station every twenty minutes.",
    "The committee reviewed the budget and",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The library is open from nine to five on weekdays.",
    "She parked the car and walked to the office.",
    "The recipe calls for two cups of flour and",
    "The train to the airport was on time.",
)
_NEGATIVE = (
    "The funeral was held on a cold, rainy morning. Everyone",
    "After the factory closed, the town slowly",
    "The diagnosis was worse than they had feared.",
    "He lost his job, his savings and, finally, his home.",
    "The fire destroyed everything the family owned.",
    "She waited at the hospital all night, but the news",
    "The war had taken both of her brothers.",
    "The crops failed for the third year in a row, and",
    "Nobody came to his birthday party.",
    "The flood left the village under two meters of water.",
)
_STEER_CHAT = (
    "Continue this story in a few sentences: {text}",
    "Write what happens next: {text}",
)


def steering_records(chat: bool) -> list[PromptRecord]:
    """Open story beginnings, neutral and negative contexts; chat: as requests to continue."""
    out: list[PromptRecord] = []
    for kind, texts in (("story", _STORY), ("neutral", _NEUTRAL), ("negative", _NEGATIVE)):
        for i, text in enumerate(texts):
            if chat:
                text = _STEER_CHAT[i % len(_STEER_CHAT)].format(text=text)
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
    from lab.models.checkpoints import data_dir

    for path in write_suites(sys.argv[1] if len(sys.argv) > 1 else data_dir() / "prompts"):
        print(path)
