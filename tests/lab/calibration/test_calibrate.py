"""Calibration scoring equals a hand computation from the models' own logits; bad inputs are clear
errors; ``lab calibrate`` prints a table, JSON, a plot and a results file."""

from __future__ import annotations

import copy
import json
import math
import sys

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lab.calibration.calibrate import (
    CalibrationConfig,
    calibrate,
    expected_calibration_error,
    outcome_scores,
    sequence_logprobs,
)
from lab.calibration.summary import format_summary, plot_calibration, summarize
from lab.cli import run
from lab.datasets.outcomes import outcome_sequences
from lab.datasets.prompts import PromptRecord, write_prompts
from lab.datasets.suites import calibration_records
from lab.errors import LabError
from lab.models.checkpoints import load_tokenizer, resolve_checkpoint
from lab.models.pair import BosRule, bos_rule, load_pair
from lab.runtime import cache_dir
from lab.testing import TEST_SPECS, make_pair, make_tokenizer

TEMPLATE = (
    "{% for m in messages %}<bos>User: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
RECORDS = [
    # single-token digits, an answer (control), multi-token words, a non-uniform truth
    {"id": "sum", "text": "2 + 2 =", "kind": "control", "outcomes": ["3", "4", "5"],
     "probs": [0, 1, 0], "answer": "4"},
    {"id": "coin", "text": "I flipped a coin and it landed on", "kind": "coin",
     "outcomes": ["heads", "tails"], "probs": [0.5, 0.5]},
    {"id": "odd", "text": "Pick a word:", "kind": "choice", "outcomes": ["zebra", "quokka", "yes"],
     "probs": [0.2, 0.3, 0.5]},
    {"id": "chatty", "text": "Flip a coin.", "kind": "coin", "chat": True,
     "outcomes": ["heads", "tails"], "probs": [0.5, 0.5]},
]  # fmt: skip


def _set(tmp_path, rows, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def pair(pair_dirs):
    base, tuned = pair_dirs("gpt2")
    return load_pair(base, tuned, device="cpu")


@pytest.fixture(scope="module")
def chat_pair(tmp_path_factory):
    """A llama-shaped pair whose tuned tokenizer has a chat template (its base has none)."""
    base, tuned = make_pair(tmp_path_factory.mktemp("chat"), TEST_SPECS["llama"])
    cfg_path = tuned / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "chat_template": TEMPLATE}))
    return load_pair(base, tuned, device="cpu")


def _hand_log_p(model, prompt_text: str, outcome: str, *, start=()) -> float:
    """log P(outcome) by hand: every spelling run alone through the HF model, token by token,
    after the ids ``start`` (the BOS, where the pair's rule puts one)."""
    tok = model.tokenizer

    def ids(text):
        return [*start, *tok(text, add_special_tokens=False)["input_ids"]]

    prompt = ids(prompt_text)
    seqs = set()
    for s in {outcome, outcome[0].upper() + outcome[1:], " " + outcome, " " + outcome.title()}:
        seqs.add(tuple(ids(prompt_text + s)[len(prompt) :]))
    total = 0.0
    for cont in seqs:
        full = torch.tensor([prompt + list(cont)])
        with torch.no_grad():
            logits = model.original_model(full).logits[0]  # the HF model itself, unbatched
        lp = sum(logits[len(prompt) - 1 + j].log_softmax(-1)[t].item() for j, t in enumerate(cont))
        total += math.exp(lp)
    return math.log(total)


def test_scores_equal_a_hand_computation_from_the_logits(pair, tmp_path):
    res = calibrate(pair, [_set(tmp_path, RECORDS[:3])], CalibrationConfig(batch_tokens=64))
    assert len(res) == 6 and set(res["model"]) == {"base", "tuned"}
    assert not res["bos"].any()  # the test tokenizer adds no BOS and its BOS is not its EOS
    for row in res.itertuples():
        rec = next(r for r in RECORDS if r["id"] == row.id)
        model = pair.models[row.model]
        log_p = [_hand_log_p(model, rec["text"], o) for o in rec["outcomes"]]
        p_out = [math.exp(v) for v in log_p]
        mass = sum(p_out)
        q = [v / mass for v in p_out]
        true = rec["probs"]
        kl = sum(t * math.log(t / m) for t, m in zip(true, q, strict=True) if t > 0)
        assert row.mass == pytest.approx(mass, rel=1e-4)
        assert row.probs == pytest.approx(q, rel=1e-4)
        assert row.kl == pytest.approx(kl, rel=1e-4, abs=1e-6)
        assert row.entropy == pytest.approx(-sum(v * math.log(v) for v in q), rel=1e-4)
        assert row.true_entropy == pytest.approx(-sum(t * math.log(t) for t in true if t > 0))
        assert row.top_share == pytest.approx(max(q), rel=1e-4)
        assert row.top_outcome == rec["outcomes"][q.index(max(q))]
        if rec.get("answer"):
            assert row.confidence == row.top_share and row.correct == (row.top_outcome == "4")
    assert res.attrs["n_records"] == 3 and res.attrs["template_source"] is None


