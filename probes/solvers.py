"""Batched solvers: many L2-regularised linear probes fitted as one stacked tensor problem.

Every solver takes feature sets ``x[feat, row, d_model]`` (one per model and hook) and ``prob``
problems that share those rows (targets x regularisation values x controls), so one pass over a
feature set's rows serves all of its problems; the feature sets are visited one at a time while
their rows sit in cache, and a feature set whose problems have all converged is skipped.

Multinomial logistic regression minimises exactly sklearn's objective,
``C * sum_i w_i * logloss_i + 0.5 * ||W||^2`` (intercept unpenalised), by a batched L-BFGS with a
per-problem Armijo line search and a per-problem stop on the gradient norm. Ridge solves
``sum_i w_i ||y_i - W x_i - b||^2 + alpha ||W||^2`` for every ``alpha`` from one eigendecomposition
of the weighted Gram matrix per feature set. Difference of means is closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "LinearMap",
    "SolverConfig",
    "fit_diff_means",
    "fit_logistic",
    "fit_ridge",
    "logistic_objective",
]


@dataclass(frozen=True)
class SolverConfig:
    """How far and how long the batched L-BFGS runs."""

    tol: float = 1e-4  # stop once ||grad|| <= tol * ||grad at W = 0|| (objective ~1e-3 off)
    max_iter: int = 1000  # safety cap only; problems stop on tol
    history: int = 10  # L-BFGS memory (pairs of steps and gradient changes kept)


@dataclass(frozen=True)
class LinearMap:
    """Fitted linear maps ``x @ weight + bias`` for a batch of problems, with solver diagnostics."""

    weight: Float[Tensor, "feat prob d_model out"]  # per-output directions (sklearn coef_.T)
    bias: Float[Tensor, "feat prob out"]  # intercepts (unpenalised)
    n_iter: Int[Tensor, "feat prob"]  # solver iterations (0 for closed-form solvers)
    converged: Bool[
        Tensor, "feat prob"
    ]  # met the tolerance, or stopped improving at working precision


def logistic_objective(
    x: Float[Tensor, "*feat row d_model"],
    theta: Float[Tensor, "*feat prob d1 cls"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    c: Float[Tensor, " prob"],
    class_mask: Bool[Tensor, "prob cls"],
) -> tuple[Float[Tensor, "*feat prob"], Float[Tensor, "*feat prob d1 cls"]]:
    """sklearn's multinomial objective and gradient; ``theta`` = [W; b], optional ``feat`` batch."""
    n_prob = class_mask.shape[0]
    w, b = theta[..., :-1, :], theta[..., -1, :]
    # Rows last: (W^T x^T) and (R^T x) are the fast forms of these thin products on a CPU, and
    # the softmax over classes then runs over contiguous rows.
    w_t = einops.rearrange(w, "... p d k -> ... (k p) d")
    logits = einops.rearrange(w_t @ x.mT, "... (k p) n -> ... k p n", p=n_prob)
    logits = logits + einops.rearrange(b, "... p k -> ... k p 1")
    logits = logits.masked_fill(~class_mask.T[..., None], float("-inf"))
    logp = torch.log_softmax(logits, dim=-3)  # [*feat cls prob row]
    index = labels.expand(*logp.shape[:-3], 1, *labels.shape)
    picked = logp.gather(-3, index).squeeze(-3)  # [*feat prob row]
    loss = einops.einsum(picked.double(), weights.double(), "... p n, p n -> ... p")  # float64 sum
    value = (-c.double() * loss + 0.5 * w.double().pow(2).sum((-1, -2))).to(x.dtype)
    resid = logp.exp()
    resid.scatter_add_(-3, index, resid.new_full((1,), -1.0).expand(index.shape))
    resid *= c[:, None] * weights  # [*feat cls prob row]
    grad_w = einops.rearrange(resid, "... k p n -> ... (k p) n") @ x
    grad_w = einops.rearrange(grad_w, "... (k p) d -> ... p d k", p=n_prob) + w
    grad_b = einops.rearrange(resid.sum(-1), "... k p -> ... p 1 k")
    return value, torch.cat([grad_w, grad_b], dim=-2)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum((-1, -2))


