"""Datasets: sources, padding on either side, targets that follow their rows, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch

from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.testing import make_tokenizer

SEQS = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]


def _position_target(ds: Dataset) -> torch.Tensor:
    """A per-position target that says where it came from: 100 * sequence + position."""
    n, pos = ds.tokens.shape
    return torch.arange(n)[:, None] * 100 + torch.arange(pos)[None]


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_pad_and_keep_real_tokens_in_order(side):
    ds = Dataset.from_tokens(SEQS, pad_id=0)
    ds = Dataset.from_tokens(SEQS, targets={"where": _position_target(ds)})
    batches = list(ds.batches(3, padding_side=side))
    assert [len(b.index) for b in batches] == [3, 1]
    b = batches[0]
    assert b.tokens.shape == (3, 4)
    for row, seq in enumerate(SEQS[:3]):
        assert b.tokens[row][b.attention_mask[row]].tolist() == seq
    first_real = b.attention_mask.int().argmax(1)
    if side == "left":
        assert b.attention_mask[:, -1].all() and first_real.tolist() == [1, 2, 0]
    else:
        assert b.attention_mask[:, 0].all()
    assert b.n_rows == 9 and (b.keep == b.attention_mask).all()
    assert b.row_sequences().tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert b.row_positions().tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    expect = (b.row_sequences() * 100 + b.row_positions()).tolist()
    assert b.targets["where"].tolist() == expect
    assert "attention_mask" in b.forward_kwargs()
    assert batches[1].forward_kwargs() == {}  # a lone sequence needs no mask


def test_select_and_last_token_only():
    ds = Dataset.from_tokens(SEQS).last_token_only()
    assert ds.n_tokens == 4
    b = ds.batch(0, 4, "left")
    assert b.row_positions().tolist() == [2, 1, 3, 0]
    assert b.n_rows == 4 and b.attention_mask.sum() == 10


def test_jsonl_labels(tmp_path):
    tok = make_tokenizer()
    rows = [
        {"text": "heads or tails", "label": 1, "kind": "coin", "p": 0.5},
        {"text": "the story", "label": 0, "kind": "story", "p": 0.25},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = Dataset.from_jsonl(path, tok)
    assert len(ds) == 2 and ds.name == "p.jsonl"
    assert ds.tokens[0, 0] == tok.bos_token_id
    assert ds.labels["kind"] == ["coin", "story"]
    assert set(ds.numeric_labels()) == {"label", "p"}
    b = ds.batch(0, 2)
    assert b.targets["label"].tolist() == [1] * int(ds.lengths[0]) + [0] * int(ds.lengths[1])


def test_jsonl_errors(tmp_path):
    tok = make_tokenizer()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(LabError, match=r"bad.jsonl:2 is not JSON"):
        Dataset.from_jsonl(bad, tok)
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(LabError, match="no string field 'text'"):
        Dataset.from_jsonl(bad, tok)
    with pytest.raises(LabError, match="No prompt file"):
        Dataset.from_jsonl(tmp_path / "missing.jsonl", tok)


def test_text_file_windows(tmp_path):
    tok = make_tokenizer()
    path = tmp_path / "t.txt"
    path.write_text("once upon a time the story was happy " * 20)
    ds = Dataset.from_text_file(path, tok, seq_len=16)
    assert ds.max_len == 16 and (ds.tokens[:, 0] == tok.bos_token_id).all()
    n_text = len(tok(path.read_text(), add_special_tokens=False)["input_ids"])
    assert ds.n_tokens == n_text + len(ds)


def test_organism_targets():
    from lab.organism.story import story_labeler, story_world

    world = story_world()
    sample = world.sample(3, 8, torch.Generator().manual_seed(0))
    ds = Dataset.from_organism(sample, story_labeler(world))
    assert ds.tokens.shape == (3, 9)
    assert ds.targets["belief"].shape == (3, 9, world.n_scenes)
    assert torch.allclose(ds.targets["next_token_probs"].sum(-1), torch.ones(3, 9).double())
    assert (ds.targets["next_token_entropy"] > 0).all()
    assert ds.targets["utility"].shape == (3, 9)
    b = ds.batch(0, 3)
    assert b.targets["belief"].shape == (27, world.n_scenes)


def test_context_and_shape_errors():
    ds = Dataset.from_tokens([[1] * 10, [2] * 3])
    ds.check_context(10)
    with pytest.raises(LabError, match=r"Sequence 0 .* 10 tokens but the model's context is 8"):
        ds.check_context(8)
    with pytest.raises(LabError, match="per-position targets must start"):
        Dataset.from_tokens(SEQS, targets={"x": torch.zeros(4, 3)})
    with pytest.raises(LabError, match="has 1 values for 4 sequences"):
        Dataset.from_tokens(SEQS, labels={"y": [1]})
    with pytest.raises(LabError, match="padding_side"):
        ds.batch(0, 1, "middle")


def test_fingerprint_tracks_content():
    a = Dataset.from_tokens(SEQS)
    assert a.fingerprint() == Dataset.from_tokens(SEQS).fingerprint()
    assert a.fingerprint() != Dataset.from_tokens([[5, 6, 7], [8, 9]]).fingerprint()
    assert a.fingerprint() != a.last_token_only().fingerprint()


def test_non_utf8_data_file_is_named(tmp_path):
    tok = make_tokenizer()
    latin = "caf\u00e9 ou th\u00e9".encode("latin-1")  # \xe9: not UTF-8
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_bytes(b'{"text": "heads"}\n{"text": "' + latin + b'"}\n')
    with pytest.raises(LabError, match=r"prompts.jsonl:2 is not UTF-8 text \(byte 0xe9 at offset"):
        Dataset.from_jsonl(jsonl, tok)
    text = tmp_path / "story.txt"
    text.write_bytes(b"once upon a time\n" + latin)
    with pytest.raises(LabError, match=r"story.txt:2 is not UTF-8 text .*save the file as UTF-8"):
        Dataset.from_text_file(text, tok, seq_len=8)
