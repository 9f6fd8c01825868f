"""`lab organism plant`, `plant-suite` and `seeds` in quick mode: seconds each."""

import json
from dataclasses import replace

import torch
from transformers import GPT2LMHeadModel
from typer.testing import CliRunner

from lab.cli.organism import app
from lab.models.checkpoints import load_model, local_checkpoint, organism_dir
from lab.organism.plant import RECIPE, quick_plant_config
from lab.organism.suite import SUITE, plant_suite, rlhf_seeds, suite_dir

DEEP = organism_dir("deep/base")


def test_plant_quick_cli_writes_a_pair(tmp_path):
    out = tmp_path / "p"
    args = ["plant", "--components", "L2H5,L3.mlp", "--seed", "4", "--quick", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "weight-norm AUROC" in result.output
    card = json.loads((out / "tuned" / "card.json").read_text())
    assert card["planted"] == ["L2H5", "L3 MLP"] and card["seed"] == 4
    assert len(card["components"]) == 36 and card["command"].startswith("lab organism plant")
    assert card["base_source"] == str(DEEP)


def test_plant_cli_lists_valid_names_for_an_unknown_component(tmp_path):
    args = ["plant", "--components", "L9H0", "--quick", "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "valid names: L0H0" in str(result.exception) and not (tmp_path / "x").exists()


def test_suite_covers_the_required_shapes():
    sets = [s.components.split(",") for s in SUITE]
    layers = [{int(c.strip()[1]) for c in s} for s in sets]
    heads = [[c for c in s if "H" in c] for s in sets]
    mlps = [[c for c in s if "MLP" in c.upper()] for s in sets]
    assert len(SUITE) >= 8 and len({s.name for s in SUITE}) == len(SUITE)
    assert any(len(h) == 1 and not m for h, m in zip(heads, mlps, strict=True))  # one head
    assert any(len(m) == 1 and not h for h, m in zip(heads, mlps, strict=True))  # one MLP
    assert any(
        len(h) == 2 and not m and len(ly) == 2 for h, m, ly in zip(heads, mlps, layers, strict=True)
    )
    assert any(len(h) == 1 and len(m) == 1 for h, m in zip(heads, mlps, strict=True))
    assert any(ly == {0} for ly in layers) and any(ly == {3} for ly in layers)
    assert any(len(s) >= 3 for s in sets)


def test_plant_suite_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    assert suite_dir() == tmp_path / "cache" / "planted" / "suite"
    first = plant_suite(None, quick_plant_config(), suite=SUITE[:1], progress=False)
    assert first["one-head"]["built"] and (suite_dir() / "one-head" / "tuned").is_dir()
    again = plant_suite(None, quick_plant_config(), suite=SUITE[:1], progress=False)
    assert not again["one-head"]["built"]
    assert again["one-head"]["weight_norm_auroc"] == first["one-head"]["weight_norm_auroc"]


def test_plant_suite_rebuilds_a_pair_of_another_recipe(tmp_path):
    """A card written by another recipe is not taken for the current one: the pair is rebuilt,
    whether the config differs (the old per-component drift scales, other budgets) or only the
    code did (same config, no or another ``recipe``)."""
    cfg = quick_plant_config()
    plant_suite(tmp_path, cfg, suite=SUITE[:1], progress=False)
    path = tmp_path / "one-head" / "tuned" / "card.json"
    card = json.loads(path.read_text())
    assert card["recipe"] == RECIPE
    old = {k: v for k, v in card["config"].items() if k not in ("change_range", "planted_drift")}
    path.write_text(json.dumps({**card, "config": {**old, "drift_spread": 1.5}}))
    assert plant_suite(tmp_path, cfg, suite=SUITE[:1], progress=False)["one-head"]["built"]
    assert json.loads(path.read_text())["config"]["change_range"] == list(cfg.change_range)
    card = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in card.items() if k != "recipe"}))
    assert plant_suite(tmp_path, cfg, suite=SUITE[:1], progress=False)["one-head"]["built"]
    assert not plant_suite(tmp_path, cfg, suite=SUITE[:1], progress=False)["one-head"]["built"]
    other = replace(cfg, change_range=(0.2, 2.0))
    assert plant_suite(tmp_path, other, suite=SUITE[:1], progress=False)["one-head"]["built"]


def test_plant_suite_jobs_build_the_same_pairs(tmp_path):
    cfg = quick_plant_config()
    one = plant_suite(tmp_path / "a", cfg, suite=SUITE[:2], progress=False)
    two = plant_suite(tmp_path / "b", cfg, suite=SUITE[:2], progress=False, jobs=2)
    for name in ("one-head", "one-mlp"):
        assert two[name]["built"]
        assert two[name]["relative_weight_change"] == one[name]["relative_weight_change"]
        assert two[name]["wedding_reach"] == one[name]["wedding_reach"]


def test_rlhf_seeds_rerun_the_shipped_rlhf(tmp_path):
    folders = rlhf_seeds((0, 1), tmp_path, steps=1, progress=False)
    assert [f.name for f in folders] == ["seed-0", "seed-1"]
    w = [
        load_model(GPT2LMHeadModel, local_checkpoint(f / "tuned")).transformer.h[0].mlp.c_fc.weight
        for f in folders
    ]
    assert not torch.equal(w[0], w[1])
    card = json.loads((folders[1] / "tuned" / "card.json").read_text())
    assert card["seed"] == 1 and card["rlhf"]["steps"] == 1 and card["rlhf"]["beta"] == 0.1
    mtime = (folders[0] / "tuned" / "model.safetensors").stat().st_mtime
    rlhf_seeds((0,), tmp_path, steps=1, progress=False)  # already built: skipped
    assert (folders[0] / "tuned" / "model.safetensors").stat().st_mtime == mtime


def test_plant_suite_quick_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    result = CliRunner().invoke(app, ["plant-suite", "--quick", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "1 pairs in" in result.output and "(1 built, 0 cached)" in result.output
    card = json.loads((tmp_path / "planted-quick" / "one-head" / "tuned" / "card.json").read_text())
    assert card["planted"] == ["L2H5"] and card["command"].endswith("--quick")
