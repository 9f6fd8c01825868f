"""`lab organism plant`, `plant-suite` and `seeds` in quick mode: seconds each."""

import json

import torch
from transformers import GPT2LMHeadModel
from typer.testing import CliRunner

from lab.cli.organism import app
from lab.models.checkpoints import load_model, local_checkpoint, organism_dir
from lab.organism.plant import quick_plant_config
from lab.organism.suite import SUITE, plant_suite, rlhf_seeds
from lab.runtime import cache_dir

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
    assert cache_dir("planted") == tmp_path / "cache" / "planted"
    first = plant_suite(None, quick_plant_config(), suite=SUITE[:1], progress=False)
    assert first["one-head"]["built"] and (cache_dir("planted") / "one-head" / "tuned").is_dir()
    again = plant_suite(None, quick_plant_config(), suite=SUITE[:1], progress=False)
    assert not again["one-head"]["built"]
    assert again["one-head"]["weight_norm_auroc"] == first["one-head"]["weight_norm_auroc"]


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
