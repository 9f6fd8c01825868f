"""``lab steer``: fit or load a Q head, sample the base reweighted by it; one-line refusals."""

from __future__ import annotations

import json

from lab.cli import run

_FAST = ["--texts", "16", "--n", "4", "--device", "cpu"]


def test_organism_oracle_json_then_saved_head_reused(tmp_path, capsys):
    head = tmp_path / "qhead"
    assert run(["steer", "--beta", "1", "--json", "--save", str(head), *_FAST]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "oracle" and out["layer"] == 2 and out["betas"] == [0.1, 0.3, 1, 3]
    assert {"true_utility", "rm_score", "kl_to_base", "kl_to_pi_star"} <= set(out["metrics"])
    assert len(out["samples"]) == 4 and " | " in out["samples"][0]
    assert (tmp_path / "qhead.json").exists() and (tmp_path / "qhead.safetensors").exists()
    assert run(["steer", "--beta", "0.5", "--head", str(head), "--top-k", "57", *_FAST]) == 0
    text = capsys.readouterr().out
    assert "kl_to_pi_star" in text and "source " + str(head) in text


def test_refusals_are_one_line(tmp_path, capsys):
    assert run(["steer", "--beta", "0", *_FAST]) == 1
    assert "beta must be a finite number > 0" in capsys.readouterr().err
    head = tmp_path / "qhead"
    assert run(["steer", "--beta", "1", "--save", str(head), "--layer", "1", *_FAST]) == 0
    capsys.readouterr()
    assert run(["steer", "--beta", "1", "--head", str(head), "--layer", "2", *_FAST]) == 1
    assert "reads layer 1; got layer 2" in capsys.readouterr().err
    assert run(["steer", "--beta", "5", "--head", str(head), *_FAST]) == 1
    assert "outside the Q head's grid" in capsys.readouterr().err


def test_any_pair_with_a_word_reward(pair_dirs, capsys):
    base, tuned = pair_dirs("gpt2")
    args = ["steer", "--pair", str(base), "--tuned", str(tuned), "--beta", "0.3", "--json"]
    words = ["--reward", "words:the,and", "--new-tokens", "4", "--texts", "64", "--n", "4"]
    assert run([*args, *words, "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "practitioner" and len(out["samples"]) == 4
    assert {"kl_to_base", "reward", "base_reward"} <= set(out["metrics"])
    assert run([*args, "--device", "cpu"]) == 1
    assert "needs --reward" in capsys.readouterr().err