def _evaluate(x, theta, args, active: Tensor):
    """Objective and gradient of the ``active`` ``[feat prob]`` problems (others left at zero).

    On a GPU every problem goes in one batched product. On a CPU, where the products are bound by
    arithmetic, each feature set runs alone with only its active problems' columns, so problems
    that have converged stop costing anything.
    """
    if x.device.type != "cpu":
        return logistic_objective(x, theta, *args)
    value = theta.new_zeros(theta.shape[:2])
    grad = torch.zeros_like(theta)
    for f in active.any(1).nonzero().flatten().tolist():
        idx = active[f].nonzero().flatten()
        if len(idx) == theta.shape[1]:
            value[f], grad[f] = logistic_objective(x[f], theta[f], *args)
        else:
            value[f, idx], grad[f, idx] = logistic_objective(
                x[f], theta[f, idx], *(a[idx] for a in args)
            )
    return value, grad


def fit_logistic(
    x: Float[Tensor, "feat row d_model"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    c: Float[Tensor, " prob"],
    class_mask: Bool[Tensor, "prob cls"],
    config: SolverConfig = SolverConfig(),
) -> LinearMap:
    """Fit every (feature set, problem) pair by batched L-BFGS to sklearn's multinomial optimum.

    Starts from ``W = 0`` (warm starts along the C path or across layers were measured and did not
    shorten the tail of L-BFGS here, so all C values share each pass instead).
    """
    n_feat, _, d = x.shape
    n_prob, n_cls = class_mask.shape
    args = (labels, weights.to(x.dtype), c.to(x.dtype), class_mask)
    everything = torch.ones(n_feat, n_prob, dtype=torch.bool, device=x.device)
    theta = x.new_zeros(n_feat, n_prob, d + 1, n_cls)
    f, g = _evaluate(x, theta, args, everything)
    g_norm0 = g.flatten(2).norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
    gamma = 1.0 / g_norm0  # the first step has unit length
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    n_iter = torch.zeros(n_feat, n_prob, dtype=torch.long, device=x.device)
    done = torch.zeros(n_feat, n_prob, dtype=torch.bool, device=x.device)
    converged = done.clone()
    ftol = 10 * torch.finfo(x.dtype).eps
    flat = torch.zeros(n_feat, n_prob, dtype=torch.long, device=x.device)  # iterations in a row
    for _ in range(config.max_iter):
        if bool(done.all()):
            break
        # Two-loop recursion: direction = -H g for every (feat, prob) at once.
        q = g.clone()
        saved = []
        for s, y in zip(reversed(s_hist), reversed(y_hist), strict=True):
            ys = _dot(y, s)
            rho = torch.where(ys > 0, 1.0 / ys.clamp_min(1e-300), 0.0)
            a = rho * _dot(s, q)
            q -= a[..., None, None] * y
            saved.append((rho, a))
        q *= gamma[..., None, None]
        for s, y, (rho, a) in zip(s_hist, y_hist, reversed(saved), strict=True):
            q += (a - rho * _dot(y, q))[..., None, None] * s
        direction = torch.where(done[..., None, None], 0.0, -q)
        slope = _dot(g, direction)
        uphill = slope >= 0  # lost descent (rare): fall back to steepest descent
        direction = torch.where(
            (uphill & ~done)[..., None, None], -g * gamma[..., None, None], direction
        )
        slope = _dot(g, direction)
        step = torch.ones_like(f)
        pending = ~done
        f_new, g_new = f.clone(), g.clone()
        for _halving in range(40):
            f_try, g_try = _evaluate(x, theta + step[..., None, None] * direction, args, pending)
            f_new = torch.where(pending, f_try, f_new)
            g_new = torch.where(pending[..., None, None], g_try, g_new)
            pending = pending & ~(f_try <= f + 1e-4 * step * slope)
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        # No Armijo decrease, or a decrease below working precision: as solved as it gets.
        tiny = (f - f_new) <= ftol * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0)
        flat = torch.where(tiny & ~pending, flat + 1, 0)
        stalled = pending | (flat >= 5)
        move = (~done & ~pending)[..., None, None]
        s = torch.where(move, step[..., None, None] * direction, 0.0)
        y = torch.where(move, g_new - g, 0.0)
        theta = theta + s
        f = torch.where(move[..., 0, 0], f_new, f)
        g = torch.where(move, g_new, g)
        ys, yy = _dot(s, y), _dot(y, y)
        keep = ys > 1e-10 * yy.sqrt() * _dot(s, s).sqrt()
        s_hist.append(torch.where(keep[..., None, None], s, 0.0))
        y_hist.append(torch.where(keep[..., None, None], y, 0.0))
        gamma = torch.where(keep, ys / yy.clamp_min(1e-300), gamma)
        if len(s_hist) > config.history:
            s_hist.pop(0)
            y_hist.pop(0)
        n_iter += move[..., 0, 0].long()
        converged = converged | (g.flatten(2).norm(dim=-1) <= config.tol * g_norm0) | stalled
        done = done | converged
    return LinearMap(theta[:, :, :-1], theta[:, :, -1], n_iter, converged)


