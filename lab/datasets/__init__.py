"""Datasets and prompt sets: token sequences with targets and labels, and JSONL prompts.

``Dataset`` holds sequences, per-position targets and per-sequence labels and cuts them into
padded ``Batch`` es; ``prompts`` reads, writes and renders prompt sets (chat or plain);
``outcomes`` tokenizes a calibration record's answers. ``python -m lab.datasets.suites`` writes
the shipped prompt sets (not imported here, so that it runs as a script without a warning).
"""

from lab.datasets.batch import Batch, Padding
from lab.datasets.dataset import Dataset
from lab.datasets.outcomes import Ids, outcome_sequences, spellings, word_separator
from lab.datasets.prompts import (
    PLAIN_CHAT,
    RENDER_MODES,
    PromptRecord,
    RenderedPrompt,
    find_chat_template,
    list_prompt_sets,
    parse_set_spec,
    prompt_set_path,
    read_prompts,
    render,
    render_set,
    write_prompts,
)

__all__ = [
    "PLAIN_CHAT",
    "RENDER_MODES",
    "Batch",
    "Dataset",
    "Ids",
    "Padding",
    "PromptRecord",
    "RenderedPrompt",
    "find_chat_template",
    "list_prompt_sets",
    "outcome_sequences",
    "parse_set_spec",
    "prompt_set_path",
    "read_prompts",
    "render",
    "render_set",
    "spellings",
    "word_separator",
    "write_prompts",
]
