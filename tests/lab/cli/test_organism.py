"""`lab organism train` and `eval`: a quick organism trained and evaluated from the CLI."""

import json

from typer.testing import CliRunner

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
