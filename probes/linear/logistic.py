"""Batched multinomial logistic regression: sklearn's objective, many problems per data pass.

``fit_logistic`` minimises exactly sklearn's ``C * sum_i w_i * logloss_i + 0.5 * ||W||^2``
(intercept unpenalised) for every (feature set, problem) pair. Its speed comes from the solver,
not from approximating the answer:

- **Two data passes per iteration.** The logits are linear in the parameters, so the line search
  moves along ``Z + t * (X D)`` from one product ``X D`` and needs no pass of its own; the
  gradient at the accepted point is the second product. All problems of a feature set (targets x
  C values x controls) share both products.
- **Compact L-BFGS** (Byrd, Nocedal & Schnabel 1994): the direction of every problem from a ring
  of step pairs whose inner products are updated one row per step, instead of a Python loop over
  the history (``probes.linear.lbfgs``).
- **K - 1 columns for K classes.** With every class present, the gradient of the data term sums
  to zero over classes, so the weights stay in that subspace from zero: they are solved in an
  orthonormal basis of it, one product column fewer per problem (half the columns for a binary
  probe) and the same iterates.
- **Warm starts across feature sets.** On a CPU the feature sets are solved one after another
  while their rows sit in cache, and each starts from the previous set's answer (the next layer of
  a model, usually) when that is better than zero.
- **A Newton step on the intercepts** after each line search, from the logits alone (sums over
  rows, no data pass): unpenalised and nearly flat on separable data, the intercepts are what
  L-BFGS leaves behind, and with them at their optimum the gap test below is a real bound
  (the data term and these steps: ``probes.linear.multinomial``).

Every problem stops on its own once two tests hold: ``||grad|| <= tol * ||grad at W = 0||``
(the gradient has shrunk relative to its start) and ``(||grad_W||^2 + g_b' H_b^-1 g_b) / 2 <=
gap_tol * f``. The second bounds the relative objective gap to second order: with the intercepts
at their optimum for the weights, the objective as a function of the weights is at least
1-strongly convex (the penalty), so ``f - f* <= ||grad_W||^2 / 2``; the intercepts' own Newton
decrement covers what remains of theirs. The first test alone stopped 22% above the optimum on
separable data at C = 10, where the gradient at zero is huge and the optimum's objective small.
``converged`` is True only where both tests were met; a problem that ran out of iterations or
stalled at working precision short of them is reported as not converged.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from probes.linear.lbfgs import History
from probes.linear.multinomial import InterceptNewton, MultinomialData
from probes.linear.solvers import LinearMap, SolverConfig
from probes.linear.splits import Scaling

__all__ = ["fit_logistic", "logistic_objective"]


def _sum_zero_basis(n_cls: int, like: Tensor) -> Tensor:
    """``cls x (cls - 1)`` orthonormal columns spanning the class vectors that sum to zero
    (Helmert contrasts)."""
    basis = like.new_zeros(n_cls, n_cls - 1)
    for j in range(1, n_cls):
        basis[:j, j - 1] = 1.0
        basis[j, j - 1] = -float(j)
        basis[:, j - 1] /= (j * (j + 1)) ** 0.5
    return basis


def logistic_objective(
    x: Float[Tensor, "*feat row d_model"],
    theta: Float[Tensor, "*feat prob d1 cls"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    c: Float[Tensor, " prob"],
    class_mask: Bool[Tensor, "prob cls"],
) -> tuple[Float[Tensor, "*feat prob"], Float[Tensor, "*feat prob d1 cls"]]:
    """sklearn's multinomial objective and gradient; ``theta`` = [W; b], optional ``feat`` batch."""
    data = MultinomialData(x, labels, weights, c, class_mask)
    fit, grad = data.fit_grad(data.logits(theta))
    w = theta[..., :-1, :]
    value = fit + 0.5 * w.pow(2).sum((-1, -2), dtype=torch.float64)
    return value.to(x.dtype), grad + torch.nn.functional.pad(w, (0, 0, 0, 1))


