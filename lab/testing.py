"""Tiny random checkpoints of real architectures, for tests, benchmarks and notebooks.

Each is an ordinary HF folder (config.json, model.safetensors, tokenizer.json) made offline, so it
takes exactly the path that a user's hub id takes through ``lab.load_pair``. ``make_pair`` adds a
"tuned" sibling whose weights are the base's plus a small seeded perturbation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast

from lab.activations.store import ActivationStore
from lab.datasets.dataset import Dataset

__all__ = [
    "ARCHITECTURES",
    "TEST_SPECS",
    "TinySpec",
    "assert_same_store",
    "corrupted_prompts",
    "make_checkpoint",
    "make_pair",
    "make_tokenizer",
    "ragged_dataset",
    "store_contents",
]

SPECIALS = ("<bos>", "<eos>", "<pad>", "<unk>")  # ids 0-3, in this order
_IDS = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}


@dataclass(frozen=True)
class TinySpec:
    """The shape of a tiny random checkpoint."""

    arch: str = "gpt2"  # a key of ARCHITECTURES
    vocab_size: int = 320  # byte-level BPE: 256 bytes, four specials, the rest merges
    d_model: int = 32  # residual width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # query heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None: n_heads
    d_mlp: int | None = None  # MLP hidden width; None: 4 * d_model
    n_ctx: int = 128  # context length


def _gpt2(s: TinySpec) -> PretrainedConfig:
    return AutoConfig.for_model(
        "gpt2",
        vocab_size=s.vocab_size,
        n_positions=s.n_ctx,
        n_embd=s.d_model,
        n_layer=s.n_layers,
        n_head=s.n_heads,
        n_inner=s.d_mlp,
        **_IDS,
    )


def _decoder(model_type: str, **extra) -> Callable[[TinySpec], PretrainedConfig]:
    """Llama-style configs share their field names (hidden_size, num_attention_heads, ...)."""

    def build(s: TinySpec) -> PretrainedConfig:
        return AutoConfig.for_model(
            model_type,
            vocab_size=s.vocab_size,
            hidden_size=s.d_model,
            intermediate_size=s.d_mlp or 4 * s.d_model,
            num_hidden_layers=s.n_layers,
            num_attention_heads=s.n_heads,
            num_key_value_heads=s.n_kv_heads or s.n_heads,
            max_position_embeddings=s.n_ctx,
            **_IDS,
            **extra,
        )

    return build


def _neox(s: TinySpec) -> PretrainedConfig:
    return AutoConfig.for_model(
        "gpt_neox",
        vocab_size=s.vocab_size,
        hidden_size=s.d_model,
        intermediate_size=s.d_mlp or 4 * s.d_model,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        max_position_embeddings=s.n_ctx,
        **_IDS,
    )


ARCHITECTURES: dict[str, Callable[[TinySpec], PretrainedConfig]] = {
    "gpt2": _gpt2,
    "llama": _decoder("llama", tie_word_embeddings=False),
    "qwen2": _decoder("qwen2", tie_word_embeddings=True),
    "olmo2": _decoder("olmo2", tie_word_embeddings=False),
    "gemma2": _decoder("gemma2", head_dim=8, tie_word_embeddings=True),
    "gpt_neox": _neox,
}


_CORPUS = (
    "the a an of to and in is it that was for on with as he she they we you said one two three "
    "heads tails coin die dice card hearts spades clubs diamonds red blue green yellow number "
    "random pick flip roll once upon time story happy sad wedding home office park market "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 yes no A B C D Question Answer User Assistant"
)


# One spec per architecture that the lab's tests cover; Llama-shaped ones use grouped-query
# attention (fewer key/value heads than query heads).
TEST_SPECS: dict[str, TinySpec] = {
    "gpt2": TinySpec(arch="gpt2"),
    "llama": TinySpec(arch="llama", n_kv_heads=2),
    "qwen2": TinySpec(arch="qwen2", n_kv_heads=2),
    "olmo2": TinySpec(arch="olmo2"),
    "gemma2": TinySpec(arch="gemma2", n_kv_heads=2),
    "gpt_neox": TinySpec(arch="gpt_neox"),
}


def make_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style) trained on a small built-in word list.

    Byte-level, so every string is representable, as with the real checkpoints' tokenizers, and
    the architecture-specific tokenizer classes (Qwen2Tokenizer ...) load it unchanged.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def make_checkpoint(
    folder: str | Path,
    spec: TinySpec | None = None,
    *,
    seed: int = 0,
    perturb: float = 0.0,
    safetensors: bool = True,
    **overrides,
) -> Path:
    """Write a random checkpoint of ``spec`` (fields overridable by keyword) to ``folder``.

    ``perturb`` adds seeded Gaussian noise of that relative size to every weight, which turns the
    same seed's base into a "tuned" sibling. ``safetensors=False`` writes pickle weights
    (pytorch_model.bin), for testing the refusal of pickle checkpoints.
    """
    spec = replace(spec or TinySpec(), **overrides)
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {spec.arch!r}; known: {', '.join(ARCHITECTURES)}")
    tokenizer = make_tokenizer(spec.vocab_size)
    config = ARCHITECTURES[spec.arch](spec)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.add_(noise * perturb * p.std().clamp_min(1e-3))
    folder = Path(folder)
    model.save_pretrained(folder)
    if not safetensors:  # transformers 5 writes safetensors only; write the pickle by hand
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    tokenizer.save_pretrained(folder)
    return folder


def make_pair(
    root: str | Path, spec: TinySpec | None = None, *, seed: int = 0, perturb: float = 0.05, **kw
) -> tuple[Path, Path]:
    """A base checkpoint and a perturbed "tuned" sibling under ``root`` (``base/``, ``tuned/``)."""
    root = Path(root)
    base = make_checkpoint(root / "base", spec, seed=seed, **kw)
    tuned = make_checkpoint(root / "tuned", spec, seed=seed, perturb=perturb, **kw)
    return base, tuned


def corrupted_prompts(
    n_pos: int = 8, batch: int = 2, seed: int = 0, positions: tuple[int, ...] = (2, 5)
) -> tuple[Tensor, Tensor]:
    """Random clean prompts ``[batch pos]`` (ordinary token ids) and a copy with new tokens at
    ``positions``: the clean/corrupted pair that patching tests sweep."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(5, 300, (batch, n_pos), generator=g)
    corrupted = clean.clone()
    for p in positions:
        corrupted[:, p] = torch.randint(5, 300, (batch,), generator=g)
    return clean, corrupted


def ragged_dataset(n: int = 7, seed: int = 0) -> Dataset:
    """``n`` random token sequences of 2-11 ordinary token ids (ragged, so batches pad): the
    dataset that caching and store tests write."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 12, (n,), generator=g)
    return Dataset.from_tokens([torch.randint(4, 320, (int(k),), generator=g) for k in lengths])


def store_contents(store: ActivationStore) -> dict[str, Tensor]:
    """Everything a store holds, by ``model/hook``, plus its sequence ids and positions."""
    out = {f"{m}/{h}": store.read(m, h) for m in store.models for h in store.hooks}
    return out | {"seq": store.sequence_ids(), "pos": store.positions()}


def assert_same_store(a: ActivationStore, b: ActivationStore) -> None:
    """Assert two stores hold exactly the same tensors."""
    ca, cb = store_contents(a), store_contents(b)
    assert ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)
