"""Prompt sets: reading and checking JSONL, rendering with and without a chat template."""

from __future__ import annotations

import json

import pytest

from lab.datasets.prompts import (
    PLAIN_CHAT,
    PromptRecord,
    parse_set_spec,
    read_prompts,
    render,
    write_prompts,
)
from lab.errors import LabError
from lab.testing import make_tokenizer

TEMPLATE = (
    "{% for m in messages %}<bos>User: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _write(tmp_path, rows, name="set.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_read_fields_defaults_and_meta(tmp_path):
    path = _write(
        tmp_path,
        [
            {"text": "Flip:", "outcomes": ["heads", "tails"], "probs": [0.5, 0.5], "low": 1},
            {
                "id": "q",
                "text": "2+2=",
                "kind": "control",
                "chat": True,
                "outcomes": ["4", "5"],
                "probs": [1, 0],
                "answer": "4",
            },
        ],
    )
    a, b = read_prompts(path)
    assert a.id == "set-1" and a.kind == "prompt" and not a.chat and a.meta == {"low": 1}
    assert a.outcomes == ("heads", "tails") and a.probs == (0.5, 0.5)
    assert b.chat and b.answer == "4" and b.kind == "control"
    assert read_prompts(write_prompts(tmp_path / "again.jsonl", [a, b])) == [a, b]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "is not valid JSON"),
        ({"outcomes": ["a"], "probs": [1]}, "'text' string"),
        ({"text": "x", "outcomes": ["a", "b"], "probs": [1]}, "2 outcomes but 1 probs"),
        ({"text": "x", "outcomes": ["a", "b"], "probs": [0.7, 0.7]}, "sum to 1"),
        ({"text": "x", "outcomes": ["a", "a"], "probs": [0.5, 0.5]}, "listed twice"),
        ({"text": "x", "outcomes": ["a"], "probs": [1], "answer": "b"}, "not one of the outcomes"),
    ],
)
def test_bad_records_are_refused_with_the_line(tmp_path, row, message):
    path = _write(tmp_path, [{"text": "fine"}, row])
    with pytest.raises(LabError, match=message) as e:
        read_prompts(path)
    assert "line 2" in str(e.value)


def test_duplicate_ids_and_unknown_sets(tmp_path):
    with pytest.raises(LabError, match="'a' is used twice"):
        read_prompts(_write(tmp_path, [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]))
    with pytest.raises(LabError, match="Did you mean: calibration"):
        read_prompts("calibratoin")
    with pytest.raises(LabError, match="No prompt file"):
        read_prompts(tmp_path / "missing.jsonl")


def test_set_spec():
    assert parse_set_spec("calibration") == ("calibration", "records")
    assert parse_set_spec("calibration_chat:plain") == ("calibration_chat", "plain")
    assert parse_set_spec("my.jsonl:chat") == ("my.jsonl", "chat")


def test_render_modes():
    tok = make_tokenizer()
    chat = PromptRecord("c", "Flip a coin.", chat=True)
    plain = PromptRecord("p", "It landed on")
    templated = "<bos>User: Flip a coin.\nAssistant:"
    assert render(chat, tok, TEMPLATE, "records") == (templated, True)
    assert render(chat, tok, TEMPLATE, "plain") == (PLAIN_CHAT.format(text="Flip a coin."), False)
    assert render(plain, tok, TEMPLATE, "records") == ("It landed on", False)
    assert render(plain, tok, TEMPLATE, "chat") == ("<bos>User: It landed on\nAssistant:", True)
    assert render(plain, tok, None, "records") == ("It landed on", False)
    with pytest.raises(LabError, match="Unknown chat mode 'always'"):
        render(plain, tok, TEMPLATE, "always")


def test_no_chat_template_when_a_set_asks_for_one():
    rec = PromptRecord("chat-coin-00", "Flip a coin.", chat=True)
    with pytest.raises(LabError) as e:
        render(rec, make_tokenizer(), None, "records", "calibration_chat")
    msg = str(e.value)
    assert "'calibration_chat' asks for a chat template" in msg and "chat-coin-00" in msg
    assert "calibration_chat:plain" in msg
