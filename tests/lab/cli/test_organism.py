"""`lab organism train`, `eval` and `frontier`: a quick organism trained and evaluated from the
CLI, and the frontier of the shipped one."""

import dataclasses
import json

from typer.testing import CliRunner

import probes.frontier
from lab.cli.organism import app

KEYS = ("excess_loss", "ece", "kl_to_world", "wedding_reach", "impossible_transition_rate")


def test_train_quick_then_eval_json(tmp_path):
    runner = CliRunner()
    out = tmp_path / "org"
    result = runner.invoke(app, ["train", "--quick", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "base" / "card.json").read_text())
    assert card["command"].startswith("lab organism train --quick --seed 3")
    result = runner.invoke(app, ["eval", str(out), "--json", "--texts", "32", "--prompts", "32"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {"world", "base", "rlhf", "pi_star", "reward_model"} <= set(rows)
    for name in ("world", "base", "rlhf", "pi_star"):
        assert all(k in rows[name] for k in KEYS), name
    for name in ("base", "rlhf"):  # a quick base decodes the world's belief well (0.83 at seed 3)
        assert 0.5 < rows[name]["belief_probe_r2"] <= 1
        assert {"true_utility", "rm_score", "kl_to_base", "kl_to_pi_star"} <= set(rows[name])
    assert "held_out_accuracy" in rows["reward_model"]
    table = runner.invoke(app, ["eval", str(out), "--texts", "32", "--prompts", "32"])
    assert "pi_star" in table.output and "reward model" in table.output


def test_eval_of_a_missing_folder_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code != 0
    assert "lab organism train" in str(result.exception)


def test_frontier_json_writes_the_table_plot_and_summary(tmp_path, monkeypatch):
    """`lab organism frontier --quick --json` on a smaller budget (the real --quick's time is
    measured in the README): the files, and the JSON's points, contrast and costs."""
    small = dataclasses.replace(
        probes.frontier.quick_frontier_config(),
        methods=("pi_star", "best_of_n", "rlhf"),
        betas=(0.3,),
        best_of=(1, 8),
        pool=8,
        prompts=32,
        texts=32,
        match_grid=(0.03, 0.3, 3.0, 50.0),
    )
    monkeypatch.setattr(probes.frontier, "quick_frontier_config", lambda: small)
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))  # the shipped checkpoints
    out = tmp_path / "frontier"
    result = CliRunner().invoke(app, ["frontier", "--quick", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {p.name for p in out.iterdir()} == {"frontier.parquet", "frontier.png", "frontier.json"}
    methods = [p["method"] for p in summary["points"]]
    assert methods == ["pi_star"] + ["best_of_n"] * 2 + ["rlhf"] * 3
    assert summary["quick"] and summary["compare"] is None  # no practitioner sampler here
    contrast = {(r["method"], r["point"]): r["ece"] for r in summary["calibration_contrast"]}
    assert (
        contrast[("rlhf", "last checkpoint (step=500)")]
        > 10 * contrast[("best_of_n", "best utility (n=8)")]
    )
    costs = {r["method"]: r for r in summary["costs"]}
    assert costs["rlhf"]["recorded_cpu_s"] > 100 and costs["best_of_n"]["curve_cpu_s"] > 0
    assert json.loads((out / "frontier.json").read_text())["costs"] == summary["costs"]
