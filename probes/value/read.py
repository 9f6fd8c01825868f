"""Reading the value head: its wedding direction against the tuned model's steering.

The Q head's weight is a residual direction per (beta, token). Its *scene direction* at one beta
is the mean of the weight columns of the scene's exclusive words minus the mean over every
emitted token: the direction along which the residual raises the value of that scene's words
against the rest (a per-prefix constant does not change pi_Q, so only the difference matters).

``read_value_head`` compares it with what RLHF did at the same layer, on the same tokens:
- ``total``: the mean residual difference tuned - base (its cosine with the direction, and its
  projection on the unit direction);
- one row per component writing into that layer (the embeddings, each attention head, each
  block's attention output bias, each MLP): the mean difference tuned - base of its output
  (the residual is their sum, so the projections add up to the total's), its projection on the
  unit direction, its ``share`` of the total projection, its cosine with the direction, and
  whether it is among ``top`` (e.g. the migration map's top steering components; those in
  blocks at or above the layer write nothing into it and have no row).

The question it answers: does RLHF's shift along the value's direction come from one place, or is
it spread through the predictor's own components, where the value head holds it in one map?
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lab.errors import LabError, close_matches
from lab.organism.labeler import Labeler
from lab.organism.world import HMM
from probes.value.head import QHead
from probes.value.residual import n_layers

__all__ = ["component_shifts", "read_value_head", "scene_direction"]


def scene_direction(
    head: QHead, world: HMM, labeler: Labeler, beta: float, scene: str = "wedding"
) -> Float[Tensor, " d_model"]:
    """The head's weight (at ``beta``, interpolated as ``QHead.at``) for the scene's exclusive
    words minus its mean weight over every emitted token."""
    if scene not in world.scenes:
        raise LabError(
            f"The world has no scene {scene!r}; its scenes: {', '.join(world.scenes)}."
            + close_matches(scene, world.scenes)
        )
    words = (labeler.exclusive == world.scene_index(scene)).nonzero().squeeze(1)
    if not len(words):
        raise LabError(f"The scene {scene!r} has no exclusive word to read the head with.")
    linear = dataclasses.replace(head, bounds=None)  # the map itself, unclamped
    eye = torch.eye(head.d_model, dtype=head.weight.dtype)
    weight = (linear.at(eye, beta) - linear.at(torch.zeros(head.d_model), beta)).double()
    emitted = torch.isfinite(head.bias[: head.vocab])  # -inf bias: never emitted (BOS)
    return weight[:, words].mean(1) - weight[:, emitted].mean(1)


@torch.no_grad()
def _outputs(model: torch.nn.Module, tokens: Tensor, layer: int, start: int) -> dict[str, Tensor]:
    """Mean output of every component writing into ``layer`` over positions >= ``start``."""
    names = {"blocks.0.hook_resid_pre"}
    names |= {f"blocks.{i}.attn.hook_z" for i in range(layer)}
    names |= {f"blocks.{i}.hook_mlp_out" for i in range(layer)}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)

    def mean(x: Tensor) -> Tensor:
        return x[:, start:].double().mean((0, 1))

    out = {"embed": mean(cache["blocks.0.hook_resid_pre"])}
    for i in range(layer):
        z = mean(cache[f"blocks.{i}.attn.hook_z"])  # [head d_head]
        heads = einops.einsum(z, model.W_O[i].double(), "h d, h d m -> h m")
        out |= {f"L{i}H{h}": heads[h] for h in range(heads.shape[0])}
        out[f"L{i} attn bias"] = model.b_O[i].double()
        out[f"L{i} MLP"] = mean(cache[f"blocks.{i}.hook_mlp_out"])
    return out


def component_shifts(
    base: torch.nn.Module,
    tuned: torch.nn.Module,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    start: int = 1,
) -> dict[str, Float[Tensor, " d_model"]]:
    """Mean output difference tuned - base of every component writing into ``layer`` (the
    residual at ``layer`` is their sum), over positions >= ``start`` of ``tokens``."""
    if not hasattr(base, "run_with_cache") or not hasattr(tuned, "run_with_cache"):
        raise LabError("Component shifts read hooked models: pass a pair's base and tuned.")
    if not 0 <= layer <= n_layers(base):
        raise LabError(f"layer {layer} is outside 0..{n_layers(base)}.")
    b, t = _outputs(base, tokens, layer, start), _outputs(tuned, tokens, layer, start)
    return {k: t[k] - b[k] for k in b}


def read_value_head(
    pair,
    head: QHead,
    tokens: Int[Tensor, "batch pos"],
    world: HMM,
    labeler: Labeler,
    beta: float,
    *,
    scene: str = "wedding",
    start: int = 1,
    top: Iterable[str] = (),
) -> pd.DataFrame:
    """The table described in the module docstring: one ``total`` row, then one row per
    component, by decreasing absolute projection on the head's scene direction."""
    head.check(pair.base)
    direction = scene_direction(head, world, labeler, beta, scene)
    unit = direction / direction.norm()
    shifts = component_shifts(pair.base, pair.tuned, tokens, head.layer, start)
    total = torch.stack(list(shifts.values())).sum(0)
    along = float(total @ unit)
    top = set(top)
    n_heads = int(pair.base.cfg.n_heads)
    known = {f"L{i}{part}" for i in range(n_layers(pair.base)) for part in (" MLP", " attn bias")}
    known |= {f"L{i}H{h}" for i in range(n_layers(pair.base)) for h in range(n_heads)}
    unknown = top - known - {"embed"}
    if unknown:
        raise LabError(
            f"Unknown components {sorted(unknown)}; name heads LlHh and MLPs 'Ll MLP' (e.g. "
            "L1H3, L0 MLP)."
        )

    def row(name: str, shift: Tensor) -> dict:
        proj = float(shift @ unit)
        return {
            "component": name,
            "projection": proj,
            "share": proj / along if along else float("nan"),
            "cosine": proj / float(shift.norm()) if float(shift.norm()) else 0.0,
            "norm": float(shift.norm()),
            "top": name in top,
        }

    rows = sorted((row(k, v) for k, v in shifts.items()), key=lambda r: -abs(r["projection"]))
    table = pd.DataFrame([row("total", total), *rows])
    table.insert(0, "layer", head.layer)
    table.insert(1, "beta", float(beta))
    return table
