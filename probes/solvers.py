"""Batched solvers: many L2-regularised linear probes fitted as one stacked tensor problem.

Every solver takes features shared by a batch of problems, ``x[feat, row, d]`` (one feature set per
model and layer), and ``prob`` problems per feature set (targets x regularisation values x
controls) that reuse the same rows, so each pass over the features serves all of them.

Multinomial logistic regression minimises exactly sklearn's objective,
``C * sum_i w_i * logloss_i + 0.5 * ||W||^2`` with the intercept unpenalised, by a batched L-BFGS
with a per-problem Armijo line search and a per-problem stopping rule on the gradient norm.
Ridge solves ``||y - x W - b||^2 + alpha * ||W||^2`` for every ``alpha`` from one eigendecomposition
of the centred Gram matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["LogisticFit", "SolverConfig", "fit_logistic", "fit_ridge", "logistic_objective"]


@dataclass(frozen=True)
class SolverConfig:
    """How far and how long the batched L-BFGS runs."""

    tol: float = 1e-6  # stop a problem once ||grad|| <= tol * ||grad at zero||
    max_iter: int = 1000  # safety cap only: problems stop on tol, this just bounds a runaway
    history: int = 10  # L-BFGS memory (pairs of steps and gradient changes kept)


@dataclass(frozen=True)
class LogisticFit:
    """The fitted parameters of a batch of multinomial logistic problems."""

    weight: Float[Tensor, "feat prob d_model cls"]  # coefficients per class (sklearn coef_.T)
    bias: Float[Tensor, "feat prob cls"]  # unpenalised intercepts
    objective: Float[Tensor, "feat prob"]  # final value of the sklearn objective
    n_iter: Int[Tensor, "feat prob"]  # L-BFGS iterations each problem took
    converged: Bool[Tensor, "feat prob"]  # whether each problem met the tolerance


def _split(theta: Tensor) -> tuple[Tensor, Tensor]:
    return theta[:, :, :-1], theta[:, :, -1]


def logistic_objective(
    x: Float[Tensor, "feat row d_model"],
    theta: Float[Tensor, "feat prob d1 cls"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    c: Float[Tensor, "prob"],
    class_mask: Bool[Tensor, "prob cls"],
) -> tuple[Float[Tensor, "feat prob"], Float[Tensor, "feat prob d1 cls"]]:
    """sklearn's multinomial objective and its gradient for every problem; ``theta`` = [W; b]."""
    w, b = _split(theta)
    n_prob, n_cls = class_mask.shape
    w_mat = einops.rearrange(w, "f p d k -> f d (p k)")
    logits = einops.rearrange(x @ w_mat, "f n (p k) -> f n p k", p=n_prob) + b[:, None]
    logits = logits.masked_fill(~class_mask[None, None], float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)  # [feat row prob cls]
    picked = logp.gather(-1, einops.repeat(labels.T, "n p -> f n p 1", f=x.shape[0]))[..., 0]
    loss = -einops.einsum(picked, weights, "f n p, p n -> f p")
    value = c * loss + 0.5 * w.pow(2).sum((-1, -2))
    resid = logp.exp() - torch.nn.functional.one_hot(labels.T, n_cls).to(x.dtype)[None]
    resid = resid * (c[:, None] * weights).T[None, :, :, None]  # [feat row prob cls]
    grad_w = einops.rearrange(resid, "f n p k -> f (p k) n") @ x  # [feat (prob cls) d]
    grad_w = einops.rearrange(grad_w, "f (p k) d -> f p d k", p=n_prob) + w
    grad = torch.cat([grad_w, resid.sum(1)[:, :, None]], dim=2)
    return value, grad


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum((-1, -2))


def fit_logistic(
    x: Float[Tensor, "feat row d_model"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    c: Float[Tensor, "prob"],
    class_mask: Bool[Tensor, "prob cls"],
    config: SolverConfig = SolverConfig(),
    init: Float[Tensor, "feat prob d1 cls"] | None = None,
) -> LogisticFit:
    """Fit every (feature set, problem) pair at once by batched L-BFGS (sklearn's optimum)."""
    n_feat, _, d = x.shape
    n_prob, n_cls = class_mask.shape
    c = c.to(x.dtype)
    weights = weights.to(x.dtype)
    args = (labels, weights, c, class_mask)
    zero = x.new_zeros(n_feat, n_prob, d + 1, n_cls)
    _, g0 = logistic_objective(x, zero, *args)
    g0_norm = g0.flatten(2).norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
    theta = zero if init is None else init.to(x.dtype).clone()
    f, g = logistic_objective(x, theta, *args) if init is not None else (None, g0)
    if f is None:
        f, _ = logistic_objective(x, theta, *args)  # value at zero (gradient reused)
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    n_iter = torch.zeros(n_feat, n_prob, dtype=torch.long, device=x.device)
    done = g.flatten(2).norm(dim=-1) <= config.tol * g0_norm
    for _ in range(config.max_iter):
        if bool(done.all()):
            break
        # Two-loop recursion: direction = -H g, batched over (feat, prob).
        q = g.clone()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / _dot(y, s)
            a = rho * _dot(s, q)
            q -= a[..., None, None] * y
            alphas.append((rho, a))
        if s_hist:
            gamma = _dot(s_hist[-1], y_hist[-1]) / _dot(y_hist[-1], y_hist[-1])
            q *= gamma[..., None, None]
        else:
            q /= g.flatten(2).norm(dim=-1).clamp_min(1e-30)[..., None, None]
        for (s, y), (rho, a) in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            bcoef = rho * _dot(y, q)
            q += (a - bcoef)[..., None, None] * s
        direction = -q
        slope = _dot(g, direction)
        bad = slope >= 0  # not a descent direction: restart from steepest descent
        if bool(bad.any()):
            direction = torch.where(bad[..., None, None], -g, direction)
            slope = torch.where(bad, -_dot(g, g), slope)
        direction = direction * (~done)[..., None, None]
        step = torch.ones_like(f)
        for _ls in range(30):
            f_new, g_new = logistic_objective(x, theta + step[..., None, None] * direction, *args)
            ok = (f_new <= f + 1e-4 * step * slope) | done
            if bool(ok.all()):
                break
            step = torch.where(ok, step, step * 0.5)
        s = step[..., None, None] * direction
        theta = theta + s
        y = g_new - g
        keep = (_dot(s, y) > 1e-10 * _dot(y, y)) & ~done
        s_hist.append(torch.where(keep[..., None, None], s, 0.0))
        y_hist.append(torch.where(keep[..., None, None], y, 0.0))
        # Problems that did not update keep a harmless (s, y) = (0, 0) pair; avoid 0/0 below.
        y_hist[-1] = y_hist[-1] + (~keep)[..., None, None] * 0.0
        if len(s_hist) > config.history:
            s_hist.pop(0)
            y_hist.pop(0)
        f, g = torch.where(done, f, f_new), torch.where(done[..., None, None], g, g_new)
        n_iter += (~done).long()
        done = done | (g.flatten(2).norm(dim=-1) <= config.tol * g0_norm)
    w, b = _split(theta)
    return LogisticFit(weight=w, bias=b, objective=f, n_iter=n_iter, converged=done)
