"""Planted organisms: component names, masks, the masked RL and the written pair."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lab import load_pair
from lab.errors import LabError
from lab.models.checkpoints import load_model, local_checkpoint, organism_dir
from lab.organism.components import (
    component_masks,
    component_names,
    constrain_change,
    parse_components,
    relative_change,
)
from lab.organism.localization import auroc
from lab.organism.plant import change_targets, plant, quick_plant_config, rl_sphere
from probes.components.classify import component_name
from probes.patching.sites import Site


def _tiny(n_layer=2, n_head=4, d=32) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=20, n_positions=8, n_embd=d, n_layer=n_layer, n_head=n_head)
    )


def test_names_match_probes_and_aliases_are_read():
    names = component_names(2, 4)
    assert names[:5] == ["L0H0", "L0H1", "L0H2", "L0H3", "L0 MLP"] and len(names) == 10
    assert component_name(Site("z", 1, 3)) in names and component_name(Site("mlp_out", 1)) in names
    assert parse_components("L1h3, l0.mlp,L0MLP,L1 MLP", 2, 4) == ["L1H3", "L0 MLP", "L1 MLP"]


def test_bad_planted_sets_are_refused():
    with pytest.raises(LabError, match=r"valid names: L0H0, L0H1.*L1 MLP"):
        parse_components("L2H5,L0H1", 2, 4)
    with pytest.raises(LabError, match="L0H9"):
        parse_components(["L0H9"], 2, 4)
    with pytest.raises(LabError, match="empty"):
        parse_components(" , ", 2, 4)
    with pytest.raises(LabError, match="covers all 10"):
        parse_components(component_names(2, 4), 2, 4)


def test_head_mask_owns_its_qkv_columns_and_output_rows():
    model = _tiny()
    masks = component_masks(model, "L1H2")
    d, hd = 32, 8
    w = masks["transformer.h.1.attn.c_attn.weight"]
    cols = w[0].nonzero().squeeze(-1).tolist()
    assert cols == [p * d + 2 * hd + i for p in range(3) for i in range(hd)]
    assert w.all(0).sum() == 3 * hd and w.any(1).all()
    assert masks["transformer.h.1.attn.c_attn.bias"].sum() == 3 * hd
    rows = masks["transformer.h.1.attn.c_proj.weight"]
    assert rows[:, 0].nonzero().squeeze(-1).tolist() == list(range(16, 24))
    assert set(masks) == {
        f"transformer.h.1.attn.c_{k}" for k in ("attn.weight", "attn.bias", "proj.weight")
    }
    mlp = component_masks(model, "L0 MLP")
    assert set(mlp) == {
        f"transformer.h.0.mlp.c_{a}.{b}" for a in ("fc", "proj") for b in ("weight", "bias")
    }
    assert all(m.all() for m in mlp.values())


def test_relative_change_and_auroc():
    a = _tiny()
    b = _tiny()
    with torch.no_grad():
        b.transformer.h[0].mlp.c_fc.weight.mul_(1.5)  # a quarter of the MLP's entries by norm
    change = relative_change(a, b)
    assert change["L0H1"] == 0 and 0.1 < change["L0 MLP"] < 0.5
    assert auroc(change, ["L0 MLP"]) == 1.0
    assert auroc(change, ["L0H1"]) == pytest.approx(4 / 9)
    with pytest.raises(LabError, match="at least one"):
        auroc(change, [])


def test_constrain_change_rescales_only_the_owned_entries():
    a, b = _tiny(), _tiny()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    names = component_names(2, 4)
    masks = {n: component_masks(a, n) for n in names}
    params = {k: p.data for k, p in b.named_parameters()}
    ref = {k: p.detach() for k, p in a.named_parameters()}
    before = {k: p.clone() for k, p in params.items()}
    constrain_change(params, ref, masks, {"L0H1": 2.0, "L1 MLP": 0.05}, exact=True)
    change = relative_change(a, b)
    assert change["L0H1"] == pytest.approx(2.0) and change["L1 MLP"] == pytest.approx(0.05)
    owned = masks["L0H1"]["transformer.h.0.attn.c_attn.weight"]
    w = params["transformer.h.0.attn.c_attn.weight"]
    assert torch.equal(w[~owned], before["transformer.h.0.attn.c_attn.weight"][~owned])
    assert torch.equal(params["transformer.h.0.ln_1.weight"], before["transformer.h.0.ln_1.weight"])
    ball = {"L0H1": 3.0, "L1 MLP": 0.01}  # a ball: only what lies outside moves
    constrain_change(params, ref, masks, ball, exact=False)
    change = relative_change(a, b)
    assert change["L0H1"] == pytest.approx(2.0) and change["L1 MLP"] == pytest.approx(0.01)


def test_change_targets_share_one_law_for_planted_and_not():
    cfg = quick_plant_config()
    names = component_names(4, 8)
    t = change_targets(names, cfg, seed=5)
    low, high = cfg.change_range
    assert list(t) == names and all(low <= v <= high for v in t.values())
    assert t == change_targets(names, cfg, seed=5) and t != change_targets(names, cfg, seed=6)
    with pytest.raises(LabError, match="change_range"):
        change_targets(names, type(cfg)(change_range=(0.0, 1.0)), seed=0)


def test_rl_sphere_ramps_the_change_after_each_step():
    a, b = _tiny(), _tiny()
    masks = {n: component_masks(a, n) for n in ("L0H1",)}
    opt = torch.optim.SGD(b.parameters(), lr=1.0)
    after_step = rl_sphere(a, masks, {"L0H1": (0.1, 0.5)}, steps=2)
    for step, want in ((1, 0.3), (2, 0.5)):
        opt.zero_grad()
        (-sum(p.square().sum() for p in b.parameters())).backward()
        opt.step()
        after_step(b, step)
        assert relative_change(a, b)["L0H1"] == pytest.approx(want)
    opt.step()  # a step without it leaves the sphere: nothing global was left installed
    assert relative_change(a, b)["L0H1"] > 0.6


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted") / "pair"
    card = plant("L0H1,L1 MLP", out, quick_plant_config(), seed=3, base=organism_dir("base"))
    return out, card


def _params(folder):
    return dict(load_model(GPT2LMHeadModel, local_checkpoint(folder)).named_parameters())


def test_frozen_parameters_keep_their_post_drift_values_bit_for_bit(planted):
    out, _ = planted
    drift, tuned, base = _params(out / "drift"), _params(out / "tuned"), _params(out / "base")
    model = GPT2LMHeadModel(GPT2Config.from_pretrained(out / "base"))
    masks = {}
    for name in ("L0H1", "L1 MLP"):
        for k, m in component_masks(model, name).items():
            masks[k] = masks.get(k, torch.zeros_like(m)) | m
    moved_planted = 0
    for k, p in tuned.items():
        m = masks.get(k, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(p.detach()[~m], drift[k].detach()[~m]), k  # frozen: bit for bit
        moved_planted += int((p.detach()[m] != drift[k].detach()[m]).sum())
    assert moved_planted > 1000  # the planted slices did train
    changed = [k for k in drift if not torch.equal(drift[k], base[k])]
    assert len(changed) == len(drift)  # the drift moved every weight


def test_changes_end_at_their_draws(planted):
    """The drift ends every non-planted component exactly at its drawn relative change, a
    planted one at ``planted_drift`` of it; RL then takes a planted one to its draw."""
    out, card = planted
    cfg = quick_plant_config()
    load = {r: load_model(GPT2LMHeadModel, local_checkpoint(out / r)) for r in ("base", "drift")}
    drift = relative_change(load["base"], load["drift"])
    target, final = card["change_target"], card["relative_weight_change"]
    for c, t in target.items():
        planted_ = c in card["planted"]
        assert drift[c] == pytest.approx(t * (cfg.planted_drift if planted_ else 1.0), rel=1e-4)
        assert final[c] == pytest.approx(t, rel=1e-4)


def test_pair_loads_and_card_reports(planted):
    out, card = planted
    pair = load_pair(out / "base", out / "tuned", device="cpu")
    assert pair is not None
    on_disk = json.loads((out / "tuned" / "card.json").read_text())
    assert on_disk["planted"] == ["L0H1", "L1 MLP"] and on_disk["seed"] == 3
    assert set(on_disk["wedding_reach"]) == {"base", "drift", "tuned"}
    assert 0 <= on_disk["weight_norm_auroc"] <= 1
    assert on_disk["wall_time_s"]["total"] > 0
    assert json.loads((out / "drift" / "card.json").read_text())["role"] == "drift"
    assert card["weight_norm_auroc"] == on_disk["weight_norm_auroc"]
