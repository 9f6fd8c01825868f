"""Hook selection: names, globs, suffixes, one name per hook point, firing order, refusals."""

from __future__ import annotations

import pytest

from lab.activations.hooks import hook_point, match_hooks, plan_hooks
from lab.errors import LabError
from lab.models.pair import load_pair

NAMES = [
    "hook_embed",
    "blocks.0.hook_resid_post",
    "blocks.0.attn.hook_z",
    "blocks.1.hook_resid_post",
    "blocks.1.attn.hook_z",
]


def test_match_names_globs_and_suffixes():
    assert match_hooks("resid_post", NAMES) == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    assert match_hooks("hook_resid_post", NAMES) == match_hooks("blocks.*.hook_resid_post", NAMES)
    assert match_hooks("attn.hook_z, hook_embed", NAMES) == [NAMES[0], NAMES[2], NAMES[4]]
    assert match_hooks(["blocks.1.attn.hook_z"], NAMES) == ["blocks.1.attn.hook_z"]


def test_unknown_hook_lists_close_matches():
    with pytest.raises(LabError, match=r"No hook matches 'blocks.0.hook_resid_pst'.*Did you mean"):
        match_hooks("blocks.0.hook_resid_pst", NAMES)
    with pytest.raises(LabError, match="No hooks given"):
        match_hooks(" , ", NAMES)


@pytest.fixture(scope="module")
def model(pair_dirs):
    return load_pair(*pair_dirs("gpt2"), device="cpu").base


def test_plan_orders_by_firing_and_keeps_one_name_per_point(model):
    plan = plan_hooks(model, "resid_post,blocks.0.hook_out,hook_embed,attn.hook_z")
    assert plan.names == (
        "hook_embed",
        "blocks.0.attn.hook_z",
        "blocks.0.hook_resid_post",  # blocks.0.hook_out is the same hook point
        "blocks.1.attn.hook_z",
        "blocks.1.hook_resid_post",
    )
    assert plan.last == "blocks.1.hook_resid_post"
    assert plan.shapes["blocks.0.attn.hook_z"] == (4, 8)
    assert plan.shapes["hook_embed"] == (32,)


def test_plan_refuses_non_token_hooks(model):
    with pytest.raises(LabError, match="not one row per token"):
        plan_hooks(model, "blocks.0.attn.hook_pattern")
    with pytest.raises(LabError, match="use_attn_result"):
        plan_hooks(model, "blocks.0.attn.hook_result")


def test_hook_point_is_the_hook_dict_entry_for_every_name(model):
    points = model.hook_dict
    for name, point in points.items():  # canonical names and TransformerLens aliases
        assert hook_point(model, name) is point, name
    for missing in ("blocks.9.hook_resid_pre", "blocks.0.hook_nothing", "blocks.0.attn", "x"):
        assert hook_point(model, missing) is None