def test_multi_token_outcomes_need_several_tokens(pair):
    rec = PromptRecord("r", "Pick a word:", outcomes=("zebra", "yes"), probs=(0.5, 0.5))
    _, outcomes = outcome_sequences(pair.tokenizer, rec.text, rec)
    assert max(len(c) for c in outcomes[0]) > 1  # "zebra" is several tokens
    assert len(outcomes[1]) == 4  # yes, Yes, " yes", " Yes": distinct token sequences
    off = outcome_sequences(pair.tokenizer, rec.text, rec, merge_case=False, leading_space=False)
    assert len(off[1][1]) == 1


def test_batching_does_not_change_log_probs(pair):
    prompts = [tuple(pair.to_tokens(t)[0].tolist()) for t in ("a b", "the coin landed", "x")]
    conts = [(70, 71, 72), (5,), (9, 9)]
    one = sequence_logprobs(pair.base, prompts, conts, batch_tokens=1)
    many = sequence_logprobs(pair.base, prompts, conts, batch_tokens=10_000)
    assert torch.allclose(one, many, atol=1e-5)
    with torch.no_grad():
        logits = pair.base.original_model(torch.tensor([prompts[0] + (70, 71)])).logits[0]
    lp = logits.log_softmax(-1)
    n = len(prompts[0])
    expected = lp[n - 1, 70] + lp[n, 71] + lp[n + 1, 72]
    assert one[0].item() == pytest.approx(expected.item(), abs=1e-5)


def _reads(n: int, vocab: int = 320) -> float:
    """A logits budget (MiB of float32) of ``n`` rows of ``vocab``."""
    return n * vocab * 4 / 2**20


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Every fifth record of the shipped plain-text suite: every kind, prompts of many lengths."""
    path = tmp_path_factory.mktemp("suite") / "some.jsonl"
    write_prompts(path, calibration_records(chat=False)[::5])
    return str(path)


@pytest.fixture(scope="module")
def unbatched(pair, suite):
    """That suite scored the unstreamed way: one sequence per forward (no padding), every
    position unembedded."""
    cfg = CalibrationConfig(batch_tokens=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules["lab.calibration.calibrate"], "reads_only", lambda model: False)
        return calibrate(pair, [suite], cfg)


@pytest.mark.parametrize(
    ("batch_tokens", "n_reads"),
    [(1, 10_000), (37, 10_000), (400, 5), (1_000_000, 1), (1_000_000, 10_000)],
)
def test_streamed_scores_equal_the_unbatched_ones(pair, suite, unbatched, batch_tokens, n_reads):
    """Any batch size and logits budget (padding, uneven last batches, a batch per read) gives
    the rows of one sequence at a time with full logits."""
    cfg = CalibrationConfig(batch_tokens=batch_tokens, logits_mib=_reads(n_reads))
    res = calibrate(pair, [suite], cfg)
    assert len(res) == len(unbatched) > 30 and res.attrs["n_sequences"] > 50
    same = ["set", "id", "kind", "model", "n_outcomes", "top_outcome", "outcomes"]
    pd.testing.assert_frame_equal(res[same], unbatched[same])
    for col in ("mass", "kl", "entropy", "top_share"):
        assert res[col].tolist() == pytest.approx(unbatched[col].tolist(), rel=1e-5, abs=1e-9)
    for got, want in zip(res["probs"], unbatched["probs"], strict=True):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_forwards_unembed_only_the_read_positions(pair):
    """Memory is bounded by the batch: the unembedding sees (read positions, vocab), at most the
    logits budget's rows per forward, never (batch, pos, vocab)."""
    prompts = [tuple(pair.to_tokens(t)[0].tolist()) for t in ("a b", "the coin landed", "x y z")]
    prompts += [prompts[1]] * 2
    conts = [(70, 71, 72), (5,), (9, 9), (5, 6), (7,)]  # the last reads the second's position
    shapes = []
    head = pair.base.original_model.get_output_embeddings()
    hook = head.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))
    try:
        streamed = sequence_logprobs(pair.base, prompts, conts, logits_mib=_reads(3))
        shapes_streamed, shapes[:] = list(shapes), []
        full = sequence_logprobs(pair.base, prompts, conts, full_logits=True)
    finally:
        hook.remove()
    assert all(len(s) == 2 and s[0] <= 3 and s[1] == 320 for s in shapes_streamed)
    assert sum(s[0] for s in shapes_streamed) == 3 + 1 + 2 + 2  # distinct (sequence, position)
    assert len(shapes) == 1 and len(shapes[0]) == 3  # the unstreamed forward: every position
    assert torch.allclose(streamed, full, atol=1e-5)