def _solve(
    data: MultinomialData,
    theta: Tensor,
    z: Tensor,
    g0_norm: Tensor,
    config: SolverConfig,
    n_iter: Tensor,
):
    """L-BFGS from ``theta`` (its logits ``z``) until every problem meets the tolerance.

    Parameters are kept flat, ``[batch param]`` with batch = feat x prob; the line search moves
    the logits along the one product ``X D`` per iteration, so it needs no data pass. Returns the
    parameters and which problems met both stopping tests (not those that ran out of iterations
    or stalled, with no decrease left at working precision, short of them).
    """
    shape = theta.shape  # [feat prob d1 cls]
    n_w = (shape[-2] - 1) * shape[-1]  # penalised entries lead each flat parameter vector
    th = theta.reshape(-1, shape[-2] * shape[-1]).clone()
    batch = th.shape[0]
    g0_norm = g0_norm.flatten()

    def view(v: Tensor) -> Tensor:
        return v.view(shape)

    def per_row(v: Tensor) -> Tensor:  # [batch] -> broadcastable over [feat cls prob row]
        return v.view(shape[0], 1, shape[1], 1)

    def evaluate(z: Tensor, th: Tensor, known=None) -> tuple[Tensor, Tensor]:
        fit, grad = data.fit_grad(z, known)
        value = fit.flatten() + 0.5 * th[:, :n_w].pow(2).sum(1, dtype=torch.float64)
        grad = grad.reshape(batch, -1)
        grad[:, :n_w] += th[:, :n_w]
        return value, grad

    intercepts = InterceptNewton(data, shape)
    known = data.fit(z)
    f, g = evaluate(z, th, known)
    _, b_decrement = intercepts.newton(known[1])
    gamma = 1.0 / g.norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny)  # first step: unit length
    memory = History(batch, th.shape[1], config.history, th)
    flat = torch.zeros(batch, dtype=torch.long, device=th.device)  # steps without progress
    g_best = g.norm(dim=1)  # smallest gradient norm so far
    stalled = torch.zeros(batch, dtype=torch.bool, device=th.device)
    ftol = torch.finfo(th.dtype).eps

    def descent(g: Tensor) -> Tensor:
        direction = memory.direction(g, gamma)
        uphill = ~((g * direction).sum(1) < 0)  # lost descent (rare), or NaN: steepest descent
        if bool(uphill.any()):
            direction = torch.where(uphill[:, None], -gamma[:, None] * g, direction)
        return direction

    def met(f: Tensor, g: Tensor, b_decrement: Tensor) -> Tensor:  # [batch]: both tests hold
        g_norm = g.norm(dim=1)
        small = g_norm <= config.tol * g0_norm
        # f - f* to second order: ||g_W||^2 / 2 bounds it with the intercepts at their optimum
        # for these weights (the Schur complement of the Hessian is >= I), plus the decrease the
        # intercepts still have (~0 after their Newton step). The gradient's norm alone misses
        # flat intercept directions.
        gap = 0.5 * (g[:, :n_w].norm(dim=1).double().pow(2) + b_decrement)
        return small & (gap <= config.gap_tol * f.abs())

    for _ in range(config.max_iter):
        met_now = met(f, g, b_decrement)
        done = stalled | met_now
        if bool(done.all()):
            break
        direction = descent(g).masked_fill(done[:, None], 0.0)
        slope = (g * direction).sum(1, dtype=torch.float64)
        zd = data.logits(view(direction))  # the forward pass: logits are linear in theta
        # Penalty along the line: 0.5 * ||W + t D||^2 from three numbers per problem.
        ww = th[:, :n_w].pow(2).sum(1, dtype=torch.float64)
        wd = (th[:, :n_w] * direction[:, :n_w]).sum(1, dtype=torch.float64)
        dd = direction[:, :n_w].pow(2).sum(1, dtype=torch.float64)
        t = torch.ones(batch, dtype=torch.float64, device=th.device)
        pending = ~done
        for _halving in range(40):  # Armijo backtracking, no data pass
            z_trial = z + per_row(t.to(z.dtype)) * zd
            known = data.fit(z_trial)
            trial = known[0].flatten() + 0.5 * (ww + t * (2 * wd + t * dd))
            pending = pending & ~(trial <= f + 1e-4 * t * slope)
            if not bool(pending.any()):
                break
            t = torch.where(pending, 0.5 * t, t)
        move = ~done & ~pending
        t = torch.where(move, t, 0.0).to(th.dtype)
        th_old, th = th, th + t[:, None] * direction
        if bool(pending.any()):  # some line search failed: those problems stay where they were
            z = z + per_row(t) * zd
            known = data.fit(z)
        else:  # every problem is at its last trial (a done one's direction is zero)
            z = z_trial
        z, known = intercepts.step(z, known, move, th)
        s = th - th_old
        f_new, g_new = evaluate(z, th, known)  # the backward pass
        b_decrement = torch.where(move, intercepts.decrement(g_new[:, n_w:]), b_decrement)
        y = (g_new - g) * move[:, None]
        tiny = (f - f_new) <= ftol * torch.maximum(f.abs(), f_new.abs())  # relative: f may be << 1
        # No progress: a decrease below the objective's precision and no smaller gradient (flat
        # directions, e.g. an intercept at small C, still show progress in the gradient).
        g_norm = g_new.norm(dim=1)
        progress = ~tiny | (g_norm < 0.9 * g_best)
        g_best = torch.where(move, torch.minimum(g_best, g_norm), g_best)
        flat = torch.where(move & ~progress, flat + 1, 0)
        stalled = stalled | (pending & ~done) | (flat >= 10)
        f = torch.where(move, f_new, f)
        g = torch.where(move[:, None], g_new, g)
        sy, yy = (s * y).sum(1), (y * y).sum(1)
        keep = sy > torch.finfo(sy.dtype).eps * yy  # curvature above rounding noise
        s, y = s * keep[:, None], y * keep[:, None]
        gamma = torch.where(keep, sy / yy.clamp_min(torch.finfo(yy.dtype).tiny), gamma)
        memory.push(s, y)
        n_iter += move.view(n_iter.shape).long()
    else:  # out of iterations: the tests at the last iterate
        met_now = met(f, g, b_decrement)
    return view(th), met_now.view(shape[:2])


