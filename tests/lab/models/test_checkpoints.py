"""The load policy: tokenizers that keep text, safetensors only everywhere, damaged files named."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file

import lab.cli.pair
from lab import LabError, load_pair
from lab.cli import run
from lab.models.checkpoints import data_dir
from lab.models.weightfiles import read_header
from lab.organism.evaluate import load_organism
from lab.organism.reward import RewardModel
from lab.testing import TEST_SPECS, make_checkpoint

ORGANISM_PARTS = ("base", "rlhf", "peak", "reward")


@pytest.fixture
def organism_copy(tmp_path):
    """A copy of the shipped organism that a test may damage (data/ is never touched)."""
    return shutil.copytree(data_dir() / "organism", tmp_path / "organism")


# --- finding 11: a folder without a usable tokenizer ------------------------------------------


def _without_tokenizer(folder):
    """``folder`` with its tokenizer files removed: config.json and weights only."""
    for f in folder.iterdir():
        if "token" in f.name:
            f.unlink()
    return folder


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["base", "tuned"])
def test_refuses_a_folder_without_tokenizer_naming_the_side(tmp_path, pair_dirs, arch, side):
    good = pair_dirs(arch)[0]
    bare = _without_tokenizer(make_checkpoint(tmp_path / "bare", TEST_SPECS[arch]))
    assert sorted(p.name for p in bare.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    names = (bare, good) if side == "base" else (good, bare)
    with pytest.raises(LabError) as err:
        load_pair(*names, device="cpu")
    text = str(err.value)
    assert f"The {side} checkpoint (folder {bare})" in text
    assert "no usable tokenizer" in text and "tokenizer.json" in text
    assert "tokenizers differ" not in text and "\n" not in text


def test_cli_exits_nonzero_when_both_sides_lack_a_tokenizer(tmp_path, capsys):
    """Both tokenizers empty "agree", so today the pair loads and its text is silently dropped."""
    bare = _without_tokenizer(make_checkpoint(tmp_path / "bare", TEST_SPECS["gpt2"]))
    assert run(["info", str(bare), str(bare), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"error: The base checkpoint (folder {bare}) has no usable tokenizer" in err
    assert "its vocabulary holds only special tokens" in err


def test_the_shipped_word_level_tokenizer_is_usable():
    pair = load_pair("organism", device="cpu")
    assert pair.to_tokens("the bride said", prepend_bos=False).tolist() == [[41, 36, 49]]


# --- finding 12: every loader is safetensors-only, and remote code names the CLI flag ----------


def _pickle_weights(folder):
    """Replace ``folder``'s model.safetensors by the same weights as a pickle pytorch_model.bin."""
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()


@pytest.mark.parametrize("part", ORGANISM_PARTS)
def test_organism_loaders_refuse_pickle_weights(organism_copy, part):
    _pickle_weights(organism_copy / part)
    with pytest.raises(LabError, match=r"only pickle weights \(pytorch_model.bin\).*allow_pickle"):
        load_organism(organism_copy)
    if part == "reward":
        with pytest.raises(LabError, match="only pickle weights"):
            RewardModel.load(organism_copy / "reward")


def test_organism_loads_under_the_policy(organism_copy):
    org = load_organism(organism_copy)
    assert set(org.models) == {"base", "rlhf", "peak"} and org.reward_model is not None
    tokens = torch.tensor([[0, 41, 36]])
    assert org.models["base"](tokens).logits.shape == (1, 3, 57)


def _custom_code_checkpoint(tmp_path, base):
    folder = tmp_path / "custom"
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "steerlab_custom"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_refusal_names_the_cli_flag(tmp_path, pair_dirs):
    base = pair_dirs("gpt2")[0]
    custom = _custom_code_checkpoint(tmp_path, base)
    with pytest.raises(LabError) as err:
        load_pair(base, custom, device="cpu")
    assert "pass trust_remote_code=True (CLI: --trust-remote-code)" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["info", "calibrate"])
def test_cli_commands_pass_trust_remote_code(monkeypatch, command):
    seen = {}

    def fake_load_pair(base, tuned, **kw):
        seen.update(kw)
        raise LabError("stop here")

    monkeypatch.setattr(lab.cli.pair, "load_pair", fake_load_pair)  # what every command calls
    assert run([command, "a", "b", "--trust-remote-code"]) == 1
    assert seen["trust_remote_code"] is True
    assert run([command, "a", "b"]) == 1
    assert seen["trust_remote_code"] is False


# --- errors that name the problem: damaged safetensors files ---------------------------------


def _header(entries: dict) -> bytes:
    raw = json.dumps(entries).encode()
    return struct.pack("<Q", len(raw)) + raw


DAMAGE = {
    "truncated": lambda good: good[: len(good) // 2],
    "random": lambda good: os.urandom(4096),
    "shorter than 8 bytes": lambda good: b"abc",
    "header not UTF-8": lambda good: struct.pack("<Q", 16) + b"\xff" * 16 + b"\0" * 64,
    "header not JSON": lambda good: struct.pack("<Q", 16) + b"{not json at all" + b"\0" * 64,
    "offsets past the end": lambda good: (
        _header({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}) + b"\0" * 16
    ),
    "size disagrees with shape": lambda good: (
        _header({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}}) + b"\0" * 16
    ),
}
WHY = {
    "truncated": "it is truncated",
    "random": "header length says",
    "shorter than 8 bytes": "fewer than the 8-byte header length",
    "header not UTF-8": "not UTF-8 JSON",
    "header not JSON": "not UTF-8 JSON",
    "offsets past the end": "it is truncated",
    "size disagrees with shape": "needs 32 bytes but its offsets span 16",
}


def _damaged_message(path, kind) -> str:
    return rf"{path} is damaged or not a safetensors file \(.*{WHY[kind]}.*\)\. Download"


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_weights_are_named_in_one_line(tmp_path, pair_dirs, kind):
    base, tuned = pair_dirs("gpt2")
    broken = shutil.copytree(tuned, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(DAMAGE[kind](weights.read_bytes()))
    with pytest.raises(LabError, match=_damaged_message(weights, kind)) as err:
        load_pair(base, broken, device="cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["truncated", "random"])
@pytest.mark.parametrize("part", ORGANISM_PARTS)
def test_organism_loaders_name_damaged_weights(organism_copy, part, kind):
    weights = organism_copy / part / "model.safetensors"
    weights.write_bytes(DAMAGE[kind](weights.read_bytes()))
    with pytest.raises(LabError, match=_damaged_message(weights, kind)):
        load_organism(organism_copy)


def test_read_header_agrees_with_safetensors(pair_dirs):
    weights = pair_dirs("gpt2")[0] / "model.safetensors"
    header = read_header(weights)
    tensors = load_file(weights)
    assert set(header) - {"__metadata__"} == set(tensors)
    for name, t in tensors.items():
        assert header[name]["shape"] == list(t.shape)
