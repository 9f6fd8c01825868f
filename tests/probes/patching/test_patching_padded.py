"""Padded prompt sets: patching prompts of different lengths in one padded batch (left or
right) equals patching each prompt alone, unpadded, and averaging."""

from dataclasses import replace

import pytest
import torch

import probes.patching._engine.capture
import probes.patching._engine.cone
from lab import LabError
from probes.patching.metrics import LogitDiff, LogProb
from probes.patching.patch import PatchConfig, cross_model, denoise, patch_jointly
from probes.patching.sites import Site
from tests.probes.patching.reference import by_hand

ATOL = 1e-5
QUIET = PatchConfig(rows_per_forward=64, progress=False)
LENGTHS = (8, 5, 3)
N_POS, PAD = 8, 2


def prompt_set(seed=0):
    """Clean prompts of LENGTHS tokens and corrupted copies (one token changed in each)."""
    g = torch.Generator().manual_seed(seed)
    clean = [torch.randint(5, 300, (n,), generator=g) for n in LENGTHS]
    corrupted = [c.clone() for c in clean]
    for c in corrupted:
        c[len(c) // 2] = int(torch.randint(5, 300, (1,), generator=g))
    return clean, corrupted


def pad(prompts, side):
    tokens = torch.full((len(prompts), N_POS), PAD)
    mask = torch.zeros(len(prompts), N_POS, dtype=torch.long)
    for b, p in enumerate(prompts):
        cols = slice(N_POS - len(p), N_POS) if side == "left" else slice(0, len(p))
        tokens[b, cols], mask[b, cols] = p, 1
    return tokens, mask


def first_real(side, b):
    return N_POS - LENGTHS[b] if side == "left" else 0


def metrics():
    return [
        LogProb(positions=(-1, -2), targets=torch.tensor([7, 9, 11])),
        LogitDiff(
            positions=(0, -1), correct=torch.tensor([3, 4, 5]), wrong=torch.tensor([6, 7, 8])
        ),
    ]


def one(metric, b):
    """The metric for prompt b alone."""
    fields = {"targets"} if isinstance(metric, LogProb) else {"correct", "wrong"}
    return replace(metric, **{f: getattr(metric, f)[b : b + 1] for f in fields})


def expected(target, targets, source, sources, site, metric, side):
    """The batch mean of each prompt patched alone; a site on a padding column patches none."""
    values = []
    for b in range(len(targets)):
        own = None
        if site is not None:
            p = None if site.position is None else site.position - first_real(side, b)
            if p is None or 0 <= p < LENGTHS[b]:
                own = replace(site, position=p)
        m = one(metric, b)
        values.append(by_hand(target, targets[b][None], source, sources[b][None], own, m))
    return sum(values) / len(values)


SITES = [
    Site("resid_pre", 0, position=6),
    Site("resid_pre", 1, position=2),
    Site("resid_pre", 1, position=7),
    Site("resid_mid", 0, position=4),
    Site("z", 0, 1),
    Site("z", 1, 2, 5),
    Site("v", 0, 1, 3),
    Site("mlp_out", 1),
    Site("resid_post", 0, position=1),
]


def check(table, target, targets, source, sources, side):
    for m in metrics():
        rows = table[table["metric"] == m.name]
        assert len(rows) == len(SITES)
        base = expected(target, targets, source, sources, None, m, side)
        assert rows["target"].iloc[0] == pytest.approx(base, abs=ATOL)
        for site, value in zip(SITES, rows["value"], strict=True):
            ref = expected(target, targets, source, sources, site, m, side)
            assert value == pytest.approx(ref, abs=ATOL), (site, m.name)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2"])
def test_padded_batch_equals_each_prompt_alone(loaded_pair, arch, side):
    model = loaded_pair(arch).base
    clean, corrupted = prompt_set()
    (c, mask), (k, _) = pad(clean, side), pad(corrupted, side)
    table = denoise(model, c, k, SITES, metrics(), config=QUIET, attention_mask=mask)
    check(table, model, corrupted, model, clean, side)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_with_a_split_last_block(loaded_pair, monkeypatch, side):
    for module in (probes.patching._engine.cone, probes.patching._engine.capture):
        monkeypatch.setattr(module, "worth_splitting", lambda rows, kept, d_model: True)
    model = loaded_pair("olmo2").tuned
    clean, corrupted = prompt_set(2)
    (c, mask), (k, _) = pad(clean, side), pad(corrupted, side)
    table = denoise(model, c, k, SITES, metrics(), config=QUIET, attention_mask=mask)
    check(table, model, corrupted, model, clean, side)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_across_the_pair_equals_each_prompt_alone(loaded_pair, side):
    pair = loaded_pair("qwen2")
    clean, _ = prompt_set(1)
    tokens, mask = pad(clean, side)
    table = cross_model(pair, tokens, SITES, metrics(), config=QUIET, attention_mask=mask)
    check(table, pair.tuned, clean, pair.base, clean, side)


def test_padded_batch_still_tiles_and_joint_patching_takes_the_mask(loaded_pair):
    """The metric scores many patched runs of the padded batch in one call."""
    model = loaded_pair("llama").base
    clean, corrupted = prompt_set()
    (c, mask), (k, _) = pad(clean, "left"), pad(corrupted, "left")
    sizes = []

    class Counted(LogProb):
        def __call__(self, logits):
            sizes.append(logits.shape[0])
            return super().__call__(logits)

    m = Counted(positions=(-1,), targets=torch.tensor([7, 9, 11]))
    table = denoise(model, c, k, "resid_pre", m, config=QUIET, attention_mask=mask)
    assert len(sizes) == 1 and sizes[0] % 3 == 0 and sizes[0] > 3 * 8  # all runs, one call
    site = Site("resid_pre", 1, position=6)
    row = table[(table.layer == 1) & (table.position == 6)]
    joint = patch_jointly(model, k, model, c, [site], m, attention_mask=mask)
    assert joint == pytest.approx(float(row["value"].iloc[0]), abs=ATOL)
    assert joint == pytest.approx(
        expected(model, corrupted, model, clean, site, m, "left"), abs=ATOL
    )


def test_bad_masks_are_refused(loaded_pair):
    model = loaded_pair("gpt2").base
    tokens, mask = pad(prompt_set()[0], "right")
    run = lambda mask, m=metrics()[0]: denoise(  # noqa: E731
        model, tokens, tokens, "resid_pre", m, config=QUIET, attention_mask=mask
    )
    with pytest.raises(LabError, match=r"attention_mask has shape \(3, 7\)"):
        run(mask[:, :7])
    gap = mask.clone()
    gap[0, 3] = 0
    with pytest.raises(LabError, match=r"Prompts \[0\] have padding between real tokens"):
        run(gap)
    empty = mask.clone()
    empty[2] = 0
    with pytest.raises(LabError, match=r"Prompts \[2\] are all padding"):
        run(empty)
    with pytest.raises(LabError, match="prompt 2 has only 3 real tokens"):
        run(mask, LogProb(positions=(-4,), targets=torch.tensor([1, 2, 3])))