def _groups(n_feat: int, device: torch.device) -> list[slice]:
    """The feature sets solved together: one at a time on a CPU (warm starts, rows in cache), all
    in each pass elsewhere."""
    if device.type == "cpu":
        return [slice(f, f + 1) for f in range(n_feat)]
    return [slice(0, n_feat)]


def fit_logistic(
    x: Float[Tensor, "feat row d_model"],
    labels: Int[Tensor, "prob row"],
    weights: Float[Tensor, "prob row"],
    c: Float[Tensor, " prob"],
    class_mask: Bool[Tensor, "prob cls"],
    config: SolverConfig = SolverConfig(),
    scaling: Scaling | None = None,
) -> LinearMap:
    """Fit every (feature set, problem) pair to sklearn's multinomial optimum.

    On a GPU all feature sets go through each pass together. On a CPU they are solved one after
    another, each warm-started from the previous set's answer where that is better than zero.
    With ``scaling``, each group of feature sets is standardised as it is solved, into one
    reused buffer, and the maps are in standardised units.
    """
    n_feat, _, d = x.shape
    n_prob, n_cls = class_mask.shape
    # Every class present: the weights sum to zero over classes; solve in that subspace.
    basis = _sum_zero_basis(n_cls, x) if bool(class_mask.all()) and n_cls > 1 else None
    n_free = n_cls if basis is None else n_cls - 1
    args = (labels, weights, c, class_mask, basis)
    groups = _groups(n_feat, x.device)
    thetas, iters, met_all = [], [], []
    previous = None
    buffer = None  # the standardised group being solved
    for group in groups:
        if scaling is not None:
            buffer = scaling.apply(x[group], group, out=buffer)
        data = MultinomialData(x[group] if scaling is None else buffer, *args)
        n_set = group.stop - group.start
        zero = x.new_zeros(n_set, n_prob, d + 1, n_free)
        z = x.new_zeros(n_set, n_cls, n_prob, x.shape[1])  # the logits at W = 0, without a pass
        f_zero, g_zero = data.fit_grad(z)
        g0_norm = g_zero.flatten(-2).norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
        theta = zero
        if previous is not None:  # the previous feature set's answer, where it starts lower
            z_prev = data.logits(previous)
            penalty = previous[..., :-1, :].pow(2).sum((-1, -2), dtype=torch.float64)
            lower = (data.fit(z_prev)[0] + 0.5 * penalty < f_zero)[..., None, None]
            theta = torch.where(lower, previous, zero)
            z = torch.where(einops.rearrange(lower, "f p 1 1 -> f 1 p 1"), z_prev, z)
        n_iter = torch.zeros(zero.shape[:2], dtype=torch.long, device=x.device)
        theta, met = _solve(data, theta, z, g0_norm, config, n_iter)
        thetas.append(theta)
        iters.append(n_iter)
        met_all.append(met)
        previous = theta if config.warm_start else None  # used only by a next group
    theta = torch.cat(thetas)
    theta = theta if basis is None else theta @ basis.T  # back to one column per class
    return LinearMap(theta[:, :, :-1], theta[:, :, -1], torch.cat(iters), torch.cat(met_all))
