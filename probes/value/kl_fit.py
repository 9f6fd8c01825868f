"""The Q head's KL objective: refine a (ridge) head so that the sampler it defines matches pi*.

For each beta of the grid, with the head's parameters rescaled to A = W / beta, c = b / beta,

    log pi_Q(x | h) = log_softmax_x( log p_base(x | h) + h A + c ),

and the loss is the mean over prefixes of the cross-entropy CE(pi*, pi_Q) (KL(pi* || pi_Q) plus a
constant) plus ``l2 * ||A'||²``, A' being A in whitened coordinates (the residual centred and
scaled to unit covariance, which L-BFGS needs: on the raw residual it converges several times
slower). The squared error of a ridge fit on Q* weighs every token alike and
its errors reach the sampler divided by beta; this objective weighs them as pi* does. It needs the
exact log pi* (an oracle target) and is convex in (A, c); it starts from the ridge head (a warm
start) and runs ``torch.optim.LBFGS`` per beta (strong-Wolfe line search). The lab's batched
solver (``probes.linear.logistic``) fits hard labels without a per-row logit offset, so it cannot
take log p_base or soft targets. Only the tokens in ``keep`` (those the world emits) take part;
the rest keep their ``-inf`` bias.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["KL_L2", "KL_MAX_ITER", "fit_kl"]

KL_L2 = 1e-6  # L2 penalty on W / beta in whitened coordinates, beside the mean cross-entropy
KL_MAX_ITER = 100  # L-BFGS iterations per beta


def _whitener(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, P, P⁺): (x - mean) @ P has unit covariance on the residual's non-null directions."""
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    s = s / len(x) ** 0.5
    ok = s > 1e-6 * s[0]
    return mean, vh[ok].T / s[ok], vh[ok] * s[ok][:, None]


def _one_beta(
    x: Tensor, logp: Tensor, target: Tensor, a0: Tensor, c0: Tensor, l2: float, max_iter: int
) -> tuple[Tensor, Tensor]:
    """(A, c) minimising mean CE(exp(target), softmax(logp + x A + c)) + l2 ||A||²."""
    p = target.exp()
    a, c = a0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [a, c],
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        z = (logp + x @ a + c).log_softmax(-1)
        loss = -(p * z).sum(-1).mean() + l2 * a.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return a.detach(), c.detach()


def fit_kl(
    x: Float[Tensor, "row d_model"],
    logp: Float[Tensor, "row vocab"],
    target: Float[Tensor, "row beta vocab"],
    weight: Float[Tensor, "d_model beta vocab"],
    bias: Float[Tensor, "beta vocab"],
    betas: tuple[float, ...],
    keep: Bool[Tensor, " vocab"],
    *,
    l2: float = KL_L2,
    max_iter: int = KL_MAX_ITER,
) -> tuple[Tensor, Tensor]:
    """The head (weight[d beta vocab], bias[beta vocab], float64) that minimises CE(pi*, pi_Q)
    per beta from the warm start (``weight``, ``bias``): base log-probs ``logp``, exact log pi*
    ``target``, tokens ``keep`` (the others keep weight 0 and bias -inf)."""
    w, b = weight.double().clone(), bias.double().clone()
    mean, p, p_inv = _whitener(x.double())
    xw, lp = (x.double() - mean) @ p, logp.double()[:, keep]
    lp = lp - lp.logsumexp(-1, keepdim=True)
    for i, beta in enumerate(betas):
        a0, c0 = w[:, i, keep] / beta, b[i, keep] / beta
        aw, cw = _one_beta(
            xw, lp, target[:, i, keep].double(), p_inv @ a0, c0 + mean @ a0, l2, max_iter
        )
        a = p @ aw
        w[:, i, keep], b[i, keep] = a * beta, (cw - mean @ a) * beta
    return w, b
