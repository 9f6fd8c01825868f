"""Probes for every (model, hook, target, regularisation, seed) in one batched fit per seed.

``fit_probes`` reads ``[layer token d_model]`` stacks from an ``ActivationSource`` (the lab's
``ActivationStore`` or a ``TensorSource``), splits by whole sequences, fits every probe of every
model and hook at once (``probes.linear.kinds.fit_linear``), picks the regularisation on validation
and
reports test scores with a control task, as a tidy table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import einops
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.runtime import default_device, resolve_dtype
from probes.linear.controls import make_control
from probes.linear.kinds import apply_map, fit_linear, get_kind
from probes.linear.solvers import LinearMap, SolverConfig
from probes.linear.source import ActivationSource, read_target
from probes.linear.splits import split_by_sequence

__all__ = ["ProbeConfig", "ProbeResults", "fit_probes", "layer_of"]


@dataclass(frozen=True)
class ProbeConfig:
    """One probe sweep: a kind, its regularisation grid, seeds, split and control."""

    kind: str = "logistic"  # registered probe kind (probes.linear.kinds.PROBE_KINDS)
    regs: tuple[float, ...] | None = None  # grid chosen on validation; None = the kind's default
    seeds: tuple[int, ...] = (0,)  # each seed draws its own sequence split and control labels
    fractions: tuple[float, float, float] = (
        0.6,
        0.2,
        0.2,
    )  # train / val / test shares of sequences
    balanced: bool = False  # class-balanced sample weights, as sklearn's class_weight='balanced'
    control: str | None = "shuffle"  # control task ('shuffle', 'types') or None for none
    solver: SolverConfig = field(default_factory=SolverConfig)  # batched solver tolerance and caps
    device: str | None = None  # where the solve runs; None = CUDA when present, else CPU
    dtype: str = "float32"  # working precision of features and solver


@dataclass(frozen=True)
class ProbeResults:
    """A tidy score table and the selected probes' maps."""

    # model, hook, layer, target, control, kind, seed, reg, split, metric, value, selected ...
    table: pd.DataFrame
    # (model, target, seed) -> the task target's maps, one per hook, at the selected regularisation
    maps: dict[tuple[str, str, int], LinearMap] = field(default_factory=dict)

    def to_parquet(self, path: str | Path) -> None:
        """Save the table as parquet."""
        self.table.to_parquet(path, index=False)


def layer_of(hook: str, fallback: int) -> int:
    """The block index in a TransformerLens hook name (``blocks.3.hook_resid_post`` -> 3).

    ``blocks.{i}.hook_resid_pre`` is the same stream as ``blocks.{i-1}.hook_resid_post``, so it
    gets layer ``i - 1`` (the embeddings are layer -1); names without a block get ``fallback``.
    """
    match = re.search(r"blocks\.(\d+)\.", hook)
    if match is None:
        return fallback
    return int(match.group(1)) - hook.endswith("hook_resid_pre")


def fit_probes(
    source: ActivationSource,
    targets: Sequence[str],
    config: ProbeConfig = ProbeConfig(),
    *,
    models: Sequence[str] | None = None,
    hooks: Sequence[str] | None = None,
    token_ids: Tensor | None = None,
) -> ProbeResults:
    """Fit ``config.kind`` probes for every model, hook, target, regularisation value and seed.

    Every (model, hook) is one feature set of one stacked solve per seed; targets, their controls
    and the regularisation grid share its passes. ``token_ids`` (one per row) feeds the 'types'
    control.
    """
    kind = get_kind(config.kind)
    models = list(source.models if models is None else models)
    hooks = list(source.hooks if hooks is None else hooks)
    regs = tuple(kind.default_regs if config.regs is None else config.regs)
    device = torch.device(config.device) if config.device else default_device()
    dtype = resolve_dtype(config.dtype)
    seq = source.sequence_ids()
    n = seq.shape[0]
    raw = {name: read_target(source, name) for name in targets}
    for name, y in raw.items():
        kind.check_target(y, n, name)
    stacks = {m: _checked_stack(source, m, hooks, device, dtype, n) for m in models}
    rows, maps = [], {}
    for seed in tqdm(config.seeds, desc="probe seeds", disable=len(config.seeds) < 2):
        split = split_by_sequence(seq, config.fractions, seed)
        names, ys, n_cls = _encode(kind, raw, config.control, seed, token_ids, split.train)
        ys = ys.to(device)
        x_train = torch.cat([s[:, split.train.to(device)] for s in stacks.values()])  # the one copy
        fitted = fit_linear(
            kind, x_train, ys[:, split.train.to(device)], regs,
            n_cls=n_cls, balanced=config.balanced, solver=config.solver,
        )  # fmt: skip
        del x_train
        scores = _scores(kind, fitted, stacks, ys, split, len(regs))  # {split: [feat tgt reg]}
        best = scores["val"].argmax(-1)  # ties go to the first value in grid order
        rows += _rows(kind, models, hooks, names, regs, seed, scores, best, fitted)
        maps |= _selected_maps(fitted, best, models, hooks, names, len(regs), seed)
    return ProbeResults(pd.DataFrame(rows), maps)


