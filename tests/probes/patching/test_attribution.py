"""Attribution patching: exact for linear effects, close to exact patching on a sweep."""

import pytest
import torch

from lab import load_pair
from probes.patching.attribution import attribute, rank_correlation
from probes.patching.metrics import LogitDiff
from probes.patching.patch import PatchConfig, cross_model, denoise, patch_jointly
from probes.patching.table import sites_of

QUIET = PatchConfig(progress=False)


@pytest.fixture(scope="module")
def pair(pair_dirs):
    return load_pair(*pair_dirs("gpt2"), device="cpu")


def prompts():
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(5, 300, (2, 8), generator=g)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(5, 300, (2,), generator=g)
    return clean, corrupted


METRIC = LogitDiff(correct=torch.tensor([7, 8]), wrong=torch.tensor([40, 41]))


def test_last_layer_resid_is_exact_up_to_the_final_norm(pair):
    """The logit difference is nearly linear in the last residual: attribution ~ exact there."""
    clean, corrupted = prompts()
    layer = pair.cfg.n_layers - 1
    exact = denoise(pair.base, clean, corrupted, "resid_post", METRIC, config=QUIET)
    approx = attribute(pair.base, corrupted, pair.base, clean, "resid_post", METRIC)
    e = exact[exact.layer == layer].sort_values("position")["value"].to_numpy()
    a = approx[approx.layer == layer].sort_values("position")["value"].to_numpy()
    assert len(e) == len(a) == 8
    scale = abs(exact["source"].iloc[0] - exact["target"].iloc[0])
    assert abs(e - a).max() < 0.2 * scale


@pytest.mark.parametrize(("kind", "by_position"), [("z", False), ("resid_pre", True)])
def test_tables_line_up_and_rank_correlate(pair, kind, by_position):
    tokens = prompts()[0]
    exact = cross_model(pair, tokens, kind, METRIC, by_position=by_position, config=QUIET)
    approx = attribute(pair.tuned, tokens, pair.base, tokens, kind, METRIC, by_position=by_position)
    assert list(approx.columns) == list(exact.columns)
    assert len(approx) == len(exact)
    assert rank_correlation(exact, approx) > 0.5


def test_rank_correlation_of_a_table_with_itself_is_one(pair):
    table = cross_model(pair, prompts()[0], "mlp_out", METRIC, config=QUIET)
    assert rank_correlation(table, table) == pytest.approx(1.0)


def test_joint_patch_of_one_site_equals_the_sweep(pair):
    clean, corrupted = prompts()
    table = denoise(pair.base, clean, corrupted, "z", METRIC, by_position=False, config=QUIET)
    top = table.reindex(table["share"].abs().sort_values(ascending=False).index).head(1)
    joint = patch_jointly(pair.base, corrupted, pair.base, clean, sites_of(top), METRIC)
    assert joint == pytest.approx(float(top["value"].iloc[0]), abs=1e-5)


def test_resid_mid_gradient_is_the_residual_streams_with_frozen_weights(pair_dirs):
    """Finding 1 in attribution: with frozen weights the gradient at resid_mid took only the MLP
    path. Reference: the gradient at attention's output is the residual's (their sum is it)."""
    model = load_pair(*pair_dirs("llama"), device="cpu").base
    for p in model.parameters():
        p.requires_grad_(False)
    clean, corrupted = prompts()
    metric = LogitDiff(correct=torch.tensor([7, 8]), wrong=torch.tensor([40, 41]))
    table = attribute(model, corrupted, model, clean, "resid_mid", metric)
    _, src = model.run_with_cache(clean)
    _, tgt = model.run_with_cache(corrupted)
    for layer in range(2):
        attn = f"blocks.{layer}.hook_attn_out"
        saved = {}

        def keep(act, hook, saved=saved):
            saved["act"] = act.detach().requires_grad_()
            return saved["act"]

        with torch.enable_grad():
            logits = model.run_with_hooks(corrupted, fwd_hooks=[(attn, keep)])
            (grad,) = torch.autograd.grad(metric(logits[:, -1:]).mean(), saved["act"])
        pre = f"blocks.{layer}.hook_resid_pre"
        delta = (src[pre] + src[attn]) - (tgt[pre] + tgt[attn])
        expected = (grad * delta).sum((0, 2))
        rows = table[table.layer == layer].sort_values("position")
        got = torch.tensor((rows["value"] - rows["target"]).to_numpy(), dtype=torch.float32)
        assert expected.abs().max() > 1e-3
        assert torch.allclose(got, expected, atol=1e-6)
