"""Outcomes as token sequences, honestly: which spellings count, and which outcomes are refused.

An outcome counts as written, with its first letter upper-cased (``merge_case``) and each of those
with a leading space (``leading_space``): "7" and " 7", "heads" and " Heads" are one outcome,
whose probability is the sum over its distinct token sequences (two spellings that tokenize alike
count once). A spelling is tokenized together with its prompt, as the model would read it (if
the spelling merges with the prompt's last token, it is tokenized alone after the prompt); only
canonical tokenizations count. Texts are tokenized without the tokenizer's special tokens, after
``start`` (the ids the caller puts first: the BOS where the model's convention wants one, see
``lab.models.pair.bos_rule``; nothing for a chat-templated text, which carries its own). A
spelling's tokens must decode to it, up to the tokenizer's own word separator
(``word_separator``: a word-level tokenizer's decode joins tokens with a space, so "heads" after
"flip" comes back as "flip heads"). Refused, each with a ``LabError`` that names
the record:

- an outcome the tokenizer cannot represent as written: no tokens, the unknown token, or tokens
  that decode to something else (a tokenizer without byte fallback, or one that normalises
  case). A variant spelling that the lab adds (upper-cased, leading space) and that maps to the
  unknown token is dropped instead: the model cannot write it, so it carries no probability;
- two outcomes that tokenize alike;
- an outcome whose tokens begin another outcome's (its probability would contain the other's).
"""

from __future__ import annotations

import functools

from transformers import PreTrainedTokenizerBase

from lab.datasets.prompts import PromptRecord
from lab.errors import LabError

__all__ = ["Ids", "outcome_sequences", "spellings", "word_separator"]

Ids = tuple[int, ...]  # token ids of one sequence


def spellings(outcome: str, *, merge_case: bool = True, leading_space: bool = True) -> list[str]:
    """The strings counted as ``outcome``, without repeats."""
    forms = [outcome]
    if merge_case and outcome[:1]:
        forms.append(outcome[0].upper() + outcome[1:])
    if leading_space:
        forms += [" " + f for f in forms]
    return list(dict.fromkeys(forms))


@functools.lru_cache(maxsize=8)  # a vocabulary scan: once per tokenizer, not per record
def word_separator(tokenizer: PreTrainedTokenizerBase) -> str:
    """What ``tokenizer.decode`` puts between two whole-word tokens that neither has alone.

    A space for a word-level tokenizer without a decoder (it joins tokens with spaces), ``""``
    for byte-level BPE or SentencePiece, where tokens carry their own spaces. Measured on the
    first two tokens that decode alone to their own letters-and-digits vocabulary string.
    """
    found: list[tuple[int, str]] = []
    special = set(tokenizer.all_special_ids)
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in special or not isinstance(piece, str) or not piece.isalnum():
            continue
        if tokenizer.decode([i], clean_up_tokenization_spaces=False) == piece:
            found.append((i, piece))
            if len(found) == 2:
                break
    if len(found) < 2:
        return ""
    (a, text_a), (b, text_b) = found
    both = tokenizer.decode([a, b], clean_up_tokenization_spaces=False)
    if not (both.startswith(text_a) and both.endswith(text_b)):
        return ""
    sep = both[len(text_a) : len(both) - len(text_b)]
    return sep if sep.isspace() else ""


def _decodes_to(decoded: str, text: str, sep: str) -> bool:
    """Whether ``decoded`` is ``text`` up to the tokenizer's word separator ``sep``."""
    return decoded == text or (bool(sep) and decoded.replace(sep, "") == text.replace(sep, ""))


def outcome_sequences(
    tok: PreTrainedTokenizerBase,
    prompt_text: str,
    rec: PromptRecord,
    *,
    start: Ids = (),
    merge_case: bool = True,
    leading_space: bool = True,
) -> tuple[Ids, tuple[tuple[Ids, ...], ...]]:
    """(prompt ids, per outcome its distinct continuation ids), checked as the module says.

    ``start`` goes before the prompt's own tokens (e.g. the BOS); texts are tokenized without the
    tokenizer's special tokens.
    """

    def encode(text: str) -> list[int]:
        return [*start, *tok(text, add_special_tokens=False)["input_ids"]]

    prompt = encode(prompt_text)
    before = tok.decode(prompt, clean_up_tokenization_spaces=False)
    sep = word_separator(tok)
    seen: dict[Ids, str] = {}
    outcomes = []
    for outcome in rec.outcomes:
        seqs: list[Ids] = []
        for s in spellings(outcome, merge_case=merge_case, leading_space=leading_space):
            joint = encode(prompt_text + s)
            if joint[: len(prompt)] == prompt:
                cont = tuple(joint[len(prompt) :])
            else:  # the spelling merged with the prompt's last token: tokenize it alone
                cont = tuple(tok(s, add_special_tokens=False)["input_ids"])
            after = tok.decode(list(prompt) + list(cont), clean_up_tokenization_spaces=False)
            unknown = not cont or tok.unk_token_id in cont
            if unknown and s != outcome:  # a variant the tokenizer cannot write: no probability
                continue
            if unknown or not _decodes_to(after, before + s, sep):
                why = (
                    "it has no tokens"
                    if not cont
                    else "it maps to the unknown token"
                    if tok.unk_token_id in cont
                    else f"its tokens decode as {after[len(before) :]!r}"
                )
                raise LabError(
                    f"Record {rec.id!r}: the tokenizer cannot represent the outcome {s!r} ({why}). "
                    "Remove the outcome from the prompt set, or use a tokenizer that spells it."
                )
            if seen.get(cont, outcome) != outcome:
                raise LabError(
                    f"Record {rec.id!r}: outcomes {seen[cont]!r} and {outcome!r} tokenize alike "
                    f"({s!r}); make the outcomes distinct (or turn off merge_case)."
                )
            seen[cont] = outcome
            if cont not in seqs:
                seqs.append(cont)
        outcomes.append(tuple(seqs))
    _check_prefix_free(rec, outcomes)
    return tuple(prompt), tuple(outcomes)


def _check_prefix_free(rec: PromptRecord, outcomes: list[tuple[Ids, ...]]) -> None:
    owner = {
        seq[:k]: i for i, seqs in enumerate(outcomes) for seq in seqs for k in range(1, len(seq))
    }
    for i, seqs in enumerate(outcomes):
        for seq in seqs:
            j = owner.get(seq, i)
            if j != i:
                raise LabError(
                    f"Record {rec.id!r}: the outcome {rec.outcomes[i]!r} is a prefix of "
                    f"{rec.outcomes[j]!r} in tokens, so its probability would contain the other's. "
                    "Use outcomes of which none begins another (e.g. numbers of one length)."
                )
