"""The multinomial logistic data term of ``probes.linear.logistic``, and Newton steps on its
intercepts: what one iteration of the batched solver evaluates.

``MultinomialData`` holds one group of feature sets and the problems on them: logits (one data
pass), the data term ``-C * sum_i w_i log p_i(y_i)`` (no data pass) and its gradient (one data
pass). ``InterceptNewton`` keeps the unpenalised intercepts at their optimum for the current
weights from the logits alone (sums over rows, no data pass), and gives the Newton decrement that
the solver's stopping test needs.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor

__all__ = ["InterceptNewton", "MultinomialData"]


class MultinomialData:
    """One group of feature sets and the problems on them: the data passes and the data term.

    Logits and residuals are laid out ``[feat cls prob row]``: rows last, because ``W^T X^T`` and
    ``R^T X`` are the fast forms of these thin products on a CPU and the softmax over classes then
    runs over contiguous rows.
    """

    def __init__(self, x, labels, weights, c, class_mask, basis=None):
        self.x = x
        self.basis = basis  # cls x free: parameters in these class directions (None: every class)
        self.n_prob = class_mask.shape[0]
        self.cw = c.to(x.dtype)[:, None] * weights.to(x.dtype)  # [prob row]
        onehot = torch.nn.functional.one_hot(labels, class_mask.shape[1]).to(x.dtype)
        self.target = einops.rearrange(onehot, "p n k -> k p n") * self.cw  # [cls prob row]
        self.absent = None if bool(class_mask.all()) else ~class_mask.T[..., None]

    def logits(self, theta: Tensor) -> Tensor:
        """``X W + b`` as ``[*feat cls prob row]`` for ``theta`` ``[*feat prob d1 free]``."""
        w_t = einops.rearrange(theta[..., :-1, :], "... p d k -> ... (k p) d")
        out = einops.rearrange(_mm(w_t, self.x.mT), "... (k p) n -> ... k p n", p=self.n_prob)
        out = out + einops.rearrange(theta[..., -1, :], "... p k -> ... k p 1")
        return out if self.basis is None else _classes(self.basis, out)

    def _logp(self, z: Tensor) -> Tensor:
        if self.absent is not None:
            z = z.masked_fill(self.absent, float("-inf"))
        return torch.log_softmax(z, dim=-3)

    def _picked(self, logp: Tensor) -> Tensor:
        picked = logp * self.target
        return picked if self.absent is None else picked.nan_to_num_(0.0)  # absent: -inf * 0

    def fit(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The data term ``-C * sum_i w_i log p_i(y_i)`` ``[*feat prob]`` (no data pass), and the
        log-probabilities it came from (for ``fit_grad`` at the same logits)."""
        logp = self._logp(z)
        return -_row_sum(self._picked(logp)), logp

    def fit_grad(self, z: Tensor, known: tuple[Tensor, Tensor] | None = None):
        """The data term and its gradient ``[*feat prob d1 cls]`` (one data pass); ``known``:
        ``fit(z)``, already computed."""
        value, logp = self.fit(z) if known is None else known
        resid = logp.exp() * self.cw - self.target  # [*feat cls prob row]
        if self.basis is not None:
            resid = _classes(self.basis.T, resid)  # [*feat free prob row]
        r = einops.rearrange(resid, "... k p n -> ... (k p) n")
        grad_w = einops.rearrange(_mm(r, self.x), "... (k p) d -> ... p d k", p=self.n_prob)
        grad_b = einops.rearrange(resid.sum(-1), "... k p -> ... p 1 k")
        return value, torch.cat([grad_w, grad_b], dim=-2)


