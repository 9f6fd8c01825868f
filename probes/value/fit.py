"""Fitting a Q head with the lab's batched ridge solver, and its R² against exact soft values.

Targets are ``values[batch, pos, beta, vocab]``: Q_beta(prefix ``tokens[:, :t + 1]``, token x).
Two layouts:

- dense (``mask`` None, e.g. the oracle): every (prefix, token) has a target; tokens whose target
  is ``-inf`` everywhere (never emitted, e.g. BOS) get a ``-inf`` bias. Targets are centred per
  prefix and beta over the emitted tokens first: a per-prefix constant does not change
  pi_Q ∝ p_base exp(Q / beta), so the head spends no capacity on it. One ridge solve
  (``probes.linear.fit_ridge``) covers every (beta, token) output.
- sparse (``mask[batch, pos, vocab]``, e.g. the practitioner's sampled tokens): a pooled ridge
  from the residual to the target of whatever token was observed, then one ridge per token column
  on its own rows for the remainder (shrunk towards the pooled fit; a token seen on too few rows
  for a map shifts only its intercept, and a token never observed keeps the pooled fit).

The ridge penalty is chosen on held-out sequences (the last ``held_out`` share) from a grid
relative to the features' scale, then the head is refitted on every sequence.

``objective`` (registry ``OBJECTIVES``) says what the head minimises:

- ``"ridge"`` (default): the squared error above, dense or sparse targets;
- ``"kl"`` (dense oracle targets only): the ridge head, then refined per beta to minimise the
  cross-entropy of pi* against the sampler pi_Q ∝ p_base exp(Q / beta) (``probes.value.kl_fit``).
  It needs the exact ``target_logprobs`` (log pi*, e.g. ``PiStar.next_token_logprobs``). Same
  head, same parameters; on the shipped organism it cuts the sampler's KL to pi* several-fold at
  small beta, where the squared error spends capacity on tokens pi* never picks and its errors
  are divided by beta (``benchmarks/value_head.py``).
R² (``q_head_r2``, ``head_r2``) is of Q centred per prefix over the emitted tokens (targets and
predictions both), pooled over prefixes and tokens, one value per beta, on held-out sequences.
"""

from __future__ import annotations

import einops
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lab.errors import LabError
from probes.linear.solvers import fit_ridge
from probes.value.head import QHead
from probes.value.kl_fit import fit_kl
from probes.value.residual import (
    fingerprint,
    logprobs_and_residual,
    model_name,
    n_layers,
    signature,
)

__all__ = ["OBJECTIVES", "centre", "fit_observed", "fit_q_head", "head_r2", "q_head_r2"]

ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # ridge penalties, times trace(X^T X) / d
_MIN_ROWS = 8  # a token column observed on fewer rows (or d_model) keeps the pooled map ...
_PRIOR = 1.0  # ... and moves its intercept by its mean remainder, shrunk as n / (n + _PRIOR)


def centre(values: Float[Tensor, "... vocab"]) -> Float[Tensor, "... vocab"]:
    """Values minus their mean over the finite tokens (non-finite entries stay as they are)."""
    finite = torch.isfinite(values)
    mean = values.nan_to_num(0.0, 0.0, 0.0).sum(-1, keepdim=True) / finite.sum(-1, keepdim=True)
    return torch.where(finite, values - mean, values)


def _rows(x: Tensor) -> Tensor:
    return einops.rearrange(x, "b t ... -> (b t) ...")


def _ridge(x: Tensor, y: Tensor, alphas: Tensor) -> tuple[Tensor, Tensor]:
    """(weight[reg d out], bias[reg out]) of ridge from x[row d] to y[row out] for each alpha."""
    fit = fit_ridge(x[None], y[None], alphas)
    return fit.weight[0], fit.bias[0]


def _scale(x: Tensor) -> float:
    return float((x - x.mean(0)).pow(2).sum() / x.shape[1]) or 1.0


def _choose(x: Tensor, y: Tensor, train: Tensor, observed: Tensor | None = None) -> Tensor:
    """The penalty (one-element tensor) with the least held-out squared error."""
    alphas = torch.tensor(ALPHAS, dtype=torch.float64) * _scale(x[train])
    if train.all() or not train.any():
        return alphas[3:4]
    w, b = _ridge(x[train], y[train], alphas)
    test = ~train
    err = einops.einsum(x[test], w, "n d, r d o -> r n o") + b[:, None] - y[test]
    err = err.pow(2) if observed is None else err.pow(2) * observed[test]
    return alphas[int(err.flatten(1).sum(1).argmin())].reshape(1)


