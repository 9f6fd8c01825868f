"""Calibration on prompts whose true answer distribution is known (``lab calibrate``).

For each calibration record (see ``lab.datasets.prompts``: ``outcomes`` with true ``probs``) and
each model
of a pair, the probability of every outcome is its full sequence probability after the prompt,
by teacher forcing: all (prompt, continuation) sequences of a run go through the model in a few
batched forwards, right-padded (causal attention: padding after a sequence cannot change it). The
forwards stream: only the positions read reach the unembedding, so a forward holds (read
positions, vocab) logits, never (batch, pos, vocab), and memory is bounded by one batch whatever
the suite's size (a 49k vocabulary made full logits the largest thing in memory).

Outcomes are tokenized honestly, as ``lab.datasets.outcomes`` says (spellings merged, canonical
tokenizations only, unrepresentable or ambiguous outcomes refused). A plain-text prompt starts with
the BOS token only where the pair's own tokenizer says so (``ModelPair.bos``, from
``lab.models.pair.bos_rule``), not by TransformerLens's per-architecture default (which prepends
it to SmolLM2's plain text); a chat-templated prompt is read as its template writes it. Each row
records the choice (``bos``) and the run's attrs say why (``bos_rule``).

Scores per record and model (natural logs; ``mass`` raw, the rest over the outcomes renormalised):
``mass`` (probability on the valid outcomes), ``kl`` = KL(true || model), ``entropy``,
``top_share`` (the largest outcome's share: the mode collapse of "pick a random number"). Records
with an ``answer`` (controls) also get ``confidence`` (the top outcome's share) and ``correct`` (it
is the answer); ECE over them uses ``n_bins`` equal-width bins on [0, 1]:
ECE = sum over bins b of |b|/n * |accuracy(b) - mean confidence(b)|.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

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
    "reads_only",
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
    batch_tokens: int = 1024  # most tokens (sequences x padded length) in one forward
    logits_mib: float = 16.0  # most MiB of float32 logits in one forward (read positions)
    n_bins: int = 15  # ECE bins, equal width on [0, 1]


@dataclass(frozen=True)
class ScoredRecord:
    """A calibration record, rendered and tokenized for one pair."""

    rendered: RenderedPrompt  # the record, its set, and the text that the models read
    prompt: Ids  # the prompt's token ids, as the models read it
    outcomes: tuple[tuple[Ids, ...], ...]  # per outcome, its distinct continuation token ids
    bos: bool  # the BOS token was put before the prompt (plain text, where the tokenizer says so)


def reads_only(model: TransformerBridge) -> bool:
    """Whether ``model`` can unembed only the positions read (its HF forward takes
    ``logits_to_keep``, as every causal LM in transformers 5 does); a custom model may not."""
    forward = getattr(getattr(model, "original_model", None), "forward", None)
    return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters


def _batches(
    seqs: Sequence[Ids], n_reads: Sequence[int], batch_tokens: int, max_logits: int, full: bool
) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive batches of length-sorted ``seqs``: at most ``batch_tokens``
    padded tokens and ``max_logits`` logit rows each (all tokens when ``full``, else the read
    positions ``n_reads``), and at least one sequence."""
    start = 0
    while start < len(seqs):
        end, rows = start + 1, n_reads[start]
        while end < len(seqs):
            tokens = (end + 1 - start) * len(seqs[end])
            rows += n_reads[end]
            if tokens > batch_tokens or (tokens if full else rows) > max_logits:
                break
            end += 1
        yield start, end
        start = end


