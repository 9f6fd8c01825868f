"""A world's words as a Hugging Face tokenizer, so an organism checkpoint loads like any other.

Token 0 is BOS (``<bos>``, also EOS, padding and unknown) and word ``i`` is token ``i + 1``;
text is split on whitespace, one word per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lab.errors import LabError

__all__ = ["BOS", "word_tokenizer"]

BOS = "<bos>"


def word_tokenizer(vocab: Sequence[str]) -> PreTrainedTokenizerFast:
    """A fast WordLevel tokenizer over ``vocab`` (BOS first, then the words), whitespace split."""
    if not vocab or vocab[0] != BOS:
        raise LabError(f"vocab must start with {BOS!r}; got {list(vocab[:3])}.")
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token=BOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS, unk_token=BOS
    )