def _fit_dense(x: Tensor, y: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
    """x[row d], y[row beta vocab] (finite columns only) -> weight[d beta vocab], bias."""
    flat = einops.rearrange(y, "n beta v -> n (beta v)")
    alpha = _choose(x, flat, train)
    w, b = _ridge(x, flat, alpha)
    return w[0].reshape(x.shape[1], *y.shape[1:]), b[0].reshape(y.shape[1:])


def fit_observed(
    x: Float[Tensor, "row d_model"],
    yo: Float[Tensor, "obs beta"],
    row: Int[Tensor, " obs"],
    col: Int[Tensor, " obs"],
    vocab: int,
    train: Bool[Tensor, " row"],
) -> tuple[Tensor, Tensor]:
    """Sparse targets ``yo`` of token ``col`` after prefix ``row``: a pooled ridge on every
    observed (row, token), then each token column's remainder on its own rows, with its own
    held-out penalty (a column with fewer rows than ``_MIN_ROWS`` or d_model keeps the pooled
    map and moves its intercept by its mean remainder, shrunk towards 0).
    Returns weight[d beta vocab], bias[beta vocab]."""
    xo = x[row]  # one row per observed (prefix, token)
    alpha = _choose(xo, yo, train[row])
    pw, pb = (t[0] for t in _ridge(xo, yo, alpha))  # [d beta], [beta]
    weight = pw[:, :, None].repeat(1, 1, vocab)
    bias = pb[:, None].repeat(1, vocab)
    rest = yo - (xo @ pw + pb)
    for v in col.unique().tolist():
        mine = col == v
        n = int(mine.sum())
        if n < max(_MIN_ROWS, x.shape[1]):  # too few rows for a map: shift the intercept only
            bias[:, v] += rest[mine].sum(0) / (n + _PRIOR)
            continue
        w, b = _ridge(xo[mine], rest[mine], _choose(xo[mine], rest[mine], train[row][mine]))
        weight[:, :, v] += w[0]
        bias[:, v] += b[0]
    return weight, bias


def _fit(
    x: Float[Tensor, "row d_model"],
    y: Float[Tensor, "row beta vocab"],
    observed: Bool[Tensor, "row vocab"] | None,
    train: Bool[Tensor, " row"],
) -> tuple[Tensor, Tensor]:
    """weight[d beta vocab], bias[beta vocab] for dense or sparse targets (see the docstring)."""
    finite = torch.isfinite(y).all(1)  # [row vocab]
    never = ~finite.any(0)  # tokens never emitted (dense targets -inf everywhere)
    if observed is not None and (observed & ~finite).any():
        raise LabError("Q targets must be finite wherever the mask marks them observed.")
    if observed is None and not (finite | never[None]).all():
        raise LabError(
            "Dense Q targets must be finite for every prefix, or -inf for a token everywhere; "
            "pass a mask of the observed entries for partial targets."
        )
    if observed is None:
        keep = ~never
        w = torch.zeros(x.shape[1], *y.shape[1:], dtype=torch.float64)
        b = torch.full(y.shape[1:], -torch.inf, dtype=torch.float64)
        w[:, :, keep], b[:, keep] = _fit_dense(x, centre(y[:, :, keep]), train)
        return w, b
    row, col = observed.nonzero(as_tuple=True)
    return fit_observed(x, y[row, :, col], row, col, y.shape[2], train)


def _split(batch: int, pos: int, held_out: float) -> Tensor:
    n_test = int(batch * held_out) if batch > 1 else 0
    train = torch.ones(batch, pos, dtype=torch.bool)
    train[batch - n_test :] = False
    return _rows(train)


def _check(tokens: Tensor, values: Tensor, betas: tuple[float, ...], mask: Tensor | None) -> None:
    if values.ndim != 4 or values.shape[0] != tokens.shape[0] or values.shape[1] > tokens.shape[1]:
        raise LabError(
            f"values must be (batch, pos, beta, vocab) for tokens {tuple(tokens.shape)}; got "
            f"{tuple(values.shape)}."
        )
    if values.shape[2] != len(betas):
        raise LabError(f"values hold {values.shape[2]} betas; betas lists {len(betas)}.")
    if mask is not None and mask.shape != (*values.shape[:2], values.shape[3]):
        raise LabError(f"mask must be (batch, pos, vocab); got {tuple(mask.shape)}.")


def _as_is(w: Tensor, b: Tensor, **_: object) -> tuple[Tensor, Tensor]:
    return w, b


def _kl(w: Tensor, b: Tensor, *, x, logp, target, betas, **_: object) -> tuple[Tensor, Tensor]:
    keep = torch.isfinite(b).all(0)  # tokens ever emitted (the others keep bias -inf)
    return fit_kl(x, logp, target, w, b, betas, keep)


OBJECTIVES = {"ridge": _as_is, "kl": _kl}  # what refines the ridge head (see the docstring)


def _check_objective(objective: str, values: Tensor, target: Tensor | None, mask) -> None:
    if objective not in OBJECTIVES:
        raise LabError(f"Unknown Q-head objective {objective!r}; pick one of {sorted(OBJECTIVES)}.")
    if objective != "kl":
        return
    if mask is not None:
        raise LabError("objective='kl' needs dense oracle targets; drop the mask or use 'ridge'.")
    if target is None or target.shape != values.shape:
        raise LabError(
            f"objective='kl' needs target_logprobs (log pi*) shaped like values "
            f"{tuple(values.shape)}; got {None if target is None else tuple(target.shape)}."
        )


def fit_q_head(
    model: torch.nn.Module,
    tokens: Int[Tensor, "batch pos"],
    values: Float[Tensor, "batch pos beta vocab"],
    layer: int,
    *,
    betas: tuple[float, ...],
    mask: Bool[Tensor, "batch pos vocab"] | None = None,
    held_out: float = 0.2,
    objective: str = "ridge",
    target_logprobs: Float[Tensor, "batch pos beta vocab"] | None = None,
) -> QHead:
    """A Q head from ``model``'s residual at ``layer`` to ``values`` (the targets of prefix
    ``tokens[:, :t + 1]`` at position t), for the grid ``betas``, fitted by ``objective``
    (``"ridge"`` or ``"kl"``, which needs ``target_logprobs`` = log pi*: see the module
    docstring)."""
    betas = tuple(float(b) for b in betas)
    _check(tokens, values, betas, mask)
    _check_objective(objective, values, target_logprobs, mask)
    pos = values.shape[1]
    logp, resid = logprobs_and_residual(model, tokens, layer)
    x, y = _rows(resid[:, :pos]), _rows(values.double())
    w, b = _fit(x, y, None if mask is None else _rows(mask), _split(len(tokens), pos, held_out))
    target = None if target_logprobs is None else _rows(target_logprobs)
    w, b = OBJECTIVES[objective](w, b, x=x, logp=_rows(logp[:, :pos]), target=target, betas=betas)
    return QHead(
        layer=layer,
        betas=betas,
        weight=einops.rearrange(w, "d beta v -> d (beta v)").float(),
        bias=einops.rearrange(b, "beta v -> (beta v)").float(),
        vocab=values.shape[3],
        model_id=fingerprint(model),
        model_name=model_name(model),
        signature=signature(model),
    )


def _r2(pred: Tensor, target: Tensor) -> list[float]:
    """Per-beta R² of centred predictions against centred targets, over the finite tokens."""
    pred, target = centre(pred), centre(target)
    ok = torch.isfinite(target)
    resid = torch.where(ok, pred - target, 0.0).pow(2).sum((0, 2))
    total = torch.where(ok, target, 0.0).pow(2).sum((0, 2))
    return (1 - resid / total).tolist()


def q_head_r2(
    model: torch.nn.Module,
    tokens: Int[Tensor, "batch pos"],
    values: Float[Tensor, "batch pos beta vocab"],
    layers: list[int] | None = None,
    *,
    betas: tuple[float, ...],
    held_out: float = 0.25,
) -> pd.DataFrame:
    """Held-out R² of a Q head fitted at each layer (every layer by default) on dense ``values``
    (exact soft values: centred per prefix, see the module docstring): rows (layer, beta, r2)."""
    betas = tuple(float(b) for b in betas)
    _check(tokens, values, betas, None)
    pos = values.shape[1]
    train = _split(len(tokens), pos, held_out)
    if train.all():
        raise LabError("q_head_r2 needs at least 2 sequences (some held out).")
    inner = _split(int(train.sum()) // pos, pos, 0.2)  # chooses the penalty within training
    y = _rows(values.double())
    rows = []
    for layer in range(n_layers(model) + 1) if layers is None else layers:
        x = _rows(logprobs_and_residual(model, tokens, layer)[1][:, :pos])
        w, b = _fit(x[train], y[train], None, inner)
        pred = einops.einsum(x[~train], w, "n d, d beta v -> n beta v") + b
        for beta, r2 in zip(betas, _r2(pred, y[~train]), strict=True):
            rows.append({"layer": layer, "beta": beta, "r2": r2})
    return pd.DataFrame(rows)


def head_r2(
    head: QHead,
    model: torch.nn.Module,
    tokens: Int[Tensor, "batch pos"],
    values: Float[Tensor, "batch pos beta vocab"],
    betas: tuple[float, ...],
) -> pd.DataFrame:
    """R² of a fitted head (e.g. a practitioner's) against dense ``values`` at ``betas`` (each
    within the head's grid): rows (layer, beta, r2)."""
    _check(tokens, values, tuple(betas), None)
    head.check(model)
    pos = values.shape[1]
    resid = logprobs_and_residual(model, tokens, head.layer)[1][:, :pos]
    pred = torch.stack([head.at(resid, b).double() for b in betas], 2)
    r2s = _r2(_rows(pred), _rows(values.double()))
    rows = zip(betas, r2s, strict=True)
    return pd.DataFrame([{"layer": head.layer, "beta": b, "r2": r} for b, r in rows])