def test_outcome_scores_and_ece_by_hand():
    sc = outcome_scores(torch.log(torch.tensor([0.1, 0.3])), torch.tensor([0.5, 0.5]))
    assert sc["mass"] == pytest.approx(0.4)
    assert sc["kl"] == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    assert sc["top_share"] == pytest.approx(0.75) and sc["top"] == 1
    conf = torch.tensor([0.95, 0.95, 0.5, 0.52, 1.0])
    hit = torch.tensor([True, False, True, True, True])
    # bins of width 1/15: {0.95, 0.95, 1.0} share the last bin, {0.5, 0.52} bin 7
    expected = 3 / 5 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3) + 2 / 5 * abs(1 - 0.51)
    assert expected_calibration_error(conf, hit, 15) == pytest.approx(expected)
    assert math.isnan(expected_calibration_error(torch.tensor([]), torch.tensor([], dtype=bool)))


def test_summary_and_plot_are_functions_of_the_rows(pair, tmp_path):
    res = calibrate(pair, [_set(tmp_path, RECORDS[:3])])
    summary = summarize(res)
    allrow = summary[(summary["kind"] == "all") & (summary["model"] == "base")].iloc[0]
    base = res[res["model"] == "base"]
    assert allrow["n"] == 3 and allrow["kl"] == pytest.approx(base["kl"].mean())
    ctl = base[base["kind"] == "control"]
    ece = expected_calibration_error(
        torch.tensor(ctl["confidence"].tolist()), torch.tensor(ctl["correct"].tolist()), 15
    )
    assert allrow["ece"] == pytest.approx(ece)
    assert "KL(true||model)" in format_summary(summary)
    assert isinstance(plot_calibration(res), Figure)


def test_chat_template_of_the_tuned_model_is_used_and_recorded(chat_pair, tmp_path):
    path = _set(tmp_path, RECORDS[1:])
    res = calibrate(chat_pair, [path])
    assert res.attrs["template_source"] == "tuned"
    flags = dict(zip(res["id"], res["chat_template"], strict=False))
    assert flags == {"coin": False, "odd": False, "chatty": True}
    row = res[(res["id"] == "chatty") & (res["model"] == "tuned")].iloc[0]
    text = "<bos>User: Flip a coin.\nAssistant:"
    log_p = [_hand_log_p(chat_pair.tuned, text, o) for o in ("heads", "tails")]
    q = torch.tensor(log_p).softmax(0).tolist()
    assert row["probs"] == pytest.approx(q, rel=1e-4)
    plain = calibrate(chat_pair, [path + ":plain"])
    assert not plain["chat_template"].any() and plain.attrs["template_source"] is None
    assert calibrate(chat_pair, [path + ":chat"])["chat_template"].all()


def test_no_chat_template_is_a_clear_error(pair, tmp_path):
    with pytest.raises(LabError, match="asks for a chat template"):
        calibrate(pair, [_set(tmp_path, RECORDS)])
    assert calibrate(pair, [_set(tmp_path, RECORDS) + ":plain"])["chat_template"].sum() == 0


def _word_level():
    """A tokenizer without byte fallback: unknown words map to <unk>."""
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "flip": 1, "heads": 2, "tails": 3}, "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _lowercasing():
    """A byte-level tokenizer that lowercases: "Heads" comes back as "heads"."""
    tok = make_tokenizer()
    tok.backend_tokenizer.normalizer = normalizers.Lowercase()
    return tok


