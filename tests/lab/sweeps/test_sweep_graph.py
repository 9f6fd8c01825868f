"""Sweep jobs: ids that hash what a result depends on, stale results redone, explicit needs,
top-level tables kept current, and configs that cannot opt in to pickle or remote code."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from lab import LabError
from lab.cli import run as cli
from lab.models.checkpoints import data_dir
from lab.sweeps import Analysis, analyses, context, sweep
from lab.sweeps.analyses.pair import WeightsParams
from lab.testing import TEST_SPECS, make_pair
from probes.components.migration import top_steering

STEERING = str(data_dir() / "prompts" / "steering.jsonl")


def _config(base, tuned, out, analyses_=None, **run):
    return {
        "run": {"out": str(out), "device": "cpu", **run},
        "pairs": {"tiny": {"base": str(base), "tuned": str(tuned)}},
        "datasets": {"prompts": {"source": "jsonl", "path": STEERING}},
        "analyses": analyses_ or [{"kind": "weights", "pair": "tiny"}],
    }


def _id(config) -> str:
    return sweep.load_config(config).jobs[0].id


@pytest.fixture
def copied_pair(pair_dirs, tmp_path):
    """A copy of the tiny GPT-2 pair that a test may touch."""
    base, tuned = pair_dirs("gpt2")
    return shutil.copytree(base, tmp_path / "base"), shutil.copytree(tuned, tmp_path / "tuned")


# ---- finding 5: a job's id hashes everything its result depends on -------------------------
def _touch(path):
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


@pytest.mark.parametrize(
    "change",
    ["seed", "device", "dtype", "dataset_spec", "tuned_path", "tuned_weights_mtime", "needs"],
)
def test_job_id_changes_with_what_the_result_depends_on(copied_pair, pair_dirs, tmp_path, change):
    base, tuned = copied_pair
    jobs = [{"kind": "classify", "pair": "tiny", "dataset": "prompts"}]
    jobs += [{"kind": "joint", "pair": "tiny", "dataset": "prompts"}]
    before = sweep.load_config(_config(base, tuned, tmp_path, jobs))
    config = _config(base, tuned, tmp_path, jobs)
    if change == "seed":
        config["run"]["seed"] = 1
    elif change == "device":
        config["run"]["device"] = "meta"
    elif change == "dtype":
        config["run"]["dtype"] = "bfloat16"
    elif change == "dataset_spec":
        config["datasets"]["prompts"]["source"] = "text"
    elif change == "tuned_path":
        config["pairs"]["tiny"]["tuned"] = str(pair_dirs("gpt2")[1])  # same files, elsewhere
    elif change == "tuned_weights_mtime":
        _touch(tuned / "model.safetensors")
    else:  # only the classify job changes; joint reads it, so joint's id changes too
        config["analyses"][0]["n_chunks"] = 4
    after = sweep.load_config(config)
    assert after.jobs[1].id != before.jobs[1].id
    assert after.jobs[1].needs == {"classify": after.jobs[0].id}


def test_a_relative_and_an_absolute_path_are_the_same_checkpoint(pair_dirs, tmp_path, monkeypatch):
    base, tuned = pair_dirs("gpt2")
    absolute = _id(_config(base, tuned, tmp_path))
    monkeypatch.chdir(base.parent)
    relative = _id(_config(base.name, os.path.relpath(tuned, base.parent), tmp_path))
    assert relative == absolute


def test_a_changed_checkpoint_is_reported_and_rerun(copied_pair, tmp_path, capsys):
    base, tuned = copied_pair
    other = make_pair(tmp_path / "other", TEST_SPECS["gpt2"], seed=7)  # other weights, same name
    out = sweep.run(_config(base, tuned, tmp_path / "run"))
    first = pd.read_parquet(out / "weights.parquet")
    capsys.readouterr()
    out = sweep.run(_config(base, other[1], tmp_path / "run", seed=3))
    stale = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stale")]
    assert len(stale) == 1 and "(weights) on pair 'tiny'" in stale[0]
    assert "pair.tuned" in stale[0] and "seed" in stale[0] and "rerunning" in stale[0]
    fresh = sweep.run(_config(base, other[1], tmp_path / "fresh", seed=3))
    kept = pd.read_parquet(out / "weights.parquet")
    expected = pd.read_parquet(fresh / "weights.parquet")
    pd.testing.assert_frame_equal(kept.drop(columns="job"), expected.drop(columns="job"))
    assert not kept["value"].equals(first["value"])


def test_config_toml_never_claims_results_of_another_config(copied_pair, tmp_path, monkeypatch):
    base, tuned = copied_pair
    (tmp_path / "a.toml").write_text(
        f'[run]\nout = "run"\ndevice = "cpu"\n[pairs.tiny]\nbase = "{base}"\ntuned = "{tuned}"\n'
        '[[analyses]]\nkind = "weights"\npair = "tiny"\n'
    )
    sweep.run(tmp_path / "a.toml")
    assert (tmp_path / "run" / "weights.parquet").exists()
    _touch(tuned / "model.safetensors")  # the checkpoint changed since

    def crash(ctx, params):
        raise KeyboardInterrupt

    monkeypatch.setitem(analyses.ANALYSES, "weights", Analysis(WeightsParams, crash))
    with pytest.raises(KeyboardInterrupt):
        sweep.run(tmp_path / "a.toml")
    # the run folder's config.toml is this config, whose weights job has not finished
    assert (tmp_path / "run" / "config.toml").read_text() == (tmp_path / "a.toml").read_text()
    assert not (tmp_path / "run" / "weights.parquet").exists()


# ---- finding 7: top-level tables as each job finishes ---------------------------------------
def test_a_killed_sweep_keeps_the_finished_kinds_tables(pair_dirs, tmp_path, monkeypatch):
    base, tuned = pair_dirs("gpt2")

    def crash(ctx, params):
        raise KeyboardInterrupt  # as a kill would, before the sweep's end

    monkeypatch.setitem(analyses.ANALYSES, "boom", Analysis(WeightsParams, crash))
    jobs = [{"kind": "weights", "pair": "tiny"}, {"kind": "boom", "pair": "tiny"}]
    with pytest.raises(KeyboardInterrupt):
        sweep.run(_config(base, tuned, tmp_path / "run", jobs))
    table = pd.read_parquet(tmp_path / "run" / "weights.parquet")
    assert (table["value"] > 0).all() and len(table) >= 3
    assert not (tmp_path / "run" / "boom.parquet").exists()


# ---- finding 6: needs resolve to exact jobs ---------------------------------------------------
def test_examples_read_their_own_pairs_classify(pair_dirs, tmp_path):
    base, tuned = pair_dirs("gpt2")
    other = make_pair(tmp_path / "other", TEST_SPECS["gpt2"], seed=7)
    config = _config(base, tuned, tmp_path / "run")
    config["pairs"] = {
        "m": {"base": str(base), "tuned": str(tuned)},
        "m-x": {"base": str(other[0]), "tuned": str(other[1])},
    }
    small = {"dataset": "prompts", "n_prompts": 8, "n_chunks": 2, "attractor": []}
    config["analyses"] = [
        {"kind": "classify", "pair": "m", **small},
        {"kind": "classify", "pair": "m-x", **small},
        {"kind": "examples", "pair": "m", "dataset": "prompts", "heads": 2, "n_new": 4},
    ]
    out = sweep.run(config)
    scores = pd.read_parquet(out / "classify.parquet")
    heads = {}
    for pair in ("m", "m-x"):
        mine = scores[(scores.pair == pair) & (scores.kind == "head")]
        heads[pair] = top_steering(mine, n=2)["component"].tolist()
    assert heads["m"] != heads["m-x"]  # else the test could not tell them apart
    examples = pd.read_parquet(out / "examples.parquet")
    shown = examples.set_index("kind").loc["attention", "title"]
    assert shown == "Top steering heads in tuned: " + ", ".join(heads["m"])


def test_a_missing_need_is_refused_before_anything_runs(pair_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(context, "load_pair", _no_model)
    base, tuned = pair_dirs("gpt2")
    jobs = [
        {"kind": "weights", "pair": "tiny"},
        {"kind": "joint", "pair": "tiny", "dataset": "prompts"},
    ]
    with pytest.raises(LabError) as e:
        sweep.run(_config(base, tuned, tmp_path / "run", jobs))
    assert "analyses[1] (joint) on pair 'tiny', dataset 'prompts' needs a 'classify'" in str(
        e.value
    )
    assert 'add [[analyses]] kind = "classify", pair = "tiny", dataset = "prompts"' in str(e.value)
    assert not (tmp_path / "run").exists()


def test_ambiguous_needs_are_refused_and_picked_by_name(pair_dirs, tmp_path):
    base, tuned = pair_dirs("gpt2")
    jobs = [
        {"kind": "classify", "pair": "tiny", "dataset": "prompts", "name": "a"},
        {"kind": "classify", "pair": "tiny", "dataset": "prompts", "n_chunks": 4, "name": "b"},
        {"kind": "joint", "pair": "tiny", "dataset": "prompts"},
    ]
    with pytest.raises(LabError, match=r"needs one 'classify' .* there are 2 .*use = \{classify"):
        sweep.load_config(_config(base, tuned, tmp_path, jobs))
    jobs[2]["use"] = {"classify": "b"}
    config = sweep.load_config(_config(base, tuned, tmp_path, jobs))
    assert config.jobs[2].needs == {"classify": config.jobs[1].id}
    jobs[2]["use"] = {"classify": "c"}
    with pytest.raises(LabError, match=r"named a, b; give one of them name = \"c\""):
        sweep.load_config(_config(base, tuned, tmp_path, jobs))


def test_cycles_are_refused_and_jobs_run_in_dependency_order(pair_dirs, tmp_path, monkeypatch):
    base, tuned = pair_dirs("gpt2")
    ran = []

    def record(ctx, params):
        ran.append(ctx.job.kind)
        return pd.DataFrame({"value": [1.0]})

    fake = {
        "first": Analysis(WeightsParams, record, needs=lambda p: ("second",)),
        "second": Analysis(WeightsParams, record),
    }
    for kind, analysis in fake.items():
        monkeypatch.setitem(analyses.ANALYSES, kind, analysis)
    jobs = [{"kind": "first", "pair": "tiny"}, {"kind": "second", "pair": "tiny"}]
    sweep.run(_config(base, tuned, tmp_path / "run", jobs))
    assert ran == ["second", "first"]
    plan = sweep.plan(_config(base, tuned, tmp_path / "run", jobs))
    assert plan.splitlines()[1].split()[0] == "done" and "(second)" in plan.splitlines()[1]
    assert "reads analyses[1] (second)" in plan
    cyclic = Analysis(WeightsParams, record, needs=lambda p: ("first",))
    monkeypatch.setitem(analyses.ANALYSES, "second", cyclic)
    with pytest.raises(LabError, match=r"cycle: analyses\[0\] \(first\).* -> analyses\[1\]"):
        sweep.load_config(_config(base, tuned, tmp_path, jobs))


def test_lab_sweep_plan_prints_the_graph(pair_dirs, tmp_path, capsys):
    base, tuned = pair_dirs("gpt2")
    path = tmp_path / "s.toml"
    path.write_text(
        f'[run]\nout = "run"\ndevice = "cpu"\n[pairs.tiny]\nbase = "{base}"\ntuned = "{tuned}"\n'
        f'[datasets.p]\nsource = "jsonl"\npath = "{STEERING}"\n'
        '[[analyses]]\nkind = "classify"\npair = "tiny"\ndataset = "p"\n'
        '[[analyses]]\nkind = "joint"\npair = "tiny"\ndataset = "p"\n'
    )
    assert cli(["sweep", str(path), "--plan"]) == 0
    text = capsys.readouterr().out
    assert "2 jobs" in text and text.count("todo") == 2
    assert "reads analyses[0] (classify) on pair 'tiny', dataset 'p'" in text
    assert not (tmp_path / "run").exists()  # a plan runs nothing


# ---- finding 12: a config cannot opt in to pickle or remote code by itself -------------------
@pytest.mark.parametrize(
    ("key", "flag"),
    [("allow_pickle", "--allow-pickle"), ("trust_remote_code", "--trust-remote-code")],
)
def test_a_config_cannot_opt_in_by_itself(pair_dirs, tmp_path, capsys, key, flag):
    base, tuned = pair_dirs("gpt2")
    config = _config(base, tuned, tmp_path / "run")
    config["pairs"]["tiny"][key] = True
    with pytest.raises(LabError, match=rf"\[pairs.tiny\] sets {key} = true.*with {flag}"):
        sweep.load_config(config)
    sweep.load_config(config, **{key: True})  # the caller's consent as well
    path = tmp_path / "s.toml"
    path.write_text(
        f'[pairs.tiny]\nbase = "{base}"\ntuned = "{tuned}"\n{key} = true\n'
        '[[analyses]]\nkind = "weights"\npair = "tiny"\n'
    )
    assert cli(["sweep", str(path), "--plan"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and flag in err and len(err.splitlines()) == 1
    assert cli(["sweep", str(path), "--plan", flag]) == 0


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the config was validated")
