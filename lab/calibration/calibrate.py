"""Calibration on prompts whose true answer distribution is known (``lab calibrate``).

For each calibration record (see ``lab.datasets.prompts``: ``outcomes`` with true ``probs``) and
each model
of a pair, the probability of every outcome is its full sequence probability after the prompt,
by teacher forcing: all (prompt, continuation) sequences of a run go through the model in a few
batched forwards, right-padded (causal attention: padding after a sequence cannot change it).

Outcomes are tokenized honestly, as ``lab.datasets.outcomes`` says (spellings merged, canonical
tokenizations only, unrepresentable or ambiguous outcomes refused).

Scores per record and model (natural logs; ``mass`` raw, the rest over the outcomes renormalised):
``mass`` (probability on the valid outcomes), ``kl`` = KL(true || model), ``entropy``,
``top_share`` (the largest outcome's share: the mode collapse of "pick a random number"). Records
with an ``answer`` (controls) also get ``confidence`` (the top outcome's share) and ``correct`` (it
is the answer); ECE over them uses ``n_bins`` equal-width bins on [0, 1]:
ECE = sum over bins b of |b|/n * |accuracy(b) - mean confidence(b)|.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lab.datasets.outcomes import Ids, outcome_sequences
from lab.datasets.prompts import RenderedPrompt, render_set
from lab.errors import LabError
from lab.models.pair import ModelPair
from lab.runtime import device_of

if TYPE_CHECKING:  # for annotations only: importing transformer_lens takes seconds
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "CalibrationConfig",
    "ScoredRecord",
    "calibrate",
    "expected_calibration_error",
    "outcome_scores",
    "sequence_logprobs",
]

SeqLogProbs = Float[Tensor, "seq"]  # one value per (prompt, continuation) pair
OutcomeProbs = Float[Tensor, "outcome"]  # one value per outcome of a record
Confidences = Float[Tensor, "record"]  # one value per control record
Hits = Bool[Tensor, "record"]  # one value per control record


@dataclass(frozen=True)
class CalibrationConfig:
    """How outcomes are spelled and how the forwards are batched."""

    merge_case: bool = True  # an outcome also counts with its first letter upper-cased
    leading_space: bool = True  # ... and each spelling also with a leading space
    batch_tokens: int = 8192  # most tokens (sequences x padded length) in one forward
    logits_gib: float = 2.0  # most memory for one forward's float32 logits (caps batch_tokens)
    n_bins: int = 15  # ECE bins, equal width on [0, 1]


@dataclass(frozen=True)
class ScoredRecord:
    """A calibration record, rendered and tokenized for one pair."""

    rendered: RenderedPrompt  # the record, its set, and the text that the models read
    prompt: Ids  # the prompt's token ids, as the models read it
    outcomes: tuple[tuple[Ids, ...], ...]  # per outcome, its distinct continuation token ids


@torch.no_grad()
def sequence_logprobs(
    model: TransformerBridge,
    prompts: Sequence[Ids],
    conts: Sequence[Ids],
    *,
    batch_tokens: int = 8192,
) -> SeqLogProbs:
    """log P(cont | prompt) for each pair, by teacher forcing in batched forwards (float64, CPU).

    Each pair needs one sequence, prompt + cont[:-1]; pairs that need the same sequence share it.
    Sequences are sorted by length, right-padded and cut into batches of at most ``batch_tokens``.
    """
    keys: dict[Ids, int] = {}
    reads: list[list[tuple[int, int, int]]] = []  # per sequence: (position, token, pair index)
    for i, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        k = keys.setdefault(tuple(p) + tuple(c[:-1]), len(keys))
        if k == len(reads):
            reads.append([])
        reads[k] += [(len(p) - 1 + j, t, i) for j, t in enumerate(c)]
    seqs = sorted(keys, key=len)
    device = device_of(model)
    pad = model.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    out = torch.zeros(len(prompts), dtype=torch.float64)
    start = 0
    while start < len(seqs):
        end = start + 1
        while end < len(seqs) and (end + 1 - start) * len(seqs[end]) <= batch_tokens:
            end += 1
        batch = seqs[start:end]
        tokens = torch.full((len(batch), len(batch[-1])), pad, dtype=torch.long)
        for b, s in enumerate(batch):
            tokens[b, : len(s)] = torch.tensor(s)
        logits = model(tokens.to(device), return_type="logits")
        rows, pos, tok, idx = zip(
            *((b, q, t, i) for b, s in enumerate(batch) for q, t, i in reads[keys[s]]),
            strict=True,
        )
        picked = logits[torch.tensor(rows, device=device), torch.tensor(pos, device=device)]
        lp = picked.float().log_softmax(-1).gather(-1, torch.tensor(tok, device=device)[:, None])
        out.index_add_(0, torch.tensor(idx), lp[:, 0].double().cpu())
        start = end
    return out


def outcome_scores(log_p: OutcomeProbs, true_p: OutcomeProbs) -> dict[str, float | int]:
    """Scores of one record from the model's log-probability of each outcome (module docstring)."""
    log_p, true_p = log_p.double(), true_p.double()
    log_mass = torch.logsumexp(log_p, 0)
    log_q = log_p - log_mass
    q = log_q.exp()
    on = true_p > 0
    kl = (true_p[on] * (true_p[on].log() - log_q[on])).sum()
    ent_true = -(true_p[on] * true_p[on].log()).sum()
    return {
        "mass": log_mass.exp().item(),
        "kl": kl.item(),
        "entropy": -(q * log_q).sum().item(),
        "true_entropy": ent_true.item(),
        "top_share": q.max().item(),
        "true_top_share": true_p.max().item(),
        "top": int(q.argmax()),
    }


