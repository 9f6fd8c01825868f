"""One forward pass that gives both a model's next-token log-probs and one residual layer.

Layers follow ``lab.models.outputs.hidden_states``: layer ``l < n_layers`` is the residual stream
entering block ``l`` (0: the embeddings), layer ``n_layers`` the stream after the last block (a
TransformerLens bridge: ``blocks.{n-1}.hook_resid_post``; an HF model: its last hidden state,
which HF takes after the final layer norm). ``signature`` records what a model computes on a
fixed probe sequence (``fingerprint`` names it), so that a Q head fitted on one model is not used
on another.
"""

from __future__ import annotations

import hashlib

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.outputs import model_logprobs
from lab.runtime import device_of

__all__ = [
    "fingerprint",
    "logprobs_and_residual",
    "model_name",
    "n_layers",
    "same_model",
    "signature",
]

_CHUNK = 256  # sequences per forward pass
_PROBE = 16  # tokens of the probe sequence that signs a model
_SIGNED = 32  # log-probs per position kept in the signature


def _hf(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model under a bridge (its raw weights), or the model itself."""
    return getattr(model, "original_model", model)


def n_layers(model: torch.nn.Module) -> int:
    """Transformer blocks of an HF model or a bridge."""
    if hasattr(model, "cfg"):
        return int(model.cfg.n_layers)
    return int(model.config.num_hidden_layers)


def model_name(model: torch.nn.Module) -> str:
    """What the model was loaded from (its config's name or path), for messages."""
    return str(getattr(_hf(model).config, "name_or_path", "") or type(_hf(model)).__name__)


@torch.no_grad()
def signature(model: torch.nn.Module) -> tuple[float, ...]:
    """What the model computes on a fixed probe sequence (ids 0..15): its log-probs of the first
    ``_SIGNED`` tokens at every position. Equal (to float error) for a bridge and the HF model it
    wraps, whatever their parameters are called; different for a fine-tuned sibling."""
    n_ctx = int(model.cfg.n_ctx) if hasattr(model, "cfg") else _hf_context(model)
    vocab = int(model.cfg.d_vocab) if hasattr(model, "cfg") else int(model.config.vocab_size)
    probe = (torch.arange(min(_PROBE, n_ctx)) % vocab)[None]
    logp = model_logprobs(model, probe)[0, :, :_SIGNED]
    return tuple(round(v, 6) for v in logp.reshape(-1).tolist())


def _hf_context(model: torch.nn.Module) -> int:
    config = model.config
    return int(getattr(config, "max_position_embeddings", None) or config.n_positions)


def fingerprint(model: torch.nn.Module) -> str:
    """A short name of ``signature`` (coarsely rounded), for messages and file metadata."""
    coarse = ",".join(f"{v:.2f}" for v in signature(model))
    return hashlib.sha256(coarse.encode()).hexdigest()[:16]


def same_model(a: tuple[float, ...], b: tuple[float, ...], tol: float = 1e-3) -> bool:
    """Whether two signatures are of one model (up to float error between implementations)."""
    return (
        len(a) == len(b) and max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0) <= tol
    )


def _check_layer(model: torch.nn.Module, layer: int) -> int:
    n = n_layers(model)
    if not 0 <= layer <= n:
        raise LabError(
            f"layer {layer} is outside 0..{n} (0: embeddings, {n}: after the last block)."
        )
    return n


@torch.no_grad()
def logprobs_and_residual(
    model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], layer: int
) -> tuple[Float[Tensor, "batch pos vocab"], Float[Tensor, "batch pos d_model"]]:
    """float64 next-token log-probs and the residual stream at ``layer``, from one pass (CPU)."""
    n = _check_layer(model, layer)
    device = device_of(model)
    logps, resids = [], []
    for chunk in tokens.split(_CHUNK):
        chunk = chunk.to(device)
        if hasattr(model, "run_with_cache"):
            last = f"blocks.{n - 1}.hook_resid_post"
            hook = f"blocks.{layer}.hook_resid_pre" if layer < n else last
            logits, cache = model.run_with_cache(chunk, names_filter=lambda name, h=hook: name == h)
            resid = cache[hook]
        else:
            out = model(chunk, attention_mask=torch.ones_like(chunk), output_hidden_states=True)
            logits, resid = out.logits, out.hidden_states[layer]
        logps.append(logits.double().log_softmax(-1).cpu())
        resids.append(resid.double().cpu())
    return torch.cat(logps), torch.cat(resids)
