"""load_pair on tiny random checkpoints of real architectures, and every refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from lab import LabError, load_pair
from lab.testing import TEST_SPECS as SPECS
from lab.testing import make_checkpoint


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_pair_matches_hf_and_has_transformer_lens_hooks(arch, pair_dirs):
    base, tuned = pair_dirs(arch)
    pair = load_pair(base, tuned, device="cpu")
    assert pair.cfg.n_layers == 2 and pair.cfg.d_model == 32
    assert not pair.base.training and not pair.tuned.training
    tokens = pair.to_tokens("the coin heads tails 0 1 2")
    for model, folder in ((pair.base, base), (pair.tuned, tuned)):
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            expected = hf(tokens).logits
        logits, cache = model.run_with_cache(tokens)
        assert (logits - expected).abs().max().item() < 1e-4
        for name in ("blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.0.hook_mlp_out"):
            assert name in cache
    assert (pair.base(tokens) - pair.tuned(tokens)).abs().max() > 1e-3  # tuned really differs


def test_repr_and_models(pair_dirs):
    pair = load_pair(*pair_dirs("llama"), device="cpu")
    text = repr(pair)
    assert "LlamaForCausalLM" in text and "kv heads 2" in text and "raw HF weights" in text
    assert set(pair.models) == {"base", "tuned"}
    assert pair.cfg.n_kv_heads == 2


def test_compatibility_mode_is_applied_to_both(pair_dirs):
    base, tuned = pair_dirs("gpt2")
    raw = load_pair(base, tuned, device="cpu")
    compat = load_pair(base, tuned, device="cpu", compat=True)
    tokens = raw.to_tokens("the coin")
    for a, b in ((raw.base, compat.base), (raw.tuned, compat.tuned)):
        la, lb = a(tokens).log_softmax(-1), b(tokens).log_softmax(-1)
        assert (la - lb).abs().max() < 1e-4
    assert "compatibility mode" in repr(compat)


def _refused(match, base, tuned, **kw):
    with pytest.raises(LabError, match=match):
        load_pair(base, tuned, device="cpu", **kw)


def test_refuses_different_architecture(pair_dirs):
    _refused("architecture families.*'gpt2'.*'llama'", pair_dirs("gpt2")[0], pair_dirs("llama")[1])


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [("n_layers", 3, "n_layers"), ("d_model", 48, "d_model"), ("n_heads", 2, "n_heads")],
)
def test_refuses_different_sizes(tmp_path, pair_dirs, field, value, name):
    other = make_checkpoint(tmp_path / "other", SPECS["gpt2"], **{field: value})
    _refused(f"Different {name}", pair_dirs("gpt2")[0], other)


def test_refuses_different_vocab(tmp_path, pair_dirs):
    other = make_checkpoint(tmp_path / "other", SPECS["gpt2"], vocab_size=300)
    _refused("Different d_vocab: base has 320, tuned has 300", pair_dirs("gpt2")[0], other)


def test_refuses_different_tokenizer(tmp_path, pair_dirs):
    base, tuned = pair_dirs("gpt2")
    other = tmp_path / "other"
    shutil.copytree(tuned, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["T"], vocab["h"] = vocab["h"], vocab["T"]  # same size, different ids
    (other / "tokenizer.json").write_text(json.dumps(spec))
    _refused("tokenizers differ.*first different at token", base, other)


def test_refuses_pickle_unless_allowed(tmp_path, pair_dirs):
    base, _ = pair_dirs("gpt2")
    pickled = make_checkpoint(tmp_path / "pickled", SPECS["gpt2"], safetensors=False)
    assert (pickled / "pytorch_model.bin").exists()
    _refused("only pickle weights.*allow_pickle=True", base, pickled)
    pair = load_pair(base, pickled, device="cpu", allow_pickle=True)
    tokens = pair.to_tokens("the coin")
    assert torch.allclose(pair.base(tokens), pair.tuned(tokens), atol=1e-5)  # same seed


def test_refuses_missing_folder_and_unreachable_hub(pair_dirs):
    base, _ = pair_dirs("gpt2")
    _refused("No folder at", base, "./no/such/folder")
    _refused("hub is unreachable", base, "nobody/no-such-model")
    with pytest.raises(LabError, match="Name the tuned checkpoint"):
        load_pair(base)


def test_refuses_a_folder_without_config(tmp_path, pair_dirs):
    (tmp_path / "empty").mkdir()
    _refused("not a checkpoint folder", pair_dirs("gpt2")[0], tmp_path / "empty")


def test_refuses_a_pair_too_large_for_memory(pair_dirs, monkeypatch):
    import lab.models.memory

    base, tuned = pair_dirs("gpt2")
    n = lab.models.memory.count_parameters(base)
    hf = AutoModelForCausalLM.from_pretrained(base)
    assert n == sum(p.numel() for p in hf.parameters())
    monkeypatch.setattr(lab.models.memory, "available_memory", lambda device: 1000)
    _refused("needs about .* GiB on cpu .* only 0.0 GiB is free.*bfloat16", base, tuned)


def test_load_pair_refuses_a_device_this_machine_lacks(pair_dirs, monkeypatch):
    """Refused up front, also where the memory check is skipped (a size it cannot count)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("lab.models.pair.count_parameters", lambda location: None)
    with pytest.raises(LabError, match="cuda"):
        load_pair(*pair_dirs("gpt2"), device="cuda")
