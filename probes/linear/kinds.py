"""Linear probe kinds, registered by name, and a sklearn-style ``Probe`` on stacked feature sets.

A kind is a small strategy: how targets are encoded, which batched solver fits them and how a
prediction is scored. One generic routine (``fit_linear``) takes the features' statistics,
encodes the targets, calls the kind's solver for every (feature set, target, regularisation) at
once (each solver standardises one feature set at a time, so the stack is never copied whole) and
folds the standardisation back, so every fitted map applies to raw activations.

- ``logistic``: multinomial logistic regression, sklearn's objective; ``reg`` is sklearn's ``C``
  (two classes: sklearn's binary model, fitted as the equivalent multinomial at ``C / 2``).
- ``ridge``: least squares with an L2 penalty for scalar or vector targets; ``reg`` is ``alpha``.

Either penalty applies to the weights on standardised features (each feature centred and scaled
to unit variance over the training rows), as sklearn's would after a ``StandardScaler``; on raw
features the same ``reg`` is a different penalty.
- ``diff_means``: one mean-difference direction per class (Arditi et al.); no regularisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError, close_matches
from probes.linear.inputs import as_stack, as_values, check_target
from probes.linear.logistic import fit_logistic
from probes.linear.solvers import LinearMap, SolverConfig, fit_diff_means, fit_ridge
from probes.linear.splits import Scaling

__all__ = [
    "PROBE_KINDS",
    "Probe",
    "ProbeKind",
    "apply_map",
    "balance_weights",
    "fit_linear",
    "get_kind",
    "score_map",
]


def _fit_logistic(x, scaling, y, weights, regs, n_cls, solver):
    labels = einops.repeat(y, "t n -> (t r) n", r=len(regs))
    mask = _class_mask(y, n_cls).repeat_interleave(len(regs), 0)
    # sklearn fits two classes as one binary model; the multinomial optimum at C / 2 is that map.
    c = regs.repeat(y.shape[0]) * torch.where(mask.sum(1) == 2, 0.5, 1.0).to(regs)
    w = weights.repeat_interleave(len(regs), 0)
    return fit_logistic(x, labels, w, c, mask, solver, scaling=scaling)


def _fit_ridge(x, scaling, y, weights, regs, n_cls, solver):
    return fit_ridge(x, y, regs, scaling=scaling)


def _fit_diff_means(x, scaling, y, weights, regs, n_cls, solver):
    return fit_diff_means(x, y, weights, _class_mask(y, n_cls), scaling=scaling)


def _class_mask(y: Tensor, n_cls: int) -> Tensor:
    return torch.nn.functional.one_hot(y, n_cls).sum(1) > 0  # [tgt cls] classes seen in training


def _accuracy(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(-1) == y[None, :, None]).to(out.dtype).mean(-1)


def _r2(out: Tensor, y: Tensor) -> Tensor:
    y = y[None, :, None].to(out.dtype)  # [1 tgt 1 row out]
    resid = (out - y).pow(2).sum(-2)
    total = (y - y.mean(-2, keepdim=True)).pow(2).sum(-2)
    # Pooled over outputs (sklearn's "variance_weighted"): for a belief simplex, one rare scene
    # with almost no variance in a split would otherwise dominate a uniform average. One output:
    # the same as sklearn's r2_score.
    return 1 - resid.sum(-1) / total.sum(-1).clamp_min(1e-30)


@dataclass(frozen=True)
class ProbeKind:
    """A probe kind: what it fits to, its solver and its score."""

    name: str  # registry key
    classification: bool  # True: integer class labels; False: real (scalar or vector) targets
    metric: str  # name of the score in results tables
    reg_name: str  # what the regularisation value means, for messages and tables
    default_regs: tuple[float, ...]  # grid searched on validation when none is given
    fit: Callable[
        ..., LinearMap
    ]  # (x, scaling, y, weights, regs, n_cls, solver) -> standardised-space maps, (tgt, reg) major
    score: Callable[
        [Tensor, Tensor], Tensor
    ]  # (outputs [feat tgt reg row out], y) -> [feat tgt reg]

    def check_target(self, y: Tensor, n_rows: int, name: str) -> None:
        """Refuse a target this kind cannot fit, naming the fix (``inputs.check_target``)."""
        check_target(y, n_rows, name, kind=self.name, classification=self.classification)


PROBE_KINDS: dict[str, ProbeKind] = {
    "logistic": ProbeKind(
        "logistic", True, "accuracy", "C", (1e-3, 1e-2, 1e-1, 1.0), _fit_logistic, _accuracy
    ),
    "ridge": ProbeKind("ridge", False, "r2", "alpha", (1e-1, 1e1, 1e3, 1e5), _fit_ridge, _r2),
    "diff_means": ProbeKind(
        "diff_means", True, "accuracy", "none", (0.0,), _fit_diff_means, _accuracy
    ),
}


def get_kind(name: str) -> ProbeKind:
    """The registered kind called ``name``; a LabError lists the kinds otherwise."""
    if name not in PROBE_KINDS:
        raise LabError(
            f"Unknown probe kind {name!r}; registered kinds: {', '.join(PROBE_KINDS)}."
            + close_matches(name, PROBE_KINDS)
        )
    return PROBE_KINDS[name]


def balance_weights(y: Int[Tensor, "tgt row"], n_cls: int) -> Float[Tensor, "tgt row"]:
    """sklearn's ``class_weight='balanced'``: n / (n_classes * n_k) for a row of class k."""
    counts = torch.nn.functional.one_hot(y, n_cls).sum(1).to(torch.float32)  # [tgt cls]
    present = (counts > 0).sum(1, keepdim=True)
    per_class = y.shape[1] / (present * counts.clamp_min(1))
    return per_class.gather(1, y)


