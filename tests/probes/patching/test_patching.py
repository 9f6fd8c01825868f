"""Exact patching equals transformer_lens.patching and a full forward per site patched by hand."""

import pytest
import torch
import transformer_lens.patching as tlp

import probes.patching._engine.capture
import probes.patching._engine.cone
from lab import LabError
from lab.testing import corrupted_prompts as prompts
from probes.patching.metrics import FnMetric, LogitDiff, LogProb
from probes.patching.patch import PatchConfig, cross_model, denoise, noise, patch
from probes.patching.sites import Site
from probes.patching.table import to_grid
from tests.probes.patching.reference import by_hand

ATOL = 1e-5
QUIET = PatchConfig(rows_per_forward=64, progress=False)


def logit_diff(batch=2):
    return LogitDiff(correct=torch.arange(batch) + 7, wrong=torch.arange(batch) + 40)


def tl_metric(metric):
    return lambda logits: metric(logits[:, list(metric.positions)]).mean()


def grid(table, *axes):
    """The table as TransformerLens lays it out (``to_grid``), checked against a plain reshape
    of the rows sorted in TransformerLens's axis order."""
    got = to_grid(table)
    table = table.sort_values(list(axes))
    shape = [table[a].nunique() for a in axes]
    assert torch.equal(got, torch.tensor(table["value"].to_numpy()).reshape(shape))
    return got


