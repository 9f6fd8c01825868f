"""The deferred last block: when every site's activation is known before the last block and the
metrics read logits, the capture stops at that block's input and the first cone forward runs it
for the unpatched runs too (lanes of their own). Each result must still equal one full forward
per site."""

import importlib

import pytest
import torch
import transformer_lens.patching as tlp

import probes.patching._engine.capture
import probes.patching._engine.cone
from lab import load_pair
from lab.activations.hooks import StopForward
from lab.testing import TEST_SPECS, make_pair
from lab.testing import corrupted_prompts as prompts
from probes.patching._engine.capture import capture
from probes.patching._engine.last_block import keys_pass, stopped_by
from probes.patching.metrics import LogProb
from probes.patching.patch import PatchConfig, cross_model, denoise
from probes.patching.sites import Site
from tests.probes.patching.reference import by_hand

patch_module = importlib.import_module("probes.patching.patch")  # the package exports patch()
ATOL = 1e-5
QUIET = PatchConfig(rows_per_forward=64, progress=False)


@pytest.fixture
def deferrals(monkeypatch):
    """The ``defer`` argument of every capture made, so a test can see that the path ran."""
    seen = []
    real = patch_module.capture

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("defer", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(patch_module, "capture", spy)
    return seen


def assert_resid_pre_sweep_equals_transformer_lens(model, rows_per_forward):
    """The resid_pre layer x position denoising sweep, reading two positions, against
    ``transformer_lens.patching`` on the same prompts."""
    clean, corrupted = prompts()
    metric = two_reads(2)
    _, cache = model.run_with_cache(clean)
    expected = tlp.get_act_patch_resid_pre(
        model, corrupted, cache, lambda x: metric(x[:, list(metric.positions)]).mean()
    )
    config = PatchConfig(rows_per_forward=rows_per_forward, progress=False)
    table = denoise(model, clean, corrupted, "resid_pre", metric, config=config)
    got = torch.tensor(table.sort_values(["layer", "position"])["value"].to_numpy())
    assert torch.allclose(got, expected.flatten().double(), atol=ATOL, rtol=0)


def two_reads(batch):
    """Reads an early and the last position: cones at later positions reach only one of them."""
    return LogProb(positions=(2, -1), targets=torch.arange(batch) + 3)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("into", ["tuned", "base"])
def test_cross_model_resid_pre_equals_a_full_forward_per_site(
    loaded_pair, monkeypatch, deferrals, split, into
):
    if split:  # the last block in two passes (keys of every row, then the rows read)
        for module in (probes.patching._engine.cone, probes.patching._engine.capture):
            monkeypatch.setattr(module, "worth_splitting", lambda rows, kept, d_model: True)
    pair = loaded_pair("llama")
    tokens, _ = prompts(batch=3)
    metric = two_reads(3)
    sites = [Site("resid_pre", layer, position=p) for layer in (0, 1) for p in (0, 1, 4, 7)]
    sites.append(Site("resid_pre", 1))
    table = cross_model(pair, tokens, sites, metric, into=into, config=QUIET)
    assert deferrals == [True]
    other = "base" if into == "tuned" else "tuned"
    target, source = pair.models[into], pair.models[other]
    for site, value in zip(sites, table["value"], strict=True):
        ref = by_hand(target, tokens, source, tokens, site, metric)
        assert value == pytest.approx(ref, abs=ATOL)
    unpatched = by_hand(target, tokens, target, tokens, None, metric)
    assert table["target"].to_numpy() == pytest.approx(unpatched, abs=ATOL)


def test_sweep_over_several_forwards_equals_transformer_lens(loaded_pair, deferrals):
    """Forwards after the first take the last block's keys that the first one made."""
    model = loaded_pair("gpt2").tuned
    assert_resid_pre_sweep_equals_transformer_lens(model, rows_per_forward=8)
    assert deferrals == [True]


def test_nothing_to_patch_still_reports_both_runs(loaded_pair, deferrals):
    """Identical prompts: every patch is skipped, and the first forward runs the baselines only."""
    model = loaded_pair("gpt2").base
    clean, _ = prompts()
    metric = two_reads(2)
    table = denoise(model, clean, clean.clone(), "resid_pre", metric, config=QUIET)
    assert deferrals == [True]
    with torch.inference_mode():
        expected = float(metric(model(clean)[:, list(metric.positions)]).mean())
    for column in ("value", "target", "source"):
        assert table[column].to_numpy() == pytest.approx(expected, abs=ATOL)


def test_one_layer_model_equals_transformer_lens(tmp_path, deferrals):
    """One block: it is the last, and the capture runs nothing but the embeddings."""
    pair = load_pair(*make_pair(tmp_path, TEST_SPECS["gpt2"], n_layers=1), device="cpu")
    assert_resid_pre_sweep_equals_transformer_lens(pair.base, rows_per_forward=64)
    assert deferrals == [True]


def test_sites_inside_the_last_block_are_not_deferred(loaded_pair, deferrals):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    denoise(model, clean, corrupted, [Site("mlp_out", 1, position=3)], two_reads(2), config=QUIET)
    assert deferrals == [False]


def test_a_stop_ends_only_its_own_forward(loaded_pair):
    """The engine's early stops are lab.activations.hooks.StopForward. One raised by an outer
    forward's hook while the capture runs (the model's hooks persist) must end the outer forward,
    not pass for the capture's own deferral; the keys pass still catches its own stop."""
    model = loaded_pair("llama").base
    tokens, _ = prompts()
    outer = StopForward("outer")

    def stop_outer(act, hook):
        raise outer

    reached = []
    with stopped_by(outer), model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", stop_outer)]):
        capture(model, tokens, (), None, last=1, defer=True)
        reached.append(True)  # a swallowed outer stop: the capture went on with no input
    assert not reached
    run = capture(model, tokens, (), None, last=1, defer=True)  # the deferral alone
    assert run.keys[1] is None and run.block_inputs[1] is not None
    with stopped_by(outer), torch.inference_mode():
        keys, values = keys_pass(model, 1, run.block_inputs[1], run.block_kwargs[1], None)
    assert keys.shape[-2] == tokens.shape[1] and values.shape == keys.shape