def fit_linear(
    kind: ProbeKind,
    x: Float[Tensor, "feat row d_model"],
    y: Tensor,
    regs: Sequence[float],
    *,
    n_cls: int = 0,
    balanced: bool = False,
    solver: SolverConfig = SolverConfig(),
) -> LinearMap:
    """Fit ``kind`` for every feature set, target and regularisation value in one batched solve.

    ``y`` is ``[tgt row]`` class indices in ``range(n_cls)`` for classification kinds and
    ``[tgt row out]`` reals otherwise. The maps come back in raw feature coordinates, problems
    ordered target-major (``t * len(regs) + r``).
    """
    if balanced and not kind.classification:
        raise LabError(
            f"Class balancing applies to classification kinds; kind {kind.name!r} fits real "
            "targets. "
            "Drop balanced=True or use 'logistic' / 'diff_means'."
        )
    scaling = Scaling.of(x)  # the kinds standardise one feature set at a time: no copy of x
    regs_t = torch.as_tensor(regs, dtype=x.dtype, device=x.device)
    if kind.classification:
        weights = balance_weights(y, n_cls) if balanced else torch.ones(y.shape, device=x.device)
    else:
        weights = torch.ones(y.shape[:2], device=x.device)
    fitted = kind.fit(x, scaling, y, weights.to(x.dtype), regs_t, n_cls, solver)
    if fitted.weight.shape[1] != y.shape[0] * len(regs):  # closed-form kinds ignore regs
        reps = len(regs)
        fitted = LinearMap(
            fitted.weight.repeat_interleave(reps, 1),
            fitted.bias.repeat_interleave(reps, 1),
            fitted.n_iter.repeat_interleave(reps, 1),
            fitted.converged.repeat_interleave(reps, 1),
        )
    weight = fitted.weight / scaling.scale[:, None, :, None]
    bias = fitted.bias - einops.einsum(scaling.mean, weight, "f d, f p d o -> f p o")
    return LinearMap(weight, bias, fitted.n_iter, fitted.converged)


def apply_map(
    fitted: LinearMap, x: Float[Tensor, "feat row d_model"]
) -> Float[Tensor, "feat prob row out"]:
    """Raw outputs (logits, scores or values) of every fitted map on its own feature set."""
    return einops.einsum(x, fitted.weight.to(x.dtype), "f n d, f p d o -> f p n o") + fitted.bias[
        :, :, None
    ].to(x.dtype)


def score_map(
    kind: ProbeKind, fitted: LinearMap, x: Float[Tensor, "feat row d_model"], y: Tensor, n_reg: int
) -> Float[Tensor, "feat tgt reg"]:
    """The kind's score (accuracy or R²) of every fitted map on rows ``x`` with targets ``y``."""
    out = einops.rearrange(apply_map(fitted, x), "f (t r) n o -> f t r n o", r=n_reg)
    return kind.score(out, y)