def _selected_maps(fitted, best, models, hooks, names, n_reg, seed):
    """Each task target's maps at its selected regularisation: ``[hook 1 d_model out]``."""
    parts = {
        key: einops.rearrange(value, "(m h) (t r) ... -> m t r h ...", m=len(models), r=n_reg)
        for key, value in vars(fitted).items()
    }
    best = einops.rearrange(best, "(m h) t -> m t h", m=len(models))
    hook = torch.arange(len(hooks))
    out = {}
    for i, model in enumerate(models):
        for t, (target, control) in enumerate(names):
            if control == "task":
                pick = best[i, t].to(fitted.weight.device)
                out[model, target, seed] = LinearMap(
                    **{key: value[i, t, pick, hook][:, None] for key, value in parts.items()}
                )
    return out


def _checked_stack(source, model, hooks, device, dtype, n) -> Tensor:
    stack = source.stacked(model, hooks, device=device, dtype=dtype)
    if stack.shape[:2] != (len(hooks), n):
        raise LabError(
            f"Model {model!r}: the store gave features of shape {tuple(stack.shape)} for "
            f"{len(hooks)} "
            f"hooks and {n} tokens; the store is inconsistent, re-collect it."
        )
    bad = ~torch.isfinite(stack).all(-1)  # [layer token]
    if bool(bad.any()):
        layer, rows = bad.nonzero()[:, 0], bad.nonzero()[:, 1]
        hook = hooks[int(layer[0])]
        first = rows[layer == layer[0]][:10].tolist()
        raise LabError(
            f"NaN or inf features in model {model!r}, hook {hook!r}, rows {first}"
            f"{' ...' if int((layer == layer[0]).sum()) > 10 else ''}"
            f" ({int(bad.sum())} bad rows over {int(bad.any(1).sum())} hooks); re-collect those "
            "activations (often a dtype overflow: try float32) or drop the rows."
        )
    return stack


def _encode(kind, raw, control, seed, token_ids, train):
    """Targets and their controls as ``[tgt row]`` labels or ``[tgt row out]`` values."""
    names = [(name, "task") for name in raw]
    values = list(raw.values())
    if control is not None:
        names += [(name, control) for name in raw]
        values += [make_control(control, y, seed, token_ids) for y in raw.values()]
    if not kind.classification:
        values = [v[:, None] if v.dim() == 1 else v for v in values]
        if len({v.shape[1] for v in values}) > 1:
            raise LabError(
                "Targets of one ridge sweep must share their width; fit them in separate calls."
            )
        return names, torch.stack([v.to(torch.float64) for v in values]), 0
    codes, n_cls = [], 0
    for (name, _), v in zip(names, values, strict=True):
        classes, code = torch.unique(v, return_inverse=True)
        if len(torch.unique(code[train.to(code.device)])) < 2:
            raise LabError(
                f"Target {name!r} has a single class in the training split; use more sequences or "
                "a different seed."
            )
        codes.append(code)
        n_cls = max(n_cls, len(classes))
    return names, torch.stack(codes), n_cls


def _scores(kind, fitted, stacks, ys, split, n_reg):
    """Validation and test scores ``[feat tgt reg]`` applying each model's maps to its own stack."""
    out = {}
    for part in ("val", "test"):
        idx = getattr(split, part).to(ys.device)
        per_model, start = [], 0
        for stack in stacks.values():
            sub = LinearMap(
                *(t[start : start + stack.shape[0]] for t in (fitted.weight, fitted.bias)),
                None,
                None,
            )
            start += stack.shape[0]
            raw = apply_map(sub, stack[:, idx])
            per_model.append(
                kind.score(einops.rearrange(raw, "f (t r) n o -> f t r n o", r=n_reg), ys[:, idx])
            )
        out[part] = torch.cat(per_model).cpu()
    return out


def _rows(kind, models, hooks, names, regs, seed, scores, best, fitted):
    rows = []
    n_iter = einops.rearrange(fitted.n_iter, "f (t r) -> f t r", r=len(regs)).cpu()
    conv = einops.rearrange(fitted.converged, "f (t r) -> f t r", r=len(regs)).cpu()
    for f in range(len(models) * len(hooks)):
        model, hook = models[f // len(hooks)], hooks[f % len(hooks)]
        base = {
            "model": model,
            "hook": hook,
            "layer": layer_of(hook, f % len(hooks)),
            "kind": kind.name,
        }
        for t, (target, control) in enumerate(names):
            for r, reg in enumerate(regs):
                chosen = bool(best[f, t] == r)
                for part in ("val", "test") if chosen else ("val",):
                    rows.append(base | {
                        "target": target, "control": control, "seed": seed, "reg": reg,
                        "split": part, "metric": kind.metric, "value": float(scores[part][f, t, r]),
                        "selected": chosen, "n_iter": int(n_iter[f, t, r]),
                        "converged": bool(conv[f, t, r]),
                    })  # fmt: skip
            if control != "task":
                task = names.index((target, "task"))
                gap = scores["test"][f, task, best[f, task]] - scores["test"][f, t, best[f, t]]
                rows.append(base | {
                    "target": target, "control": control, "seed": seed, "reg": float("nan"),
                    "split": "test", "metric": "selectivity", "value": float(gap),
                    "selected": True, "n_iter": 0, "converged": True,
                })  # fmt: skip
    return rows