TL_SWEEPS = [
    # (site kind, by_position, TransformerLens function, our axes in TL's order)
    ("resid_pre", True, tlp.get_act_patch_resid_pre, ("layer", "position")),
    ("z", False, tlp.get_act_patch_attn_head_out_all_pos, ("layer", "head")),
    ("z", True, tlp.get_act_patch_attn_head_out_by_pos, ("layer", "position", "head")),
    ("k", True, tlp.get_act_patch_attn_head_k_by_pos, ("layer", "position", "head")),
    ("v", False, tlp.get_act_patch_attn_head_v_all_pos, ("layer", "head")),
    ("q", True, tlp.get_act_patch_attn_head_q_by_pos, ("layer", "position", "head")),
    ("mlp_out", True, tlp.get_act_patch_mlp_out, ("layer", "position")),
    ("attn_out", True, tlp.get_act_patch_attn_out, ("layer", "position")),
]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(("kind", "by_position", "tl_fn", "axes"), TL_SWEEPS)
def test_equals_transformer_lens(loaded_pair, arch, kind, by_position, tl_fn, axes):
    model = loaded_pair(arch).base
    clean, corrupted = prompts()
    metric = logit_diff()
    _, cache = model.run_with_cache(clean)
    expected = tl_fn(model, corrupted, cache, tl_metric(metric))
    table = denoise(model, clean, corrupted, kind, metric, by_position=by_position, config=QUIET)
    got = grid(table, *axes)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected.double(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(("kind", "by_position", "tl_fn", "axes"), TL_SWEEPS)
def test_split_last_block_equals_transformer_lens(
    loaded_pair, monkeypatch, arch, kind, by_position, tl_fn, axes
):
    """The last block in two passes (keys and values of every row, then only the rows read),
    forced on: two read positions, so lanes hold uneven numbers of reads."""
    for module in (probes.patching._engine.cone, probes.patching._engine.capture):
        monkeypatch.setattr(module, "worth_splitting", lambda rows, kept, d_model: True)
    model = loaded_pair(arch).base
    clean, corrupted = prompts()
    metric = LogProb(positions=(-1, -4), targets=torch.tensor([3, 9]))
    _, cache = model.run_with_cache(clean)
    expected = tl_fn(model, corrupted, cache, tl_metric(metric))
    table = denoise(model, clean, corrupted, kind, metric, by_position=by_position, config=QUIET)
    got = grid(table, *axes)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected.double(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["qwen2", "olmo2", "gemma2", "gpt_neox"])
def test_equals_transformer_lens_other_families(loaded_pair, arch):
    model = loaded_pair(arch).base
    clean, corrupted = prompts()
    metric = logit_diff()
    _, cache = model.run_with_cache(clean)
    expected = tlp.get_act_patch_resid_pre(model, corrupted, cache, tl_metric(metric))
    table = denoise(model, clean, corrupted, "resid_pre", metric, config=QUIET)
    assert torch.allclose(grid(table, "layer", "position"), expected.double(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("rows_per_forward", [8, 40, 10000])
def test_grouping_does_not_change_results(loaded_pair, rows_per_forward):
    model = loaded_pair("llama").tuned
    clean, corrupted = prompts()
    cfg = PatchConfig(rows_per_forward=rows_per_forward, progress=False)
    one = denoise(model, clean, corrupted, "z", logit_diff(), config=QUIET)
    other = denoise(model, clean, corrupted, "z", logit_diff(), config=cfg)
    assert (one["value"] - other["value"]).abs().max() < ATOL


@pytest.mark.parametrize("into", ["tuned", "base"])
def test_cross_model_equals_by_hand(loaded_pair, into):
    pair = loaded_pair("llama")
    tokens, _ = prompts(batch=3)
    metric = LogProb(positions=(-1, -3), targets=torch.tensor([3, 9, 27]))
    sites = [
        Site("z", 1, 3),
        Site("mlp_out", 0),
        Site("resid_pre", 1, position=4),
        Site("v", 0, 1, 6),
    ]
    table = cross_model(pair, tokens, sites, metric, into=into, config=QUIET)
    other = "base" if into == "tuned" else "tuned"
    for site, value in zip(sites, table["value"], strict=True):
        ref = by_hand(pair.models[into], tokens, pair.models[other], tokens, site, metric)
        assert value == pytest.approx(ref, abs=ATOL)


def test_noise_is_denoise_reversed(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    a = noise(model, clean, corrupted, "resid_pre", logit_diff(), config=QUIET)
    b = denoise(model, corrupted, clean, "resid_pre", logit_diff(), config=QUIET)
    assert a["value"].tolist() == pytest.approx(b["value"].tolist(), abs=ATOL)


def test_share_is_one_when_the_whole_residual_is_patched(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    table = denoise(model, clean, corrupted, [Site("resid_pre", 0)], logit_diff(), config=QUIET)
    row = table.iloc[0]
    assert row["value"] == pytest.approx(row["source"], abs=ATOL)
    assert row["share"] == pytest.approx(1.0, abs=ATOL / abs(row["source"] - row["target"]))
    assert list(table.columns) == [
        "site",
        "layer",
        "head",
        "position",
        "metric",
        "value",
        "target",
        "source",
        "share",
    ]


def test_several_metrics_read_their_own_positions(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    first = LogProb(positions=(3,), targets=torch.tensor([1, 2]))
    last = logit_diff()
    both = denoise(model, clean, corrupted, "mlp_out", [first, last], config=QUIET)
    alone = denoise(model, clean, corrupted, "mlp_out", first, config=QUIET)
    assert set(both["metric"]) == {"LogProb([1,2])@3", "LogitDiff([7,8]-[40,41])"}
    got = both[both["metric"] == first.name]["value"].to_numpy()
    assert got.tolist() == pytest.approx(alone["value"].tolist(), abs=ATOL)
    # mlp_out at positions after 3 cannot change what position 3 reads
    late = both[(both["metric"] == first.name) & (both["position"] > 3)]
    assert (late["value"] - late["target"]).abs().max() < ATOL


# Refusals -------------------------------------------------------------------------------------


def test_refuses_prompts_of_different_lengths(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    with pytest.raises(LabError, match="same number of tokens"):
        denoise(model, clean, corrupted[:, :-1], "resid_pre", logit_diff(), config=QUIET)


def test_refuses_unknown_site(loaded_pair):
    with pytest.raises(LabError, match=r"Unknown patching site 'resid_pri'.*resid_pre"):
        denoise(loaded_pair("gpt2").base, *prompts(), "resid_pri", logit_diff(), config=QUIET)


def test_refuses_site_missing_from_architecture(loaded_pair):
    # GPT-NeoX runs attention and MLP in parallel: there is no residual between them
    with pytest.raises(LabError, match=r"'resid_mid'.*does not exist"):
        denoise(loaded_pair("gpt_neox").base, *prompts(), "resid_mid", logit_diff(), config=QUIET)


def test_refuses_site_out_of_range(loaded_pair):
    with pytest.raises(LabError, match="past the model's 2 layers"):
        denoise(loaded_pair("gpt2").base, *prompts(), [Site("z", 5, 0)], logit_diff(), config=QUIET)


def test_refuses_metric_of_wrong_shape(loaded_pair):
    scalar = FnMetric(fn=lambda logits: logits.mean(), label="scalar")
    with pytest.raises(LabError, match=r"Metric scalar returned shape \(\).*shape \(2,\)"):
        denoise(loaded_pair("gpt2").base, *prompts(), "resid_pre", scalar, config=QUIET)


def test_refuses_models_in_training_mode(loaded_pair):
    pair = loaded_pair("gpt2")
    pair.tuned.train()
    try:
        with pytest.raises(LabError, match="eval mode"):
            cross_model(pair, prompts()[0], "mlp_out", logit_diff(), config=QUIET)
    finally:
        pair.tuned.eval()


def test_one_prompt_and_sites_across_layers_in_one_run(loaded_pair):
    model = loaded_pair("llama").base
    clean, corrupted = prompts(batch=1)
    metric = LogitDiff(correct=torch.tensor([3]), wrong=torch.tensor([4]))
    sites = [Site("resid_pre", 1, position=3), Site("z", 0, 2, 5), Site("k", 1, 0)]
    table = denoise(model, clean, corrupted, sites, metric, config=QUIET)
    for site, value in zip(sites, table["value"], strict=True):
        ref = by_hand(model, corrupted, model, clean, site, metric)
        assert value == pytest.approx(ref, abs=ATOL)


def test_refuses_metric_positions_past_the_prompt(loaded_pair):
    metric = LogProb(positions=(12,), targets=torch.tensor([1, 2]))
    with pytest.raises(LabError, match="reads positions"):
        patch(
            loaded_pair("gpt2").base,
            *prompts()[:1],
            loaded_pair("gpt2").base,
            prompts()[0],
            "z",
            metric,
        )


def test_one_hook_with_single_heads_and_all_heads_in_one_run(loaded_pair):
    """One hook point patched for one head and for all heads, at a position and at all of them,
    in one forward; lanes of layer 1 join the run at block 1."""
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    metric = logit_diff()
    sites = [
        Site("z", 0, 1, 2),
        Site("z", 0, None, 5),
        Site("z", 0, 3),
        Site("z", 1, 0, 4),
        Site("z", 1),
        Site("resid_pre", 1, position=2),
    ]
    cfg = PatchConfig(progress=False, skip_unchanged=False)
    table = denoise(model, clean, corrupted, sites, metric, config=cfg)
    for site, value in zip(sites, table["value"], strict=True):
        assert value == pytest.approx(
            by_hand(model, corrupted, model, clean, site, metric), abs=ATOL
        )
