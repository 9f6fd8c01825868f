"""Residual-stream sites set the residual stream itself, checked against a reference that sets it
directly, without the site's own hook: a block's input (resid_pre) or output (resid_post) replaced
by torch hooks on the block, and the residual between attention and MLP (resid_mid) made by
rewriting attention's output so that the block's input plus it is the value wanted."""

import pytest
import torch

import probes.patching._engine.capture
import probes.patching._engine.cone
import probes.patching.sites
from lab import LabError
from lab.testing import corrupted_prompts as prompts
from probes.patching.metrics import LogProb
from probes.patching.patch import PatchConfig, cross_model, denoise, patch_jointly
from probes.patching.sites import Site, patching_hooks, site_kind

ATOL = 1e-5
QUIET = PatchConfig(rows_per_forward=64, progress=False)
ARCHS = ["gpt2", "llama", "qwen2", "olmo2", "gemma2"]
RESIDUAL = ["resid_pre", "resid_mid", "resid_post"]


def metric(batch=2):
    return LogProb(positions=(-1, -3), targets=torch.arange(batch) + 7)


def residuals(model, tokens, layer):
    """The residual stream of block ``layer`` from its parts: input, input + attention output
    (between attention and MLP), and output."""
    _, cache = model.run_with_cache(tokens)
    pre = cache[f"blocks.{layer}.hook_resid_pre"]
    mid = pre + cache[f"blocks.{layer}.hook_attn_out"]
    post = mid + cache[f"blocks.{layer}.hook_mlp_out"]
    return {"resid_pre": pre, "resid_mid": mid, "resid_post": post}


def set_residual(model, tokens, site, wanted, positions=None):
    """Logits with the residual at ``site`` (all positions, its one, or ``positions``) set to
    ``wanted``'s."""
    block = model.blocks[site.layer]
    pos = slice(None) if site.position is None else site.position
    pos = pos if positions is None else list(positions)
    saved = {}

    def put(x):
        x = x.clone()
        x[:, pos] = wanted[:, pos].to(x.dtype)
        return x

    def pre(module, args, kwargs):
        saved["pre"] = args[0] if args else kwargs["hidden_states"]
        if site.kind != "resid_pre":
            return None
        if args:
            return (put(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": put(kwargs["hidden_states"])}

    def post(module, args, kwargs, out):
        if site.kind != "resid_post":
            return None
        return (put(out[0]), *out[1:]) if isinstance(out, tuple) else put(out)

    def attn(act, hook):  # input + this = wanted, where patched
        if site.kind != "resid_mid":
            return act
        act = act.clone()
        act[:, pos] = (wanted - saved["pre"])[:, pos].to(act.dtype)
        return act

    handles = [
        block.register_forward_pre_hook(pre, with_kwargs=True),
        block.register_forward_hook(post, with_kwargs=True),
    ]
    try:
        with torch.inference_mode():
            hook = f"blocks.{site.layer}.hook_attn_out"
            return model.run_with_hooks(tokens, fwd_hooks=[(hook, attn)])
    finally:
        for h in handles:
            h.remove()


def reference(target, tokens, source, source_tokens, site, m):
    wanted = residuals(source, source_tokens, site.layer)[site.kind]
    logits = set_residual(target, tokens, site, wanted)
    return float(m(logits[:, list(m.positions)]).mean())


def check(table, sites, target, tokens, source, source_tokens, m):
    assert len(table) == len(sites)
    for site, value in zip(sites, table["value"], strict=True):
        ref = reference(target, tokens, source, source_tokens, site, m)
        assert value == pytest.approx(ref, abs=ATOL), site


def sweep(n_layers=2, n_pos=8):
    return [
        Site(kind, layer, None, pos)
        for kind in RESIDUAL
        for layer in range(n_layers)
        for pos in [None, *range(n_pos)]
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_sites_set_the_residual_within_a_model(loaded_pair, arch):
    """Finding 1: resid_mid changed only the MLP's input, not the residual it is added to."""
    model = loaded_pair(arch).base
    clean, corrupted = prompts()
    sites = sweep()
    table = denoise(model, clean, corrupted, sites, metric(), config=QUIET)
    check(table, sites, model, corrupted, model, clean, metric())


@pytest.mark.parametrize("arch", ["llama", "olmo2"])
def test_residual_sites_set_the_residual_with_a_split_last_block(loaded_pair, monkeypatch, arch):
    for module in (probes.patching._engine.cone, probes.patching._engine.capture):
        monkeypatch.setattr(module, "worth_splitting", lambda rows, kept, d_model: True)
    model = loaded_pair(arch).tuned
    clean, corrupted = prompts()
    sites = [s for s in sweep() if s.layer == 1]
    table = denoise(model, clean, corrupted, sites, metric(), config=QUIET)
    check(table, sites, model, corrupted, model, clean, metric())


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_sites_set_the_residual_across_the_pair(loaded_pair, arch):
    pair = loaded_pair(arch)
    tokens, _ = prompts(batch=3)
    m = metric(3)
    sites = sweep()
    table = cross_model(pair, tokens, sites, m, into="tuned", config=QUIET)
    check(table, sites, pair.tuned, tokens, pair.base, tokens, m)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", RESIDUAL)
def test_plain_patch_sets_the_residual(loaded_pair, arch, kind):
    """The one-forward path (joint patching, patched sampling) writes the residual too."""
    pair = loaded_pair(arch)
    tokens, _ = prompts()
    m = metric()
    for site in [Site(kind, 0), Site(kind, 1, position=4)]:
        got = patch_jointly(pair.tuned, tokens, pair.base, tokens, [site], m)
        assert got == pytest.approx(
            reference(pair.tuned, tokens, pair.base, tokens, site, m), abs=ATOL
        )


def test_plain_patch_hooks_equal_the_engine_for_two_resid_mid_sites(loaded_pair):
    """Two resid_mid sites at one hook point in one forward: both reach the residual."""
    model = loaded_pair("llama").base
    clean, corrupted = prompts()
    sites = [Site("resid_mid", 0, position=2), Site("resid_mid", 0, position=5)]
    _, cache = model.run_with_cache(clean)
    with torch.inference_mode():
        logits = model.run_with_hooks(corrupted, fwd_hooks=patching_hooks(sites, cache))
    wanted = residuals(model, clean, 0)["resid_mid"]
    expected = set_residual(model, corrupted, Site("resid_mid", 0), wanted, positions=[2, 5])
    assert torch.allclose(logits, expected, atol=ATOL)


def test_in_place_sites_are_refused_where_a_write_misses_the_residual(loaded_pair, monkeypatch):
    """An architecture whose resid_mid hook sees a copy of the residual is refused by name."""
    model = loaded_pair("qwen2").tuned
    kind = site_kind("resid_mid")
    hook = model.blocks[0].ln2.hook_in

    def copy(act, hook):
        return act.clone()  # a bridge that hands its hook a copy: in-place writes are lost

    probes.patching.sites._IN_PLACE_OK.pop(model, None)
    handle = hook.add_hook(copy, dir="fwd")
    try:
        with pytest.raises(LabError, match=r"'resid_mid'.*does not reach the block's residual"):
            site_kind(kind.name, model)
    finally:
        handle.hook.remove()
        hook.fwd_hooks[:] = [h for h in hook.fwd_hooks if h is not handle]
        probes.patching.sites._IN_PLACE_OK.pop(model, None)
    assert site_kind(kind.name, model) is kind