@pytest.mark.parametrize(
    ("tokenizer", "outcomes", "message"),
    [
        (_word_level(), ("coin", "heads"), "'coin' .it maps to the unknown"),
        (_lowercasing(), ("heads", "tails"), "'Heads' .its tokens decode as"),
    ],
)
def test_outcomes_the_tokenizer_cannot_represent(tokenizer, outcomes, message):
    rec = PromptRecord("r", "flip", outcomes=outcomes, probs=(0.5, 0.5))
    with pytest.raises(LabError, match=message) as e:
        outcome_sequences(tokenizer, "flip", rec)
    assert "Record 'r'" in str(e.value) and "cannot represent" in str(e.value)


def test_empty_and_ambiguous_outcomes(pair, tmp_path):
    empty = {"id": "e", "text": "Pick:", "outcomes": ["", "a"], "probs": [0.5, 0.5]}
    with pytest.raises(LabError, match="cannot represent the outcome '' \\(it has no tokens\\)"):
        calibrate(pair, [_set(tmp_path, [empty])])
    prefix = {"id": "p", "text": "Pick:", "outcomes": ["xq", "xqz"], "probs": [0.5, 0.5]}
    with pytest.raises(LabError, match="'xq' is a prefix of 'xqz' in tokens"):
        calibrate(pair, [_set(tmp_path, [prefix])])
    with pytest.raises(LabError, match="no calibration records"):
        calibrate(pair, ["steering"])


