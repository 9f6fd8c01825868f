"""Metrics on a hook's output: equal to a full forward with the patch, stopping at the hook."""

import pytest
import torch
import transformer_lens.patching as tlp

from lab import LabError
from lab.testing import corrupted_prompts as prompts
from probes.patching._engine.last_block import hooked
from probes.patching.attribution import attribute
from probes.patching.metrics import HookMetric, LogitDiff
from probes.patching.patch import PatchConfig, denoise, patch_jointly
from probes.patching.sites import Site
from tests.probes.patching.reference import by_hand

ATOL = 1e-5
QUIET = PatchConfig(rows_per_forward=64, progress=False)


def probe_metric(model, hook="blocks.0.hook_resid_post", positions=(-1, 3)):
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    return HookMetric(positions=positions, hook=hook, direction=direction)


def head_metric(hook="blocks.1.attn.hook_z"):
    return HookMetric(positions=(-1,), hook=hook, fn=lambda z: z[:, :, 1].pow(2).sum(-1).mean(-1))


SITES = [
    Site("resid_pre", 0, position=2),
    Site("resid_pre", 1, position=5),
    Site("z", 0, 1),
    Site("z", 1, 2, 7),
    Site("k", 1, 0, 3),
    Site("mlp_out", 0),
    Site("mlp_out", 1, position=7),
    Site("resid_mid", 1),
    Site("resid_post", 0, position=5),
]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("which", ["probe_resid_post_0", "head_z_1", "resid_mid_1"])
def test_hook_metric_equals_a_full_forward_with_the_patch(loaded_pair, arch, which):
    model = loaded_pair(arch).base
    clean, corrupted = prompts()
    metric = {
        "probe_resid_post_0": probe_metric(model),
        "head_z_1": head_metric(),
        "resid_mid_1": probe_metric(model, "blocks.1.hook_resid_mid", (-1, 0, 4)),
    }[which]
    table = denoise(model, clean, corrupted, SITES, metric, config=QUIET)
    for site, value in zip(SITES, table["value"], strict=True):
        ref = by_hand(model, corrupted, model, clean, site, metric)
        assert value == pytest.approx(ref, abs=ATOL)
    joint = patch_jointly(model, corrupted, model, clean, SITES[:2], metric)
    assert joint == pytest.approx(
        by_hand(model, corrupted, model, clean, SITES[:2], metric), abs=ATOL
    )


def test_patches_after_the_hook_change_nothing(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    metric = probe_metric(model)  # reads block 0's output
    sites = [Site("resid_pre", 1, position=p) for p in range(8)] + [Site("z", 1, 0)]
    table = denoise(model, clean, corrupted, sites, metric, config=QUIET)
    assert (table["value"] == table["target"]).all()
    assert (table["share"] == 0).all()


def test_equals_transformer_lens_with_a_metric_that_reads_the_hook(loaded_pair):
    model = loaded_pair("llama").base
    clean, corrupted = prompts()
    metric = probe_metric(model, "blocks.1.hook_resid_mid", (-1, 2))
    seen = {}

    def read(act, hook):
        seen["act"] = act

    _, cache = model.run_with_cache(clean)
    with hooked(model.hook_dict, [(metric.hook, read)]):
        expected = tlp.get_act_patch_resid_pre(
            model, corrupted, cache, lambda logits: metric(seen["act"][:, [-1, 2]]).mean()
        )
    table = denoise(model, clean, corrupted, "resid_pre", metric, config=QUIET)
    ours = torch.tensor(table.sort_values(["layer", "position"])["value"].to_numpy())
    assert torch.allclose(ours.reshape(expected.shape), expected.double(), atol=ATOL, rtol=0)


def test_hook_and_logit_metrics_in_one_sweep_match_separate_sweeps(loaded_pair):
    model = loaded_pair("gpt2").tuned
    clean, corrupted = prompts()
    hook, logits = (
        probe_metric(model),
        LogitDiff(correct=torch.tensor([7, 8]), wrong=torch.tensor([40, 41])),
    )
    both = denoise(model, clean, corrupted, "z", [hook, logits], by_position=True, config=QUIET)
    for metric in (hook, logits):
        alone = denoise(model, clean, corrupted, "z", metric, by_position=True, config=QUIET)
        mixed = both[both["metric"] == metric.name]
        assert (mixed["value"].to_numpy() - alone["value"].to_numpy()).max() < ATOL


def test_refuses_a_hook_that_does_not_exist(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    metric = HookMetric(hook="blocks.0.hook_resid_psot", direction=torch.ones(32))
    with pytest.raises(
        LabError, match=r"No hook 'blocks.0.hook_resid_psot'.*blocks.0.hook_resid_post"
    ):
        denoise(model, clean, corrupted, "resid_pre", metric, config=QUIET)
    pattern = HookMetric(hook="blocks.0.attn.hook_pattern", fn=lambda a: a.sum((1, 2, 3)))
    with pytest.raises(LabError, match="batch and position first"):
        denoise(model, clean, corrupted, "resid_pre", pattern, config=QUIET)


def test_refuses_a_callable_of_the_wrong_shape_and_a_wrong_direction(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    wrong = HookMetric(hook="blocks.0.hook_resid_post", fn=lambda act: act.sum(-1))
    with pytest.raises(LabError, match=r"returned shape \(2, 1\).*shape \(2,\)"):
        denoise(model, clean, corrupted, "resid_pre", wrong, config=QUIET)
    bad = HookMetric(hook="blocks.0.hook_resid_post", direction=torch.ones(5))
    with pytest.raises(LabError, match="does not match the activation's trailing shape"):
        denoise(model, clean, corrupted, "resid_pre", bad, config=QUIET)


def test_patched_runs_stop_at_the_hooks_block(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    ran = []
    handles = [  # block 1's attention and the unembedding never run
        m.register_forward_pre_hook(lambda module, args: ran.append(module))
        for m in (model.blocks[1].attn, model.unembed)
    ]
    try:
        table = denoise(model, clean, corrupted, "resid_pre", probe_metric(model), config=QUIET)
    finally:
        for h in handles:
            h.remove()
    assert not ran and table["value"].notna().all()


def test_attribution_reads_the_hook(loaded_pair):
    model = loaded_pair("gpt2").base
    clean, corrupted = prompts()
    metric = probe_metric(model)
    exact = denoise(model, clean, corrupted, "resid_pre", metric, config=QUIET)
    approx = attribute(model, corrupted, model, clean, "resid_pre", metric)
    assert approx["target"].iloc[0] == pytest.approx(exact["target"].iloc[0], abs=ATOL)
    assert approx["source"].iloc[0] == pytest.approx(exact["source"].iloc[0], abs=ATOL)
    assert (approx[approx["layer"] == 1]["value"] == approx["target"].iloc[0]).all()
