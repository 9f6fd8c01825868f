"""Sweep TOML types: every key of every table given a wrong type is refused, by name, before any
model loads."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from lab import LabError
from lab.models.checkpoints import data_dir
from lab.sweeps import context, sweep
from lab.sweeps.analyses import ANALYSES, DATASET_SOURCES
from lab.sweeps.schema import PairSpec, RunSpec

STEERING = str(data_dir() / "prompts" / "steering.jsonl")

# wrong values for each annotation (an optional field takes its type's wrong values); a new
# annotation must be added here, so every key stays covered
WRONG = {
    "int": ["16", 4.5, True],
    "float": ["0.1", False],
    "bool": ["yes", 1],
    "str": [3, ["a"]],
    "list[str]": ["belief", [1]],
    "list[int]": [0, ["a"]],
    "dict[str, str]": ["x", {"a": 1}],
    "str | dict[str, Any]": [3, ["auto"]],
}


def _wrong(annotation: str) -> list:
    key = annotation.removesuffix(" | None")
    assert key in WRONG, f"add wrong values for {annotation!r} to WRONG"
    return WRONG[key]


def _cases(schema: type) -> list[tuple[str, object]]:
    return [(f.name, v) for f in dataclasses.fields(schema) for v in _wrong(str(f.type))]


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the config was validated")


@pytest.fixture
def valid(pair_dirs, tmp_path, monkeypatch):
    """A valid config with one job of every kind (models may not load)."""
    monkeypatch.setattr(context, "load_pair", _no_model)
    base, tuned = pair_dirs("gpt2")
    return {
        "run": {"out": str(tmp_path / "run"), "device": "cpu", "seed": 0},
        "pairs": {"tiny": {"base": str(base), "tuned": str(tuned)}},
        "datasets": {
            "p": {"source": "jsonl", "path": STEERING},
            "w": {"source": "organism", "n": 4},
        },
        "analyses": [{"kind": kind, "pair": "tiny", "dataset": "p"} for kind in ANALYSES],
    }


def _refused(config, key, tmp_path):
    with pytest.raises(LabError, match=rf"\b{key}\b"):
        sweep.run(config)
    assert not (tmp_path / "run").exists()


def test_the_valid_config_loads(valid):
    config = sweep.load_config(valid)
    assert [j.kind for j in config.jobs] == list(ANALYSES)


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [(kind, k, v) for kind, a in ANALYSES.items() for k, v in _cases(a.params)],
)
def test_every_analysis_key_of_a_wrong_type_is_refused(valid, tmp_path, kind, key, value):
    i = list(ANALYSES).index(kind)
    valid["analyses"][i][key] = value
    _refused(valid, key, tmp_path)


@pytest.mark.parametrize(("key", "value"), _cases(RunSpec))
def test_every_run_key_of_a_wrong_type_is_refused(valid, tmp_path, key, value):
    valid["run"][key] = value
    _refused(valid, key, tmp_path)


@pytest.mark.parametrize(("key", "value"), _cases(PairSpec))
def test_every_pair_key_of_a_wrong_type_is_refused(valid, tmp_path, key, value):
    valid["pairs"]["tiny"][key] = value
    _refused(valid, key, tmp_path)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("w" if s == "organism" else "p", k, v)
        for s, d in DATASET_SOURCES.items()
        for k, v in _cases(d.params)
    ],
)
def test_every_dataset_key_of_a_wrong_type_is_refused(valid, tmp_path, name, key, value):
    valid["datasets"][name][key] = value
    _refused(valid, key, tmp_path)


@pytest.mark.parametrize("key", ["kind", "pair", "dataset", "name", "use"])
def test_the_common_analysis_keys_are_typed(valid, tmp_path, key):
    valid["analyses"][0][key] = 3
    _refused(valid, key, tmp_path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[pairs.tiny]\ntunned = "x"',
            r"Unknown keys in \[pairs.tiny\]: tunned.*Did you mean: tuned",
        ),
        ('[pairs.tiny]\ntuned = "x"', r"\[pairs.tiny\] lacks the key 'base'"),
        ('[pairs.tiny]\nbase = "x"', r"\[pairs.tiny\] lacks the key 'tuned'"),
        ('pairs = "x"', r"\[pairs\] must be a table"),
        ("[pairs]\ntiny = 3", r"\[pairs.tiny\] must be a table"),
        ('[datasets.d]\nsource = "jsnol"', r"\[datasets.d\]: unknown source 'jsnol'.*jsonl"),
        ('[datasets.d]\nsource = "jsonl"', r"\[datasets.d\] lacks the key 'path'"),
        ('[datasets.d]\nsource = "organism"\nlength = "32"', r"length must be an integer"),
        ('[run]\ndtype = "float3"', r"Unknown dtype 'float3'"),
        ("[run]\nsed = 1", r"Unknown keys in \[run\]: sed.*seed"),
        ('analyses = {kind = "weights"}', r"analyses must be a list of tables"),
    ],
)
def test_toml_mistakes_name_the_table_and_key(tmp_path, toml, message, monkeypatch):
    monkeypatch.setattr(context, "load_pair", _no_model)
    text = toml + '\n[[analyses]]\nkind = "weights"\npair = "tiny"\n'
    if toml.startswith("analyses"):
        text = toml
    path = tmp_path / "s.toml"
    path.write_text(text)
    tomllib.loads(text)  # valid TOML: the sweep is what refuses it
    with pytest.raises(LabError, match=message):
        sweep.load_config(path)


def test_a_string_for_a_list_is_not_read_as_its_letters(valid, tmp_path):
    i = list(ANALYSES).index("probes")
    valid["analyses"][i]["targets"] = "belief"
    with pytest.raises(LabError, match=r"targets must be a list of strings, got 'belief'"):
        sweep.run(valid)
