"""The Q head: one linear map from a residual layer to soft values for a grid of betas.

``QHead.values(resid)`` gives Q_beta(h, x) for every grid beta and next token x, from the
residual stream at prefix h. At decode time any beta in the grid's range is allowed: Q_beta / beta
is interpolated linearly in log(beta) between the two nearest grid points (exact at grid points,
approximate between them). A head may clamp its values into ``bounds`` (the practitioner's: the
reward's range, which every soft value of that reward lies in). A head remembers the model
(``signature``: what it computes on a probe sequence) and layer it was fitted on, and ``check``
refuses any other. It is saved as safetensors (weights) plus JSON (everything else), never pickle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import einops
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from lab.errors import LabError
from probes.value.residual import fingerprint, model_name, same_model, signature

__all__ = ["QHead", "check_beta"]

_FORMAT = 1  # version of the saved JSON


def check_beta(beta: float, betas: tuple[float, ...] | None = None) -> float:
    """beta > 0 (and, given a grid, inside its range), else a LabError saying what to pass."""
    if not beta > 0 or not math.isfinite(beta):
        raise LabError(f"beta must be a finite number > 0 (the KL coefficient); got {beta}.")
    if betas is not None and not min(betas) * (1 - 1e-9) <= beta <= max(betas) * (1 + 1e-9):
        raise LabError(
            f"beta {beta} is outside the Q head's grid {min(betas):g}..{max(betas):g}; pick a "
            "beta in that range or fit a head whose grid covers it."
        )
    return float(beta)


@dataclass(frozen=True)
class QHead:
    """Soft values Q_beta(h, x) = resid(h) @ weight + bias, one output per (beta, token)."""

    layer: int  # residual layer read (as lab.models.outputs.hidden_states: 0 = embeddings)
    betas: tuple[float, ...]  # the grid of betas, increasing
    weight: Float[Tensor, "d_model out"]  # out = n_beta * vocab, beta-major
    bias: Float[Tensor, " out"]  # -inf for tokens that are never emitted
    vocab: int  # tokens per beta
    model_id: str  # fingerprint of the model it was fitted on (residual.fingerprint)
    model_name: str = ""  # where that model was loaded from (for messages)
    bounds: tuple[float, float] | None = None  # Q clamped into [low, high] (None: unclamped)
    signature: tuple[float, ...] = ()  # the model's log-probs on a probe (residual.signature)

    def __post_init__(self) -> None:
        if list(self.betas) != sorted(set(self.betas)) or not self.betas:
            raise LabError(f"A Q head's betas must increase strictly; got {self.betas}.")
        for b in self.betas:
            check_beta(b)
        out = len(self.betas) * self.vocab
        if self.weight.shape[-1] != out or self.bias.shape != (out,):
            raise LabError(
                f"Q head shapes disagree: weight {tuple(self.weight.shape)}, bias "
                f"{tuple(self.bias.shape)}, for {len(self.betas)} betas x {self.vocab} tokens."
            )

    @property
    def d_model(self) -> int:
        return self.weight.shape[0]

    def _grid(self) -> tuple[Tensor, Tensor]:
        w = einops.rearrange(self.weight, "d (beta v) -> beta d v", v=self.vocab)
        return w, einops.rearrange(self.bias, "(beta v) -> beta v", v=self.vocab)

    def values(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... beta vocab"]:
        """Q_beta(h, x) at every grid beta for every token."""
        out = self._clamp(resid.to(self.weight.dtype) @ self.weight + self.bias)
        return einops.rearrange(out, "... (beta v) -> ... beta v", v=self.vocab)

    def _clamp(self, q: Tensor) -> Tensor:
        return q if self.bounds is None else q.clamp(*self.bounds)

    def at(
        self,
        resid: Float[Tensor, "... d_model"],
        beta: float,
        tokens: Int[Tensor, "... k"] | None = None,
    ) -> Float[Tensor, "... k"]:
        """Q_beta for one beta in the grid's range (interpolated between grid points), for every
        token, or only for ``tokens`` (candidate ids per row: the top-k mode reads k columns)."""
        beta = check_beta(beta, self.betas)
        logs = torch.tensor(self.betas, dtype=torch.float64).log()
        hi = int(torch.searchsorted(logs, torch.tensor(math.log(beta), dtype=torch.float64)))
        hi = min(max(hi, 1), len(self.betas) - 1) if len(self.betas) > 1 else 0
        lo = max(hi - 1, 0)
        frac = 0.0 if hi == lo else float((math.log(beta) - logs[lo]) / (logs[hi] - logs[lo]))
        frac = min(max(frac, 0.0), 1.0)
        w, b = self._grid()
        resid = resid.to(w.dtype)

        def soft(i: int) -> Tensor:  # Q_{beta_i} / beta_i for the requested columns
            if tokens is None:
                q = resid @ w[i] + b[i]
            else:
                cols = einops.rearrange(w[i][:, tokens], "d ... k -> ... k d")
                q = einops.einsum(cols, resid, "... k d, ... d -> ... k") + b[i][tokens]
            return self._clamp(q) / self.betas[i]

        if frac in (0.0, 1.0):
            return beta * soft(hi if frac == 1.0 else lo)
        return beta * ((1 - frac) * soft(lo) + frac * soft(hi))

    def check(self, model: torch.nn.Module, layer: int | None = None) -> None:
        """Refuse a model or layer other than the ones the head was fitted on, naming both."""
        here = fingerprint(model)
        same = same_model(self.signature, signature(model)) if self.signature else None
        if not (same if same is not None else here == self.model_id):
            raise LabError(
                f"This Q head was fitted on model {self.model_name or '?'} (weights "
                f"{self.model_id}); got model {model_name(model)} (weights {here}). "
                "Fit a head on this model."
            )
        if layer is not None and layer != self.layer:
            raise LabError(
                f"This Q head reads layer {self.layer}; got layer {layer}. Use layer {self.layer} "
                "or fit a head on that layer."
            )
        if self.d_model != _width(model):
            raise LabError(
                f"This Q head reads width {self.d_model}; the model's is {_width(model)}."
            )

    def save(self, path: str | Path) -> Path:
        """Write ``path``.safetensors (weight, bias) and ``path``.json (the rest)."""
        path = Path(path).with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}
        save_file(tensors, str(path.with_suffix(".safetensors")))
        meta = {
            "format": _FORMAT,
            "layer": self.layer,
            "betas": list(self.betas),
            "vocab": self.vocab,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "bounds": None if self.bounds is None else list(self.bounds),
            "signature": list(self.signature),
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> QHead:
        """A head written by ``save`` (either file's path, or the shared stem)."""
        path = Path(path).with_suffix("")
        meta_file, weights = path.with_suffix(".json"), path.with_suffix(".safetensors")
        if not meta_file.exists() or not weights.exists():
            raise LabError(f"No Q head at {path}: need {meta_file.name} and {weights.name}.")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != _FORMAT:
            raise LabError(f"{meta_file} is not a Q head of format {_FORMAT}.")
        t = load_file(str(weights))
        return cls(
            layer=int(meta["layer"]),
            betas=tuple(float(b) for b in meta["betas"]),
            weight=t["weight"],
            bias=t["bias"],
            vocab=int(meta["vocab"]),
            model_id=meta["model_id"],
            model_name=meta.get("model_name", ""),
            bounds=None if meta.get("bounds") is None else tuple(meta["bounds"]),
            signature=tuple(meta.get("signature", ())),
        )


def _width(model: torch.nn.Module) -> int:
    if hasattr(model, "cfg"):
        return int(model.cfg.d_model)
    return int(model.config.hidden_size)
