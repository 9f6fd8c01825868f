"""A base/tuned checkpoint pair as two comparable hooked TransformerLens models.

``load_pair`` checks that the two checkpoints are comparable (architecture family, sizes,
tokenizer) from their configs and tokenizers before any weights load (each side's tokenizer must
exist and keep plain text; all loading follows ``lab.models.checkpoints``' policy), then boots both
as
``TransformerBridge`` models with identical processing, in eval mode, on one device.

Processing default: ``compat=False``, the raw HF weights. Activations then equal the HF model's
own (what a user checks against their checkpoint), weight differences between base and tuned are
the fine-tune's own, and it works with ``device_map`` offload, which TransformerLens's
compatibility mode (LayerNorm folding, weight centering) does not support. ``compat=True``
applies compatibility mode to both models, for HookedTransformer-equivalent numerics.

BOS: whether plain text starts with the BOS token is read from the checkpoint's own tokenizer,
before the bridge reconfigures it (TransformerLens makes every tokenizer prepend its BOS), as
``ModelPair.bos`` (``bos_rule``): the tokenizer adds BOS itself -> yes; its BOS is also its EOS,
the token that separates documents (GPT-2's ``<|endoftext|>``, the organism's ``<bos>``, which
starts every organism sequence) -> yes, the text starts a document; no BOS token -> no; any other
BOS that the tokenizer does not add (SmolLM2's ``<|im_start|>``, which opens a chat turn) -> no.
The bridges' own ``to_tokens`` keep TransformerLens's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerBase

from lab.errors import LabError
from lab.models.checkpoints import (
    Checkpoint,
    load_config,
    load_model,
    load_tokenizer,
    resolve_checkpoint,
)
from lab.models.memory import check_fits, count_parameters
from lab.runtime import device_of, resolve_device, resolve_dtype
from lab.types import Tokens

if TYPE_CHECKING:  # for annotations only: importing transformer_lens takes seconds
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["PROBE_TEXT", "BosRule", "ModelPair", "PairConfig", "bos_rule", "load_pair"]

# Tokenized by both tokenizers: any difference means the pair cannot share token ids.
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 0123456789 Hello, world! <|end|>"

# Sizes compared before loading: (what we call it, the HF config attribute).
_SIZES = (
    ("n_layers", "num_hidden_layers"),
    ("d_model", "hidden_size"),
    ("n_heads", "num_attention_heads"),
    ("d_vocab", "vocab_size"),
)


@dataclass(frozen=True)
class PairConfig:
    """The shape that both models of a pair share."""

    architecture: str  # HF architecture class, e.g. "GPT2LMHeadModel"
    n_layers: int  # transformer blocks
    n_heads: int  # query heads per block
    n_kv_heads: int  # key/value heads per block (fewer than n_heads: grouped-query attention)
    d_model: int  # residual stream width
    d_head: int  # per-head width
    d_mlp: int  # MLP hidden width
    d_vocab: int  # vocabulary size (rows of the unembedding)
    n_ctx: int  # context length

    @classmethod
    def from_bridge(cls, bridge: TransformerBridge) -> PairConfig:
        c = bridge.cfg
        return cls(
            architecture=str(c.architecture or type(bridge.original_model).__name__),
            n_layers=int(c.n_layers),
            n_heads=int(c.n_heads),
            n_kv_heads=int(getattr(c, "n_key_value_heads", None) or c.n_heads),
            d_model=int(c.d_model),
            d_head=int(c.d_head),
            d_mlp=int(c.d_mlp or 0),
            d_vocab=int(c.d_vocab),
            n_ctx=int(c.n_ctx),
        )


@dataclass(frozen=True)
class BosRule:
    """Whether plain text starts with the BOS token, and which tokenizer setting says so."""

    prepend: bool  # plain text starts with the BOS token
    token_id: int | None  # the BOS token's id (None: the tokenizer has none)
    why: str  # the tokenizer setting that decided it, in words


def bos_rule(tokenizer: PreTrainedTokenizerBase) -> BosRule:
    """The BOS convention of a checkpoint's own tokenizer (module docstring), read before a
    bridge reconfigures it."""
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos is None or bos_id is None:
        return BosRule(False, None, "the tokenizer has no BOS token")
    ids = tokenizer(PROBE_TEXT)["input_ids"]
    if ids[:1] == [bos_id] and tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"] != ids:
        return BosRule(True, bos_id, f"the tokenizer adds its BOS {bos!r} itself")
    if bos == tokenizer.eos_token:
        return BosRule(True, bos_id, f"its BOS {bos!r} is also its EOS: it separates documents")
    return BosRule(False, bos_id, f"the tokenizer does not add its BOS {bos!r}, nor is it its EOS")


@dataclass(frozen=True, repr=False)
class ModelPair:
    """Two hooked models (``base``, ``tuned``) with one tokenizer and one shape."""

    base: TransformerBridge  # the base checkpoint
    tuned: TransformerBridge  # the fine-tuned checkpoint
    tokenizer: PreTrainedTokenizerBase  # shared: the base's (the tuned one tokenizes identically)
    cfg: PairConfig  # shared shape
    bos: BosRule  # whether plain text starts with BOS, from the base's own tokenizer
    sources: dict[str, str] = field(default_factory=dict)  # role -> what the user named
    compat: bool = False  # TransformerLens compatibility mode on both models

    @property
    def models(self) -> dict[str, TransformerBridge]:
        """Both models by role: ``{"base": ..., "tuned": ...}``."""
        return {"base": self.base, "tuned": self.tuned}

    @property
    def device(self) -> torch.device:
        return device_of(self.base)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.base.parameters()).dtype

    def to_tokens(self, text: str | list[str], *, prepend_bos: bool | None = None) -> Tokens:
        """Token ids for ``text`` (a string or a batch), as both models read them."""
        return self.base.to_tokens(text, prepend_bos=prepend_bos)

    def __repr__(self) -> str:
        c = self.cfg
        gqa = f" (kv heads {c.n_kv_heads})" if c.n_kv_heads != c.n_heads else ""
        return (
            f"ModelPair({c.architecture}: {c.n_layers} layers x {c.n_heads} heads{gqa}, "
            f"d_model {c.d_model}, d_vocab {c.d_vocab}, n_ctx {c.n_ctx}; "
            f"base={self.sources.get('base')!r}, tuned={self.sources.get('tuned')!r}; "
            f"{self.device}, {str(self.dtype).removeprefix('torch.')}, "
            f"{'compatibility mode' if self.compat else 'raw HF weights'})"
        )


def check_configs(base: PretrainedConfig, tuned: PretrainedConfig) -> None:
    """Refuse a pair whose architecture family or sizes differ, naming the difference."""
    fam_b, fam_t = base.model_type, tuned.model_type
    if fam_b != fam_t:
        raise LabError(
            f"Different architecture families: base is {fam_b!r}, tuned is {fam_t!r}. "
            "A pair must be one model and its fine-tune; pick checkpoints of one family."
        )
    for ours, attr in _SIZES:
        vb, vt = getattr(base, attr, None), getattr(tuned, attr, None)
        if vb != vt:
            raise LabError(
                f"Different {ours}: base has {vb}, tuned has {vt}. Patching and probes compare "
                "the two component by component; pick a tuned checkpoint of the same size."
            )


def check_tokenizers(
    base: PreTrainedTokenizerBase, tuned: PreTrainedTokenizerBase, text: str = PROBE_TEXT
) -> None:
    """Refuse tokenizers that tokenize ``text`` differently, showing where they part."""
    ids_b, ids_t = base(text)["input_ids"], tuned(text)["input_ids"]
    if ids_b != ids_t:
        at = next((i for i, (a, b) in enumerate(zip(ids_b, ids_t, strict=False)) if a != b), None)
        at = min(len(ids_b), len(ids_t)) if at is None else at
        raise LabError(
            f"The tokenizers differ: {text!r} gives {len(ids_b)} tokens in base and "
            f"{len(ids_t)} in tuned, first different at token {at} "
            f"(base {ids_b[at : at + 3]}, tuned {ids_t[at : at + 3]}). Token ids must mean the "
            "same in both models; use the base model's tokenizer for both checkpoints."
        )


def _boot(
    ckpt: Checkpoint,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | dict | None,
    trust_remote_code: bool,
) -> TransformerBridge:
    # Imported here, not at the top: a measured start-up cost (transformer_lens takes about 3.6 s
    # to import on this machine), paid only by callers that actually boot a model.
    from transformer_lens.model_bridge import TransformerBridge

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if device_map is not None:
        kw["device_map"] = device_map
    hf = load_model(AutoModelForCausalLM, ckpt, dtype=dtype, attn_implementation="eager", **kw)
    if device_map is None:
        hf = hf.to(device)
    bridge = TransformerBridge.boot_transformers(
        ckpt.location,
        hf_model=hf,
        tokenizer=tokenizer,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    return bridge.eval()


def load_pair(
    base: str | Path,
    tuned: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compat: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
) -> ModelPair:
    """Load ``base`` and ``tuned`` as two comparable hooked models.

    Each name is a local HF checkpoint folder, a hub id, or ``organism`` (the shipped pair; a
    lone ``load_pair("organism")`` loads both of its models). ``device`` defaults to CUDA when
    available; ``device_map`` (e.g. ``"auto"``) spreads a large model over several GPUs instead.
    """
    if tuned is None:
        if str(base) != "organism":
            raise LabError("Name the tuned checkpoint too: load_pair(base, tuned).")
        tuned = base
    if device is not None and device_map is not None:
        raise LabError("Give device or device_map, not both.")
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    ckpts = {
        role: resolve_checkpoint(name, role, allow_pickle=allow_pickle)
        for role, name in (("base", base), ("tuned", tuned))
    }
    configs = {
        role: load_config(c, trust_remote_code=trust_remote_code) for role, c in ckpts.items()
    }
    check_configs(configs["base"], configs["tuned"])
    tokenizers = {
        role: load_tokenizer(c, role, trust_remote_code=trust_remote_code)
        for role, c in ckpts.items()
    }
    check_tokenizers(tokenizers["base"], tokenizers["tuned"])
    bos = bos_rule(tokenizers["base"])  # before _boot: the bridge makes the tokenizer add BOS
    if device_map is None:
        sizes = [count_parameters(c.location) for c in ckpts.values() if c.is_local]
        if sizes and None not in sizes:
            check_fits(max(sizes), dtype, device)
    models = {
        role: _boot(c, tokenizers["base"], device, dtype, device_map, trust_remote_code)
        for role, c in ckpts.items()
    }
    if compat:
        for model in models.values():
            model.enable_compatibility_mode()
    return ModelPair(
        base=models["base"],
        tuned=models["tuned"],
        tokenizer=models["base"].tokenizer,
        cfg=PairConfig.from_bridge(models["base"]),
        bos=bos,
        sources={role: c.name for role, c in ckpts.items()},
        compat=compat,
    )
