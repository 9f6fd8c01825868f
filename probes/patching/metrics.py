"""Patching metrics: small callables from patched logits (or a hook's output) to one number
per prompt.

A metric reads the logits at a few positions (``positions``, negative counts from the end; the
cone runner unembeds only those) and returns a ``[batch]`` tensor. Anything with that shape and a
``positions`` and ``name`` attribute works, so a reward model's score is ``FnMetric`` around it.
A ``HookMetric`` reads one block hook's activation instead (``reads`` names it): a probe
direction's projection on the residual stream, say; then patched runs stop at that block.

Every metric has a ``name``, its rows' ``metric`` in result tables: ``label`` if given, else a
description of what it computes (``LogitDiff(7-40)``, ``LogProb([3,9])@-1,-3``; a tensor of many
ids by a digest of its values), so two metrics that differ get different names. ``check_names``
refuses metrics whose names clash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError
from lab.models.outputs import kl
from lab.runtime import device_of
from lab.types import Tokens
from probes.patching.positions import check_mask, mask_kwargs, read_positions, resolve_positions

__all__ = [
    "FnMetric",
    "HookMetric",
    "KLMetric",
    "LogProb",
    "LogitDiff",
    "Metric",
    "TokenSetProb",
    "check_names",
    "read_logits",
]

ReadLogits = Float[Tensor, "batch read vocab"]


@dataclass(frozen=True)
class Metric:
    """Base of the metrics: which positions it reads; subclasses define ``__call__``."""

    positions: tuple[int, ...] = (-1,)  # positions read (negative: from the end)
    label: str = field(default="", kw_only=True)  # its name in result tables ("": described)

    @property
    def name(self) -> str:
        """``label``, or what the metric computes and, unless only the last, where it reads."""
        if self.label:
            return self.label
        at = "" if tuple(self.positions) == (-1,) else "@" + ",".join(map(str, self.positions))
        return self.describe() + at

    def describe(self) -> str:
        """What the metric computes, for its default name."""
        return type(self).__name__

    @property
    def reads(self) -> str:
        """What the metric reads: ``"logits"``, or a hook's name."""
        return "logits"

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        raise NotImplementedError

    def tile(self, copies: int) -> Metric | None:
        """This metric for ``copies`` stacked copies of the batch (None: score copies one by
        one). Per-prompt fields repeat, so one call scores many patched runs."""
        return None