@torch.no_grad()
def sequence_logprobs(
    model: TransformerBridge,
    prompts: Sequence[Ids],
    conts: Sequence[Ids],
    *,
    batch_tokens: int = 1024,
    logits_mib: float = 16.0,
    full_logits: bool = False,
    desc: str = "calibrate",
) -> SeqLogProbs:
    """log P(cont | prompt) for each pair, by teacher forcing in batched forwards (float64, CPU).

    Each pair needs one sequence, prompt + cont[:-1]; pairs that need the same sequence share it.
    Sequences are sorted by length, right-padded and cut into batches of at most ``batch_tokens``
    tokens. Only the positions that a pair reads reach the unembedding (``logits_to_keep``), so a
    forward holds (read positions, vocab) logits, at most ``logits_mib`` MiB of float32, never
    (batch, pos, vocab): memory is bounded by one batch, not by the suite. ``full_logits`` (or a
    model whose forward cannot keep positions, ``reads_only``) unembeds every position, with the
    batch capped by ``logits_mib`` instead; the values are the same up to float rounding. A
    progress bar (``desc``) counts the tokens run.
    """
    keys: dict[Ids, int] = {}
    reads: list[list[tuple[int, int, int]]] = []  # per sequence: (position, token, pair index)
    for i, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        k = keys.setdefault(tuple(p) + tuple(c[:-1]), len(keys))
        if k == len(reads):
            reads.append([])
        reads[k] += [(len(p) - 1 + j, t, i) for j, t in enumerate(c)]
    seqs = sorted(keys, key=len)
    n_reads = [len({q for q, _, _ in reads[keys[s]]}) for s in seqs]
    full = full_logits or not reads_only(model)
    max_logits = max(1, int(logits_mib * 2**20 / (4 * model.cfg.d_vocab)))
    device = device_of(model)
    pad = model.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    out = torch.zeros(len(prompts), dtype=torch.float64)
    bar = tqdm(total=sum(map(len, seqs)), desc=desc, unit="tok", leave=False, mininterval=2)
    for start, end in _batches(seqs, n_reads, batch_tokens, max_logits, full):
        batch = seqs[start:end]
        tokens = torch.full((len(batch), len(batch[-1])), pad, dtype=torch.long)
        for b, s in enumerate(batch):
            tokens[b, : len(s)] = torch.tensor(s)
        rows, pos, tok, idx = (
            torch.tensor(v)
            for v in zip(
                *((b, q, t, i) for b, s in enumerate(batch) for q, t, i in reads[keys[s]]),
                strict=True,
            )
        )
        if full:
            logits = model(tokens.to(device), return_type="logits")
            picked = logits[rows.to(device), pos.to(device)]
        else:  # HF keeps the True positions, flattened in row-major order
            keep = torch.zeros(tokens.shape, dtype=torch.bool)
            keep[rows, pos] = True
            at = keep.flatten().cumsum(0) - 1  # each kept position's row in the logits
            logits = model(tokens.to(device), return_type="logits", logits_to_keep=keep.to(device))
            picked = logits[at[rows * tokens.shape[1] + pos].to(device)]
        lp = picked.float().log_softmax(-1).gather(-1, tok.to(device)[:, None])
        out.index_add_(0, idx, lp[:, 0].double().cpu())
        bar.update(sum(map(len, batch)))
    bar.close()
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
            bos = pair.bos.prepend and not r.templated
            prompt, outcomes = outcome_sequences(
                pair.tokenizer,
                r.text,
                r.record,
                start=(pair.bos.token_id,) if bos else (),
                merge_case=cfg.merge_case,
                leading_space=cfg.leading_space,
            )
            scored.append(ScoredRecord(r, prompt, outcomes, bos))
    return scored


def calibrate(
    pair: ModelPair, sets: Iterable[str] = ("calibration",), cfg: CalibrationConfig | None = None
) -> pd.DataFrame:
    """Score both models of ``pair`` on prompt sets (``NAME`` or ``NAME:MODE``,
    ``lab.datasets.prompts``).

    One row per (record, model): ``set``, ``id``, ``kind``, ``chat_template`` (applied or not),
    ``bos`` (a BOS token put before the prompt), ``model``, the scores, ``top_outcome``,
    ``answer``, ``confidence``, ``correct``, ``outcomes`` and ``probs`` (the model's renormalised
    outcome probabilities). ``attrs`` holds the run's facts (``bos_prepend``, the pair's rule for
    plain text, and ``bos_rule``, why).
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
    for role, model in pair.models.items():
        t0 = time.perf_counter()
        lp = sequence_logprobs(
            model,
            prompts,
            conts,
            batch_tokens=cfg.batch_tokens,
            logits_mib=cfg.logits_mib,
            desc=f"calibrate {role}",
        )
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
                    "bos": s.bos,
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
        bos_prepend=pair.bos.prepend,
        bos_rule=pair.bos.why,
        n_records=len(scored),
        n_sequences=len(forwarded),
        n_tokens=sum(len(k) for k in forwarded),
        seconds=seconds,
        n_bins=cfg.n_bins,
    )
    return results
