"""Batched solvers: many L2-regularised linear probes fitted as one stacked tensor problem.

Every solver takes feature sets ``x[feat, row, d_model]`` (one per model and hook) and ``prob``
problems that share those rows (targets x regularisation values x controls), so one pass over a
feature set's rows serves all of its problems. Multinomial logistic regression, the iterative one,
is in ``probes.linear.logistic``; this module holds the closed forms and the shared types. Ridge
solves
``sum_i w_i ||y_i - W x_i - b||^2 + alpha ||W||^2`` for every ``alpha`` from one eigendecomposition
of the weighted Gram matrix per feature set. Difference of means is closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from probes.linear.splits import Scaling

__all__ = ["LinearMap", "SolverConfig", "fit_diff_means", "fit_ridge"]


@dataclass(frozen=True)
class SolverConfig:
    """How far and how long the batched L-BFGS runs."""

    tol: float = 1e-4  # stop only once ||grad|| <= tol * ||grad at W = 0|| ...
    gap_tol: float = 1e-4  # ... and ||grad||^2 / 2 <= gap_tol * f: f at most ~gap_tol above f*
    max_iter: int = 1000  # safety cap only; problems stop on tol
    history: int = 20  # L-BFGS memory (pairs of steps and gradient changes kept)
    warm_start: bool = True  # CPU: start each feature set from the previous one's answer


@dataclass(frozen=True)
class LinearMap:
    """Fitted linear maps ``x @ weight + bias`` for a batch of problems, with solver diagnostics."""

    weight: Float[Tensor, "feat prob d_model out"]  # per-output directions (sklearn coef_.T)
    bias: Float[Tensor, "feat prob out"]  # intercepts (unpenalised)
    n_iter: Int[Tensor, "feat prob"]  # solver iterations (0 for closed-form solvers)
    converged: Bool[
        Tensor, "feat prob"
    ]  # met every stopping test (False: out of iterations, or stalled short of them)


def fit_ridge(
    x: Float[Tensor, "feat row d_model"],
    y: Float[Tensor, "tgt row out"],
    alphas: Float[Tensor, " reg"],
    scaling: Scaling | None = None,
) -> LinearMap:
    """Ridge for every target and every ``alpha`` from one eigendecomposition per feature set.

    Problems come out target-major: problem ``t * len(alphas) + r``. The Gram matrix is formed and
    decomposed in float64 so tiny ``alpha`` stays exact. With ``scaling``, each feature set is
    standardised as it is solved and the maps are in standardised units.
    """
    n_feat = x.shape[0]
    mean_y = y.mean(1, keepdim=True).to(torch.float64)
    weights, biases = [], []
    for f in range(n_feat):
        xf = x[f] if scaling is None else scaling.apply(x[f], f)
        mean_x = xf.mean(0)
        xc = (xf - mean_x).to(torch.float64)
        evals, evecs = torch.linalg.eigh(xc.T @ xc)  # X^T X = V diag(e) V^T
        proj = einops.einsum(evecs, xc, y.to(torch.float64) - mean_y, "d e, n d, t n o -> t e o")
        shrink = 1.0 / (evals[None, :] + alphas.to(torch.float64)[:, None])  # [reg e]
        coef = einops.einsum(evecs, shrink, proj, "d e, r e, t e o -> t r d o")
        weights.append(coef)
        biases.append(
            mean_y[:, None, 0] - einops.einsum(mean_x.double(), coef, "d, t r d o -> t r o")
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
    scaling: Scaling | None = None,
) -> LinearMap:
    """One direction per class, mean(class) - mean(rest), cut at the midpoint (Arditi et al.).

    With ``weights`` from class balancing, "rest" is the average of the other class means. With
    ``scaling``, each feature set is standardised before its class sums (means of raw rows moved
    afterwards would cancel large offsets in float32), and the maps are in standardised units.
    """
    n_prob, n_cls = class_mask.shape
    onehot = torch.nn.functional.one_hot(labels, n_cls).to(x.dtype) * weights.to(x.dtype)[..., None]

    def class_sums(f: int) -> Tensor:  # weighted class sums of one feature set: prob cls d
        rows = x[f] if scaling is None else scaling.apply(x[f], f)
        return einops.einsum(onehot, rows, "p n k, n d -> p k d")

    inside = torch.stack([class_sums(f) for f in range(x.shape[0])])  # feat prob cls d
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