class Probe:
    """One probe kind at one regularisation value, fitted on one or many stacked feature sets.

    ``x`` is ``[row d_model]`` or ``[feat row d_model]`` (e.g. every layer at once); predictions and
    scores then carry the same leading ``feat`` dimension. Works like sklearn: ``fit`` returns self.

    ``reg`` is sklearn's ``C`` (logistic) or ``alpha`` (ridge) with the penalty on the weights of
    standardised features: ``Probe(reg=C)`` on raw ``x`` equals sklearn's model at ``C`` on
    ``StandardScaler().fit_transform(x)``, not sklearn's model on raw ``x``. ``directions`` and
    ``intercept`` have the standardisation folded back in, so they apply to raw activations.
    """

    def __init__(
        self,
        kind: str = "logistic",
        reg: float = 1.0,
        *,
        balanced: bool = False,
        solver: SolverConfig = SolverConfig(),
    ) -> None:
        self.kind = get_kind(kind)
        self.reg = reg  # C (logistic) or alpha (ridge) on standardised features; 1.0 by default
        self.balanced = balanced
        self.solver = solver
        self.map: LinearMap | None = None
        self.classes: Tensor | None = None

    def fit(self, x: Float[Tensor, "*feat row d_model"], y: Tensor) -> Probe:
        """Fit on rows ``x``; ``y`` is ``[row]`` labels or ``[row]`` / ``[row out]`` reals."""
        x3 = as_stack(x)
        self.kind.check_target(y, x3.shape[1], "y")
        if self.kind.classification:
            self.classes, codes = torch.unique(y, return_inverse=True)
            target = codes[None].to(x3.device)
            n_cls = len(self.classes)
        else:
            target = as_values(y).to(x3)[None]
            n_cls = 0
        self.map = fit_linear(
            self.kind,
            x3,
            target,
            [self.reg],
            n_cls=n_cls,
            balanced=self.balanced,
            solver=self.solver,
        )
        self._squeeze = x.dim() == 2
        self._target_dim = y.dim()
        return self

    def decision_function(self, x: Float[Tensor, "*feat row d_model"]) -> Tensor:
        """Raw outputs ``[*feat row out]``: class logits / scores, or predicted values."""
        out = apply_map(self._fitted(), as_stack(x))[:, 0]
        return out[0] if x.dim() == 2 else out

    def predict(self, x: Float[Tensor, "*feat row d_model"]) -> Tensor:
        """Predicted labels ``[*feat row]`` (classification) or values ``[*feat row (out)]``."""
        out = self.decision_function(x)
        if self.kind.classification:
            return self.classes.to(out.device)[out.argmax(-1)]
        return out[..., 0] if self._scalar_target else out

    def score(self, x: Float[Tensor, "*feat row d_model"], y: Tensor) -> Tensor:
        """Accuracy (classification) or R² per feature set. With several outputs the R² is
        variance-weighted (residuals and variances pooled over outputs: sklearn's
        ``r2_score(..., multioutput="variance_weighted")``, not its default ``uniform_average``),
        so a nearly constant output cannot dominate the score; one output: plain R²."""
        x3 = as_stack(x)
        self.kind.check_target(y, x3.shape[1], "y")
        if self.kind.classification:
            known = torch.isin(y, self.classes)
            codes = torch.searchsorted(self.classes, y.clamp(self.classes[0], self.classes[-1]))
            target = torch.where(known, codes, -1)[None].to(x3.device)
        else:
            target = as_values(y).to(x3)[None]
        scores = score_map(self.kind, self._fitted(), x3, target, 1)[:, 0, 0]
        return scores[0] if x.dim() == 2 else scores

    @property
    def directions(self) -> Float[Tensor, "*feat out d_model"]:
        """The learned directions in raw activation space, one per class or output."""
        weight = einops.rearrange(self._fitted().weight[:, 0], "f d o -> f o d")
        return weight[0] if self._squeeze else weight

    @property
    def intercept(self) -> Float[Tensor, "*feat out"]:
        """The intercepts, one per class or output."""
        bias = self._fitted().bias[:, 0]
        return bias[0] if self._squeeze else bias

    @property
    def _scalar_target(self) -> bool:
        return self._target_dim == 1

    def _fitted(self) -> LinearMap:
        if self.map is None:
            raise LabError("This probe is not fitted yet; call probe.fit(x, y) first.")
        return self.map