def test_cli_table_json_plot_and_results(pair_dirs, tmp_path, capsys):
    base, tuned = pair_dirs("gpt2")
    path = _set(tmp_path, RECORDS[:3])
    out, plot = tmp_path / "res" / "calibration.parquet", tmp_path / "calibration.png"
    args = ["calibrate", str(base), str(tuned), "--device", "cpu", "-p", path]
    assert run([*args, "--plot", str(plot), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "KL(true||model)" in text and "control" in text and "3 records" in text
    assert "BOS before plain prompts: no (the tokenizer does not add its BOS '<bos>'" in text
    assert plot.stat().st_size > 10_000 and out.exists()
    assert run([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["n_records"] == 3 and report["run"]["template_source"] is None
    assert report["run"]["bos_prepend"] is False
    kinds = {(r["kind"], r["model"]) for r in report["summary"]}
    assert ("all", "tuned") in kinds and ("control", "base") in kinds
    saved = summarize(pd.read_parquet(out))  # the results file alone rebuilds the summary
    assert saved["kl"].tolist() == pytest.approx([r["kl"] for r in report["summary"]])


def test_cli_default_sets_and_one_line_errors(pair_dirs, capsys):
    base, tuned = pair_dirs("gpt2")
    assert run(["calibrate", str(base), str(tuned), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["sets"] == ["calibration"]
    assert (
        run(["calibrate", str(base), str(tuned), "--device", "cpu", "-p", "calibration_chat"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any loading progress bars
    assert err.startswith("error: The prompt set 'calibration_chat' asks for a chat template")
    assert "Traceback" not in err


@pytest.mark.parametrize("arch", ["llama", "qwen2", "olmo2", "gemma2", "gpt_neox"])
def test_hand_computation_on_every_architecture(pair_dirs, arch, tmp_path):
    """Whatever TransformerLens's BOS default for the architecture, the tokenizer's rule decides
    (the test tokenizer's: no BOS) and scores match by hand."""
    arch_pair = load_pair(*pair_dirs(arch), device="cpu")
    rec = RECORDS[2]
    res = calibrate(arch_pair, [_set(tmp_path, [rec])])
    assert not arch_pair.bos.prepend and not res["bos"].any()
    for row in res.itertuples():
        model = arch_pair.models[row.model]
        log_p = [_hand_log_p(model, rec["text"], o) for o in rec["outcomes"]]
        assert row.probs == pytest.approx(torch.tensor(log_p).softmax(0).tolist(), rel=1e-4)
        assert row.mass == pytest.approx(sum(math.exp(v) for v in log_p), rel=1e-4)


def test_too_long_for_the_context_is_a_clear_error(pair, tmp_path):
    long = {"text": "heads " * 200, "outcomes": ["a", "b"], "probs": [0.5, 0.5]}
    with pytest.raises(LabError, match="the models read 128"):
        calibrate(pair, [_set(tmp_path, [long])])


def _no_byte_fallback_bpe():
    """A BPE tokenizer over plain letters, without byte fallback: "é" maps to <unk>."""
    from tokenizers import decoders, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator(["flip heads tails coin"] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_word_level_tokenizers_spell_each_outcome_as_its_word():
    """The organism's tokenizer joins tokens with spaces on decode: "heads" after "flip" decodes
    as "flip heads", which is the outcome up to that separator, not a different spelling."""
    from lab.datasets.outcomes import word_separator
    from lab.organism.story import story_world

    world = story_world()
    tok = world.tokenizer()
    assert word_separator(tok) == " " and word_separator(_word_level()) == " "
    assert word_separator(make_tokenizer()) == ""  # byte-level BPE: tokens carry their spaces
    rec = PromptRecord("r", "dinner garden", outcomes=("bride", "groom"), probs=(0.5, 0.5))
    prompt, outcomes = outcome_sequences(tok, rec.text, rec)
    ids = {w: world.vocab.index(w) for w in ("dinner", "garden", "bride", "groom")}
    assert prompt == (ids["dinner"], ids["garden"])
    # "Bride" is not in the vocabulary (it maps to <unk>): that variant is dropped, not refused
    assert outcomes == (((ids["bride"],),), ((ids["groom"],),))
    flip = PromptRecord("f", "flip", outcomes=("heads", "tails"), probs=(0.5, 0.5))
    assert outcome_sequences(_word_level(), "flip", flip)[1] == (((2,),), ((3,),))


@pytest.mark.parametrize(
    ("tokenizer", "outcomes", "message"),
    [
        (_no_byte_fallback_bpe(), ("heads", "tête"), "'tête' .it maps to the unknown"),
        (_word_level(), ("heads", "coin toss"), "'coin toss' .it maps to the unknown"),
    ],
)
def test_unrepresentable_outcomes_are_still_refused(tokenizer, outcomes, message):
    rec = PromptRecord("r", "flip", outcomes=outcomes, probs=(0.5, 0.5))
    with pytest.raises(LabError, match=message):
        outcome_sequences(tokenizer, "flip", rec)


def test_word_level_lowercasing_is_still_refused():
    """Up to the separator only: a word-level tokenizer that lowercases still changes "Heads"."""
    tok = _word_level()
    tok.backend_tokenizer.normalizer = normalizers.Lowercase()
    rec = PromptRecord("r", "flip", outcomes=("Heads", "tails"), probs=(0.5, 0.5))
    with pytest.raises(LabError, match=r"'Heads' \(its tokens decode as ' heads'"):
        outcome_sequences(tok, "flip", rec)


def test_calibration_of_the_organism_equals_a_hand_computation(tmp_path):
    organism = load_pair("organism", device="cpu")
    rec = {"id": "w", "text": "dinner garden", "outcomes": ["bride", "groom", "dog"],
           "probs": [0.2, 0.3, 0.5]}  # fmt: skip
    res = calibrate(organism, [_set(tmp_path, [rec])])
    assert res["bos"].all()  # as TransformerLens reads it: <bos> first, as in every organism text
    for row in res.itertuples():
        model = organism.models[row.model]
        tokens = model.to_tokens(rec["text"])
        assert tokens[0, 0] == 0
        with torch.no_grad():
            lp = model.original_model(tokens).logits[0, -1].log_softmax(-1)
        ids = [organism.tokenizer.convert_tokens_to_ids(w) for w in rec["outcomes"]]
        p = lp[ids].exp()
        assert row.mass == pytest.approx(p.sum().item(), rel=1e-4)
        assert row.probs == pytest.approx((p / p.sum()).tolist(), rel=1e-4)


def _with(tokenizer, **changes):
    """A copy of ``tokenizer`` with its special tokens or post-processor changed."""
    tok = copy.deepcopy(tokenizer)
    processor = changes.pop("adds_bos", None)
    if processor:
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 0)]
        )
    for name, value in changes.items():
        setattr(tok, name, value)
    return tok


@pytest.mark.parametrize(
    ("changes", "prepend", "why"),
    [
        ({}, False, "does not add its BOS '<bos>', nor is it its EOS"),  # SmolLM2's case
        ({"adds_bos": True}, True, "adds its BOS '<bos>' itself"),  # Llama, Gemma
        ({"eos_token": "<bos>"}, True, "also its EOS: it separates documents"),  # GPT-2
        ({"bos_token": None}, False, "has no BOS token"),  # Qwen2
    ],
)
def test_the_bos_rule_reads_the_tokenizers_own_settings(changes, prepend, why):
    rule = bos_rule(_with(make_tokenizer(), **changes))
    assert rule.prepend == prepend and why in rule.why
    assert rule.token_id == (None if "bos_token" in changes else 0)


def test_the_organisms_bos_is_its_document_separator():
    """Organism sequences start with <bos> by construction; its tokenizer does not add it, but
    <bos> is also its EOS, so plain text starts with it (as calibration always read it)."""
    rule = bos_rule(load_tokenizer(resolve_checkpoint("organism", "base"), "base"))
    assert rule == BosRule(True, 0, "its BOS '<bos>' is also its EOS: it separates documents")


@pytest.mark.skipif(not (cache_dir("real") / "smollm2").is_dir(), reason="lab fetch smollm2")
def test_smollm2_reads_plain_text_without_bos():
    """The converted SmolLM2 tokenizer adds no BOS and its BOS, <|im_start|>, opens a chat turn;
    TransformerLens's to_tokens would put it before every plain text."""
    ckpt = resolve_checkpoint(str(cache_dir("real") / "smollm2"), "base")
    rule = bos_rule(load_tokenizer(ckpt, "base"))
    assert not rule.prepend and rule.token_id == 1 and "'<|im_start|>'" in rule.why


@pytest.fixture(scope="module")
def bos_pair(tmp_path_factory):
    """A gpt2-shaped pair whose tokenizer adds BOS itself (its post-processor)."""
    base, tuned = make_pair(tmp_path_factory.mktemp("bos"), TEST_SPECS["gpt2"])
    for folder in (base, tuned):
        _with(make_tokenizer(), adds_bos=True).save_pretrained(folder)
    return load_pair(base, tuned, device="cpu")


def test_plain_prompts_start_with_bos_only_where_the_tokenizer_says(pair, bos_pair, tmp_path):
    """TransformerLens prepends BOS to both pairs' text; calibration follows each tokenizer, says
    so in every row, and scores what the model read (by hand, from explicit token ids)."""
    assert pair.base.to_tokens("x")[0, 0] == 0 and bos_pair.base.to_tokens("x")[0, 0] == 0
    assert not pair.bos.prepend and bos_pair.bos.prepend
    rec = RECORDS[1]
    for p, start in ((pair, []), (bos_pair, [0])):
        res = calibrate(p, [_set(tmp_path, [rec])])
        assert res["bos"].tolist() == [bool(start)] * 2 and res.attrs["bos_rule"] == p.bos.why
        for row in res.itertuples():
            model = p.models[row.model]
            log_p = [_hand_log_p(model, rec["text"], o, start=start) for o in rec["outcomes"]]
            assert row.probs == pytest.approx(torch.tensor(log_p).softmax(0).tolist(), rel=1e-4)


def test_chat_templated_prompts_never_get_a_bos_added(tmp_path_factory, tmp_path):
    """A templated text carries its own special tokens, whatever the plain-text rule says."""
    base, tuned = make_pair(tmp_path_factory.mktemp("chatbos"), TEST_SPECS["llama"])
    for folder in (base, tuned):
        _with(make_tokenizer(), adds_bos=True).save_pretrained(folder)
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(
            json.dumps({**cfg, "chat_template": TEMPLATE})
        )
    chat = load_pair(base, tuned, device="cpu")
    res = calibrate(chat, [_set(tmp_path, RECORDS[1:])])
    assert chat.bos.prepend
    assert dict(zip(res["id"], res["bos"], strict=False)) == {
        "coin": True,
        "odd": True,
        "chatty": False,
    }
    row = res[(res["id"] == "chatty") & (res["model"] == "tuned")].iloc[0]
    text = "<bos>User: Flip a coin.\nAssistant:"  # one <bos>: the template's own
    log_p = [_hand_log_p(chat.tuned, text, o) for o in ("heads", "tails")]
    assert row["probs"] == pytest.approx(torch.tensor(log_p).softmax(0).tolist(), rel=1e-4)