class InterceptNewton:
    """Newton steps on the intercepts at fixed weights, for every problem, from the logits alone.

    The intercepts are unpenalised, and on separable data their curvature (the rows' ``p (1 - p)``)
    is small, so L-BFGS leaves them short of their optimum while the gradient looks small. One
    damped Newton step per iteration, on sums over rows (no data pass), keeps them at their
    optimum for the current weights; it also gives the term of the stopping test that the
    gradient's norm misses. Works in float64 on ``free x free`` matrices.
    """

    def __init__(self, data: MultinomialData, shape: torch.Size):
        self.data = data
        self.shape = shape  # [feat prob d1 free]
        self.batch, self.n_free = shape[0] * shape[1], shape[-1]
        self.evecs = self.inv = None  # the last Hessian's pseudo-inverse, as eigenpairs

    def newton(self, logp: Tensor) -> tuple[Tensor, Tensor]:
        """The Newton step ``[batch free]`` and decrement ``g' H^+ g`` ``[batch]`` at ``logp``
        (a pseudo-inverse: the Hessian is singular where a class is absent)."""
        data = self.data
        p = logp.exp()
        pw = p * data.cw
        grad = (pw - data.target).sum(-1, dtype=torch.float64).movedim(-2, -1)  # [*f prob cls]
        hess = torch.diag_embed(pw.sum(-1, dtype=torch.float64).movedim(-2, -1))
        hess = hess - einops.einsum(pw, p, "... k p n, ... j p n -> ... p k j").double()
        if data.basis is not None:
            basis = data.basis.double()
            grad, hess = grad @ basis, basis.T @ hess @ basis
        evals, self.evecs = torch.linalg.eigh(hess.reshape(self.batch, self.n_free, self.n_free))
        cut = 1e-10 * evals.amax(-1, keepdim=True).clamp_min(torch.finfo(evals.dtype).tiny)
        self.inv = torch.where(evals > cut, 1.0 / evals.clamp_min(cut), 0.0)
        coord = (self.evecs.mT @ grad.reshape(self.batch, self.n_free, 1))[..., 0]
        step = -(self.evecs @ (self.inv * coord)[..., None])[..., 0]
        return step, (self.inv * coord.pow(2)).sum(-1)

    def decrement(self, grad_b: Tensor) -> Tensor:
        """``g' H^+ g`` ``[batch]`` for intercept gradients ``[batch free]``, with the Hessian of
        the last ``newton`` call (near enough after one more step)."""
        coord = (self.evecs.mT @ grad_b.double()[..., None])[..., 0]
        return (self.inv * coord.pow(2)).sum(-1)

    def step(self, z: Tensor, known, move: Tensor, th: Tensor) -> tuple[Tensor, tuple]:
        """One damped Newton step for the problems in ``move`` from logits ``z`` (``known``:
        ``data.fit(z)``). Moves the intercepts, the last entries of ``th``, in place; returns the
        new logits and their ``data.fit``."""
        step, decrement = self.newton(known[1])
        base = known[0].flatten()  # the penalty does not depend on the intercepts
        u = move.to(torch.float64)
        pending = move.clone()
        for _halving in range(20):  # Armijo backtracking
            z_trial = z + self._shift(u[:, None] * step, z.dtype)
            known = self.data.fit(z_trial)
            pending = pending & ~(known[0].flatten() <= base - 1e-4 * u * decrement)
            if not bool(pending.any()):
                break
            u = torch.where(pending, 0.5 * u, u)
        u = torch.where(pending, 0.0, u)
        th[:, -self.n_free :] += (u[:, None] * step).to(th.dtype)
        if bool(pending.any()):  # some stay where they were
            z_trial = z + self._shift(u[:, None] * step, z.dtype)
            known = self.data.fit(z_trial)
        return z_trial, known

    def _shift(self, step: Tensor, dtype: torch.dtype) -> Tensor:
        """The logits' change ``[*feat cls prob 1]`` when the intercepts move by ``step``."""
        step = step.to(dtype).view(*self.shape[:2], self.n_free)
        per_class = step if self.data.basis is None else step @ self.data.basis.T
        return einops.rearrange(per_class, "... p k -> ... k p 1")


def _classes(m: Tensor, x: Tensor) -> Tensor:
    """``m @ x`` over the class axis of ``x`` ``[*feat cls prob row]`` (a change of basis)."""
    out = m @ x.flatten(-2)
    return out.view(*out.shape[:-1], *x.shape[-2:])


def _row_sum(picked: Tensor) -> Tensor:
    """``[*feat cls prob row]`` -> ``[*feat prob]`` in float64. Each row has one picked class, so
    the class sum is exact in the working dtype; only the row sum needs float64, and converting
    after the class sum converts one value per row instead of one per class."""
    return picked.sum(-3).sum(-1, dtype=torch.float64)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; one feature set goes through a plain 2-D product (a batched one copies a
    transposed ``b`` first on a CPU)."""
    if a.dim() == 3 and a.shape[0] == 1 and b.dim() == 3:
        return (a[0] @ b[0])[None]
    return a @ b
