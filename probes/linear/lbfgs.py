"""The L-BFGS memory of many problems at once, and its compact-form search direction.

Used by ``probes.linear.logistic``; kept apart so that the solver module holds the objective and the
iteration, and this one the quasi-Newton algebra (Byrd, Nocedal & Schnabel 1994).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["History", "dots"]


class History:
    """The L-BFGS memory of every problem: a ring of ``mem`` (step, gradient change) pairs.

    The pairs sit in one ``[batch 2mem param]`` buffer (steps, then gradient changes) that is
    written in place; their inner products are kept up to date one row and column per step.
    Matrix-vector work is done as row-vector products (``dots``), never through a temporary of
    the buffer's size.
    """

    def __init__(self, batch: int, n_param: int, mem: int, like: Tensor):
        self.mem = mem
        self.pairs = like.new_zeros(batch, 2 * mem, n_param)
        self.sy = torch.zeros(batch, mem, mem, dtype=torch.float64, device=like.device)
        self.yy = torch.zeros_like(self.sy)
        self.order: list[int] = []  # slots, oldest first

    def push(self, s: Tensor, y: Tensor) -> None:
        slot = self.order.pop(0) if len(self.order) == self.mem else len(self.order)
        self.order.append(slot)
        self.pairs[:, slot] = s
        self.pairs[:, self.mem + slot] = y
        with_y = dots(self.pairs, y).double()  # s_i.y and y_i.y
        with_s = dots(self.pairs[:, self.mem :], s).double()  # y_j.s
        self.sy[:, :, slot], self.sy[:, slot, :] = with_y[:, : self.mem], with_s
        self.yy[:, :, slot] = self.yy[:, slot, :] = with_y[:, self.mem :]

    def direction(self, g: Tensor, gamma: Tensor) -> Tensor:
        """Compact L-BFGS (Byrd, Nocedal & Schnabel 1994): ``-H g`` for every problem at once."""
        if not self.order:
            return -gamma[:, None] * g
        idx = torch.tensor(self.order, device=g.device)
        ab = dots(self.pairs, g).double()  # S^T g, Y^T g by slot
        a, b = ab[:, idx, None], ab[:, self.mem + idx, None]
        sy, yy = self.sy[:, idx][:, :, idx], self.yy[:, idx][:, :, idx]
        diag = torch.diagonal(sy, dim1=-2, dim2=-1)
        # A skipped pair is all zeros; a unit pivot keeps it inert.
        r = torch.triu(sy) + torch.diag_embed((diag <= 0).double())
        gam = gamma.double()[:, None, None]
        p = torch.linalg.solve_triangular(r, a, upper=True)
        top = torch.linalg.solve_triangular(
            r.mT, diag[..., None] * p + gam * (yy @ p - b), upper=False
        )
        coef = torch.zeros_like(ab)
        coef[:, idx], coef[:, self.mem + idx] = top[..., 0], -(gam * p)[..., 0]
        combined = torch.bmm(coef.to(g.dtype)[:, None, :], self.pairs)[:, 0]  # sum_i coef_i p_i
        return -(gamma[:, None] * g + combined)


def dots(rows: Tensor, v: Tensor) -> Tensor:
    """``rows @ v`` per batch (``batch k n``, ``batch n`` -> ``batch k``) as a row vector times
    the transposed rows: on a CPU several times faster than a batched matrix-vector product, and
    no ``batch k n`` temporary (whose allocation costs page faults at every call)."""
    return torch.bmm(v[:, None, :], rows.mT)[:, 0]
