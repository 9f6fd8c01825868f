"""``lab info``: a table, JSON for scripts, and one-line errors with a non-zero status."""

from __future__ import annotations

import json

import torch

from lab.cli import run
from lab.models.memory import count_parameters


def test_info_prints_summary(pair_dirs, capsys):
    base, tuned = pair_dirs("gpt2")
    assert run(["info", str(base), str(tuned), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "GPT2LMHeadModel" in out and "layer 1" in out and "n_hook_points" in out


def test_info_json(pair_dirs, capsys):
    base, tuned = pair_dirs("llama")
    assert run(["info", str(base), str(tuned), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_layers"] == 2 and summary["n_kv_heads"] == 2
    assert summary["weights_differ"] is True
    change = summary["relative_weight_change"]
    assert 0 < change["layer 0"] < 0.2 and "layer 1" in change
    assert summary["n_params"] > 0 and summary["n_hook_points"] > 20


def test_info_identical_models_have_no_weight_change(pair_dirs, capsys):
    base, _ = pair_dirs("gpt2")
    assert run(["info", str(base), str(base), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weights_differ"] is False


def test_errors_are_one_line_with_nonzero_status(pair_dirs, capsys):
    base, _ = pair_dirs("gpt2")
    assert run(["info", str(base), "./missing"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No folder at") and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_info_counts_parameters_like_the_checkpoint(pair_dirs, capsys):
    base, tuned = pair_dirs("gpt2")
    assert run(["info", str(base), str(tuned), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_params"] == count_parameters(base)


def test_cuda_on_a_machine_without_it_is_one_line(pair_dirs, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base, tuned = map(str, pair_dirs("gpt2"))
    capsys.readouterr()  # the tiny pair's making, when this test runs first
    assert run(["info", base, tuned, "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Device 'cuda' (--device) was asked but ") and err.endswith(
        "; use cpu."
    )
    assert len(err.splitlines()) == 1
    data = tmp_path / "p.txt"
    data.write_text("heads or tails")
    argv = ["cache", base, tuned, "--data", str(data), "--out", str(tmp_path / "s")]
    assert run([*argv, "--device", "cuda:0"]) == 1
    assert capsys.readouterr().err.startswith("error: Device 'cuda:0' (--device) was asked but")
    assert not (tmp_path / "s").exists()
    assert run([*argv, "--device", "gpu"]) == 1
    assert "Unknown device 'gpu' (--device); use cpu, cuda or cuda:N." in capsys.readouterr().err