def expected_calibration_error(confidence: Confidences, correct: Hits, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1] (a confidence of 1 falls in the last bin)."""
    if len(confidence) == 0:
        return math.nan
    conf, hit = confidence.double(), correct.double()
    bins = (conf * n_bins).long().clamp(0, n_bins - 1)
    n = torch.bincount(bins, minlength=n_bins).double()
    gap = torch.bincount(bins, hit - conf, minlength=n_bins)
    return (gap.abs().sum() / n.sum()).item()


def _tokenize(pair: ModelPair, specs: Iterable[str], cfg: CalibrationConfig) -> list[ScoredRecord]:
    """The calibration records of every set, rendered and tokenized."""
    scored: list[ScoredRecord] = []
    for spec in specs:
        rendered = [r for r in render_set(pair, spec) if r.record.outcomes]
        if not rendered:
            raise LabError(f"The prompt set {spec!r} has no calibration records (with outcomes).")
        for r in rendered:
            prompt, outcomes = outcome_sequences(
                pair.base,
                r.text,
                r.record,
                r.templated,
                merge_case=cfg.merge_case,
                leading_space=cfg.leading_space,
            )
            scored.append(ScoredRecord(r, prompt, outcomes))
    return scored


def calibrate(
    pair: ModelPair, sets: Iterable[str] = ("calibration",), cfg: CalibrationConfig | None = None
) -> pd.DataFrame:
    """Score both models of ``pair`` on prompt sets (``NAME`` or ``NAME:MODE``,
    ``lab.datasets.prompts``).

    One row per (record, model): ``set``, ``id``, ``kind``, ``chat_template`` (applied or not),
    ``model``, the scores, ``top_outcome``, ``answer``, ``confidence``, ``correct``, ``outcomes``
    and ``probs`` (the model's renormalised outcome probabilities). ``attrs`` holds the run's facts.
    """
    cfg = cfg or CalibrationConfig()
    specs = list(sets)
    scored = _tokenize(pair, specs, cfg)
    n_ctx = pair.cfg.n_ctx
    longest = max(len(s.prompt) + max(len(c) for o in s.outcomes for c in o) for s in scored)
    if longest > n_ctx:
        raise LabError(
            f"A prompt and outcome take {longest} tokens; the models read {n_ctx}. "
            "Shorten the prompt (or its chat template's system text), or drop the record."
        )
    flat = [
        (i, o, c) for i, s in enumerate(scored) for o, seqs in enumerate(s.outcomes) for c in seqs
    ]
    prompts = [scored[i].prompt for i, _, _ in flat]
    conts = [c for _, _, c in flat]
    forwarded = {p + c[:-1] for p, c in zip(prompts, conts, strict=True)}  # sequences run
    rows, seconds = [], {}
    per_token = pair.cfg.d_vocab * 4  # bytes of float32 logits per token
    batch_tokens = max(1, min(cfg.batch_tokens, int(cfg.logits_gib * 2**30 / per_token)))
    for role, model in pair.models.items():
        t0 = time.perf_counter()
        lp = sequence_logprobs(model, prompts, conts, batch_tokens=batch_tokens)
        seconds[role] = time.perf_counter() - t0
        per: dict[tuple[int, int], list[float]] = {}
        for (i, o, _), v in zip(flat, lp.tolist(), strict=True):
            per.setdefault((i, o), []).append(v)
        for i, s in enumerate(scored):
            rec = s.rendered.record
            log_p = torch.stack(
                [
                    torch.tensor(per[i, o], dtype=torch.float64).logsumexp(0)
                    for o in range(len(rec.outcomes))
                ]
            )
            sc = outcome_scores(log_p, torch.tensor(rec.probs, dtype=torch.float64))
            top = rec.outcomes[sc.pop("top")]
            rows.append(
                {
                    "set": s.rendered.set_name,
                    "id": rec.id,
                    "kind": rec.kind,
                    "chat_template": s.rendered.templated,
                    "model": role,
                    "n_outcomes": len(rec.outcomes),
                    **sc,
                    "top_outcome": top,
                    "answer": rec.answer,
                    "confidence": sc["top_share"] if rec.answer is not None else math.nan,
                    "correct": (top == rec.answer) if rec.answer is not None else None,
                    "outcomes": list(rec.outcomes),
                    "probs": (log_p - torch.logsumexp(log_p, 0)).exp().tolist(),
                }
            )
    results = pd.DataFrame(rows)
    results.attrs.update(
        sources=dict(pair.sources),
        sets=specs,
        template_source=next(
            (s.rendered.template_source for s in scored if s.rendered.templated), None
        ),
        n_records=len(scored),
        n_sequences=len(forwarded),
        n_tokens=sum(len(k) for k in forwarded),
        seconds=seconds,
        n_bins=cfg.n_bins,
    )
    return results