@dataclass(frozen=True)
class LogitDiff(Metric):
    """Logit of ``correct`` minus logit of ``wrong`` (token id per prompt), mean over positions."""

    correct: Int[Tensor, " batch"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    wrong: Int[Tensor, " batch"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        rows = torch.arange(logits.shape[0], device=logits.device)
        diff = (
            logits[rows, :, self.correct.to(logits.device)]
            - logits[rows, :, self.wrong.to(logits.device)]
        )
        return diff.mean(-1)

    def describe(self) -> str:
        return f"LogitDiff({_ids(self.correct)}-{_ids(self.wrong)})"

    def tile(self, copies: int) -> Metric:
        return replace(self, correct=self.correct.repeat(copies), wrong=self.wrong.repeat(copies))


@dataclass(frozen=True)
class LogProb(Metric):
    """Log-probability of ``targets`` (``batch`` or ``batch read`` token ids), mean over reads."""

    targets: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # ids

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        lp = logits.log_softmax(-1)
        ids = self.targets.to(logits.device)
        ids = ids[:, None].expand(lp.shape[:2]) if ids.ndim == 1 else ids
        return lp.gather(-1, ids[..., None])[..., 0].mean(-1)

    def describe(self) -> str:
        return f"LogProb({_ids(self.targets)})"

    def tile(self, copies: int) -> Metric:
        reps = (copies,) + (1,) * (self.targets.ndim - 1)
        return replace(self, targets=self.targets.repeat(*reps))


@dataclass(frozen=True)
class TokenSetProb(Metric):
    """Total probability of a token set (an attractor, e.g. the wedding words), mean over reads."""

    tokens: tuple[int, ...] = ()  # token ids of the set

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        ids = torch.tensor(self.tokens, device=logits.device, dtype=torch.long)
        return logits.softmax(-1)[..., ids].sum(-1).mean(-1)

    def describe(self) -> str:
        return f"TokenSetProb({_ids(torch.tensor(self.tokens, dtype=torch.long), whole=True)})"

    def tile(self, copies: int) -> Metric:
        return self


@dataclass(frozen=True)
class KLMetric(Metric):
    """KL between the patched distribution and a reference's, in nats, mean over reads.

    ``reference`` holds the reference's log-probabilities at the positions read: another model's
    (base or tuned; ``KLMetric.to_model`` computes them), or the world's exact next-token
    distribution for the organism. ``patched_first``: KL(patched || reference), else
    KL(reference || patched).
    """

    reference: Float[Tensor, "batch read vocab"] = field(default_factory=lambda: torch.zeros(0))
    patched_first: bool = True  # the direction of the divergence

    @classmethod
    def to_model(
        cls, model: Any, tokens: Tokens, *, mask: Tensor | None = None, **options: Any
    ) -> KLMetric:
        """KL to ``model``'s next-token distributions on ``tokens`` (e.g. the base's; ``mask``:
        padded prompts' attention mask, as given to ``patch``); ``options`` as ``from_logits``."""
        mask = check_mask(mask, tokens)
        device = device_of(model)
        with torch.inference_mode():
            logits = model(tokens.to(device), **mask_kwargs(mask, device))
        return cls.from_logits(logits, mask=mask, **options)

    @classmethod
    def from_logits(
        cls,
        logits: Float[Tensor, "batch pos vocab"],
        *,
        positions: Sequence[int] = (-1,),
        mask: Tensor | None = None,
        patched_first: bool = True,
        label: str = "",
    ) -> KLMetric:
        """KL to the distributions of ``logits`` a caller has, read at ``positions`` (``mask`` as
        ``check_mask`` returns it)."""
        metric = cls(positions=tuple(positions), patched_first=patched_first, label=label)
        with torch.inference_mode():
            at = read_positions(metric, logits.shape[1], mask).to(logits.device)
            rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
            reference = logits[rows, at.expand(logits.shape[0], -1)].log_softmax(-1).float()
        return replace(metric, reference=reference)

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        lp = logits.log_softmax(-1)
        ref = self.reference.to(lp.device, lp.dtype)
        p, q = (lp, ref) if self.patched_first else (ref, lp)
        return kl(p, q).mean(-1)

    def describe(self) -> str:
        ref = f"ref{_digest(self.reference)}"
        return f"KL(patched||{ref})" if self.patched_first else f"KL({ref}||patched)"

    def tile(self, copies: int) -> Metric:
        return replace(self, reference=self.reference.repeat(copies, 1, 1))


@dataclass(frozen=True)
class FnMetric(Metric):
    """Any function of the read logits to ``[batch]``: a reward model's score, an entropy ..."""

    fn: Callable[[ReadLogits], Tensor] | None = None  # read logits -> one value per prompt

    def describe(self) -> str:
        return _fn_name(self.fn)

    def __call__(self, logits: ReadLogits) -> Float[Tensor, " batch"]:
        if self.fn is None:
            raise LabError("FnMetric needs fn: read logits to one value per prompt.")
        return self.fn(logits)


@dataclass(frozen=True)
class HookMetric(Metric):
    """One block hook's activation at the positions read, reduced to one value per prompt:
    its dot product with ``direction`` (a probe's, say; summed over the activation's trailing
    axes, broadcast as torch does) averaged over positions, or ``fn`` of it. No logits."""

    hook: str = ""  # e.g. "blocks.3.hook_resid_post" or "blocks.2.attn.hook_z"
    direction: Tensor | None = None  # the activation's trailing shape (d, or head d)
    fn: Callable[[Tensor], Tensor] | None = None  # batch read ... -> one value per prompt

    def describe(self) -> str:
        if self.fn is not None:
            return f"{self.hook}·{_fn_name(self.fn)}"
        return f"{self.hook}·direction{'' if self.direction is None else _digest(self.direction)}"

    @property
    def reads(self) -> str:
        return self.hook

    def __call__(self, act: Float[Tensor, "batch read ..."]) -> Float[Tensor, " batch"]:
        if (self.fn is None) == (self.direction is None):
            raise LabError(f"HookMetric {self.name} needs exactly one of direction and fn.")
        if self.fn is not None:
            return self.fn(act)
        direction = self.direction.to(act.device, act.dtype)
        try:
            dot = act * direction
        except RuntimeError as e:
            raise LabError(
                f"HookMetric {self.name}: direction of shape {tuple(direction.shape)} does not "
                f"match the activation's trailing shape {tuple(act.shape[2:])}."
            ) from e
        return dot.flatten(2).sum(-1).mean(-1)

    def tile(self, copies: int) -> Metric | None:
        return self if self.fn is None else None


def read_logits(logits: Float[Tensor, "batch pos vocab"], metric: Metric) -> ReadLogits:
    """The positions of full logits that ``metric`` reads."""
    return logits[:, resolve_positions(metric, logits.shape[1]).to(logits.device)]


def check_names(metrics: Sequence[Metric]) -> list[str]:
    """The metrics' names, refused when two are the same (their result rows would mix)."""
    names = [m.name for m in metrics]
    if clash := sorted({n for n in names if names.count(n) > 1}):
        raise LabError(
            f"Metrics share the name {clash[0]!r}, so their rows in the result table would mix; "
            "give each its own label, e.g. LogitDiff(..., label='name_mover')."
        )
    return names


def _digest(t: Tensor, most: int = 4096) -> str:
    """A short digest of a tensor's shape and values, at most ``most`` of them evenly spaced
    (a large reference stays cheap to name): default names tell metrics apart."""
    flat = t.detach().reshape(-1)
    if flat.numel() > most:
        flat = flat[torch.linspace(0, flat.numel() - 1, most, device=flat.device).long()]
    data = flat.to("cpu", torch.float64 if t.is_floating_point() else torch.int64).numpy()
    h = hashlib.blake2b(str(tuple(t.shape)).encode() + data.tobytes(), digest_size=3)
    return "#" + h.hexdigest()


def _ids(t: Tensor, whole: bool = False) -> str:
    """Token ids per prompt, for a name: ``7`` when every prompt has it, a list of up to 4
    (``whole``: a set of them, as is), else a digest."""
    flat = t.reshape(-1).tolist()
    if not flat:
        return ""
    if not whole and len(set(flat)) == 1 and t.ndim == 1:
        return str(flat[0])
    if len(flat) <= 4:
        listed = ",".join(map(str, flat))
        return listed if whole else f"[{listed}]"
    return f"{len(flat)} ids{_digest(t)}" if whole else _digest(t)


def _fn_name(fn: Callable | None) -> str:
    """A function's name for a metric's (``fn`` for a lambda or none)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "fn" if fn is None or name == "<lambda>" else name