def fit_ridge(
    x: Float[Tensor, "feat row d_model"],
    y: Float[Tensor, "tgt row out"],
    alphas: Float[Tensor, " reg"],
) -> LinearMap:
    """Ridge for every target and every ``alpha`` from one eigendecomposition per feature set.

    Problems come out target-major: problem ``t * len(alphas) + r``. The Gram matrix is formed and
    decomposed in float64 so tiny ``alpha`` stays exact.
    """
    n_feat = x.shape[0]
    mean_x = x.mean(1, keepdim=True)
    mean_y = y.mean(1, keepdim=True).to(torch.float64)
    weights, biases = [], []
    for f in range(n_feat):
        xc = (x[f] - mean_x[f]).to(torch.float64)
        evals, evecs = torch.linalg.eigh(xc.T @ xc)  # X^T X = V diag(e) V^T
        proj = einops.einsum(evecs, xc, y.to(torch.float64) - mean_y, "d e, n d, t n o -> t e o")
        shrink = 1.0 / (evals[None, :] + alphas.to(torch.float64)[:, None])  # [reg e]
        coef = einops.einsum(evecs, shrink, proj, "d e, r e, t e o -> t r d o")
        weights.append(coef)
        biases.append(
            mean_y[:, None, 0] - einops.einsum(mean_x[f, 0].double(), coef, "d, t r d o -> t r o")
        )
    weight = einops.rearrange(torch.stack(weights), "f t r d o -> f (t r) d o").to(x.dtype)
    bias = einops.rearrange(torch.stack(biases), "f t r o -> f (t r) o").to(x.dtype)
    n = weight.shape[1]
    zeros = torch.zeros(n_feat, n, dtype=torch.long, device=x.device)
    return LinearMap(weight, bias, zeros, zeros == 0)


def fit_diff_means(
    x: Float[Tensor, "feat row d_model"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    class_mask: Bool[Tensor, "prob cls"],
) -> LinearMap:
    """One direction per class, mean(class) - mean(rest), cut at the midpoint (Arditi et al.).

    With ``weights`` from class balancing, "rest" is the average of the other class means.
    """
    n_prob, n_cls = class_mask.shape
    onehot = torch.nn.functional.one_hot(labels, n_cls).to(x.dtype) * weights.to(x.dtype)[..., None]
    inside = einops.einsum(onehot, x, "p n k, f n d -> f p k d")  # weighted class sums
    count_in = onehot.sum(1)[None, :, :, None]  # [1 prob cls 1]
    total, count_all = inside.sum(2, keepdim=True), count_in.sum(2, keepdim=True)
    mean_in = inside / count_in.clamp_min(1e-12)
    mean_out = (total - inside) / (count_all - count_in).clamp_min(1e-12)
    direction = (mean_in - mean_out).masked_fill(~class_mask[None, :, :, None], 0.0)
    midpoint = 0.5 * (mean_in + mean_out)
    bias = -(direction * midpoint).sum(-1)
    bias = bias.masked_fill(~class_mask[None], float("-inf"))
    zeros = torch.zeros(x.shape[0], n_prob, dtype=torch.long, device=x.device)
    return LinearMap(einops.rearrange(direction, "f p k d -> f p d k"), bias, zeros, zeros == 0)
