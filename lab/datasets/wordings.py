"""The wording of the shipped prompt sets (``lab.datasets.suites`` turns it into records).

Calibration: ``FIXED`` maps a kind to its outcomes, their true probabilities, and its plain and
chat phrasings; ``CHOICES`` and ``RANGES`` are uniform picks, phrased by the ``CHOICE_*`` and
``RANGE_*`` templates; ``CONTROLS`` have one correct answer (plain text, chat text, outcomes,
answer). Outcome sets are prefix-free as strings (ranges use numbers of one length: 10-20, never
1-10). Steering: ``STORY``, ``NEUTRAL`` and ``NEGATIVE`` texts, and the ``STEER_CHAT`` requests
that wrap them for a chat template.
"""

from __future__ import annotations

__all__ = [
    "CHOICES",
    "CHOICE_CHAT",
    "CHOICE_PLAIN",
    "CONTROLS",
    "FIXED",
    "NEGATIVE",
    "NEUTRAL",
    "RANGES",
    "RANGE_CHAT",
    "RANGE_PLAIN",
    "STEER_CHAT",
    "STORY",
]

_COIN = ("heads", "tails")
_SUITS = ("hearts", "diamonds", "clubs", "spades")
CHOICES = (
    ("red", "blue", "green", "yellow"),
    ("apple", "banana", "cherry", "orange"),
    ("A", "B", "C", "D"),
    ("cat", "dog", "horse", "rabbit"),
    ("Alice", "Bob", "Carol", "Dave", "Eve"),
)
RANGES = ((1, 5), (1, 9), (2, 7), (10, 20), (11, 19), (30, 39))

# kind -> (outcomes, probs, plain phrasings, chat phrasings)
FIXED: dict[str, tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...], tuple[str, ...]]] = {
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
CHOICE_PLAIN = (
    "From the list {items}, I picked one at random. I picked",
    "Options: {items}. A uniformly random choice:",
    "Choose one of {items} at random. The choice is",
)
CHOICE_CHAT = ("Pick one of these at random: {items}. Reply with only your choice.",)
RANGE_PLAIN = (
    "Pick a random number between {a} and {b}. My number is",
    "Here is a number chosen uniformly at random from {a} to {b}:",
    "Random number between {a} and {b} (inclusive):",
    "I asked a friend to pick a random number from {a} to {b}, and she said",
)
RANGE_CHAT = (
    "Pick a random number between {a} and {b}. Reply with only the number.",
    "Give me a random integer from {a} to {b} inclusive, nothing else.",
)

# Controls with one correct answer: (plain text, chat text, outcomes, answer)
_DIGITS = tuple(str(i) for i in range(10))
_CAPITALS = ("Paris", "London", "Berlin", "Madrid", "Rome")
_COLORS = ("blue", "green", "red", "yellow")
CONTROLS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
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
    *(
        (f"The color of {thing} is", f"What color is {thing}? One word.", _COLORS, color)
        for thing, color in (("the clear daytime sky", "blue"), ("fresh grass", "green"))
    ),
    *(
        (f"{question} Answer yes or no:", f"{question} Answer yes or no.", ("yes", "no"), answer)
        for question, answer in (("Is water wet?", "yes"), ("Is the sun cold?", "no"))
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

# Steering sets: open story beginnings, neutral and negative contexts.
STORY = (
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
NEUTRAL = (
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
NEGATIVE = (
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
STEER_CHAT = (
    "Continue this story in a few sentences: {text}",
    "Write what happens next: {text}",
)
