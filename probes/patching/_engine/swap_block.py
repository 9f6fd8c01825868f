"""One block of a component swap: what the receiving model's block writes at its attention or MLP
output when one unit's parameters are the other model's, on the receiving model's own inputs.

A swap at layer L changes nothing before block L, so block L's input is the receiving run's
(``probes.patching._engine.capture``), and so are the inputs of its attention and MLP (the norms
are the
receiver's). Two small forwards of that one block give every unit's swapped output at once:

1. the *donor's* block L on the receiver's input, with its attention's and MLP's inputs set to the
   receiver's: the donor's queries, keys and values of the receiver's normalized input
   (``attn.hook_q/k/v``, before any rotary embedding) and the donor's MLP output on it;
2. the *receiver's* block L once per unit, stacked along the batch
(``probes.patching._engine.packing``): a unit's
   query/key/value heads take the donor's values, its heads' output-projection slices are swapped
   by adding ``z_u W_O^donor - z_u W_O^receiver`` at the projection's output (``z_u``: the unit's
   heads of the projection's input, biases cancelled), an MLP unit's output is the donor's; the
   block's own hooks after that (Gemma-2's post-norms) then give ``hook_attn_out`` or
   ``hook_mlp_out`` exactly as the weight-swapped model computes them.

No per-architecture code: the bridge's hooks and blocks do the arithmetic, and the output
projection is the wrapped HF module (``attn.o.original_component``: Linear or Conv1D alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lab.activations.hooks import hook_point
from probes.patching._engine.capture import TargetRun
from probes.patching._engine.last_block import KV, Adapter, attention_kv, hooked
from probes.patching._engine.packing import Lanes, pack_lanes
from probes.patching.units import Component

__all__ = ["DonorActs", "donor_acts", "input_hooks", "swapped_outputs"]

DonorActs = dict[str, Tensor]  # "q", "k", "v", "mlp": the donor's block L on the receiver's inputs


def input_hooks(layer: int) -> list[str]:
    """The receiver's hooks whose values the donor's block is given (captured once)."""
    return [f"blocks.{layer}.attn.hook_in", f"blocks.{layer}.mlp.hook_in"]


def _layout(n_copies: int, run: TargetRun) -> Lanes:
    """``n_copies`` lanes of every position, no cached prefix: one copy of the batch each."""
    batch, n_pos = run.tokens.shape
    lanes = pack_lanes([range(n_pos)] * n_copies, n_pos, batch, run.tokens.device)
    return replace(lanes, cached=False)


def _block(model: Any, layer: int, run: TargetRun, lanes: Lanes, hooks: list) -> None:
    """Block ``layer`` of ``model`` on the receiver's input, once per lane, with ``hooks``."""
    hidden = lanes.gather(run.block_inputs[layer])
    points = {name: hook_point(model, name) for name, _ in hooks}
    with hooked(points, hooks), attention_kv(model, [layer], KV()):
        model.blocks[layer](hidden, **Adapter(lanes)(run.block_kwargs[layer]))


def _setter(value: Tensor):
    return lambda act, hook: value.to(act.dtype).expand_as(act).clone()


def _saver(into: dict, key: str):
    def save(act: Tensor, hook: Any) -> Tensor:
        into[key] = act.detach().clone()
        return act

    return save


def donor_acts(donor: Any, run: TargetRun, layer: int) -> DonorActs:
    """The donor's queries, keys, values and MLP output at block ``layer`` on the receiver's
    normalized inputs (``run.acts`` holds them, at ``input_hooks(layer)``)."""
    attn_in, mlp_in = (run.acts[h] for h in input_hooks(layer))
    out: DonorActs = {}
    pre = f"blocks.{layer}"
    hooks = [(f"{pre}.attn.hook_in", _setter(attn_in)), (f"{pre}.mlp.hook_in", _setter(mlp_in))]
    hooks += [(f"{pre}.attn.hook_{x}", _saver(out, x)) for x in "qkv"]
    hooks += [(f"{pre}.mlp.hook_out", _saver(out, "mlp"))]
    with torch.inference_mode():
        _block(donor, layer, run, _layout(1, run), hooks)
    return out


def _head_setter(lanes: Lanes, donor: Tensor, heads: Sequence[Sequence[int]]):
    """A hook writing the donor's heads ``heads[u]`` into copy u (``batch pos head d``)."""

    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        view = lanes.by_lane(act)
        for u, hs in enumerate(heads):
            if hs:
                view[u][:, :, hs] = donor[:, :, hs].to(act.dtype)
        return act

    return hook


def _output_swap(lanes: Lanes, receiver_o: Any, donor_o: Any, heads, n_heads: int):
    """Hooks on the output projection's input (stash ``z``) and output (add each copy's
    ``z_u W_O^donor - z_u W_O^receiver``, ``z_u`` its own heads of ``z``)."""
    seen: dict[str, Tensor] = {}
    mask = torch.zeros(len(heads), 1, 1, n_heads, 1)  # lane batch pos head d
    for u, hs in enumerate(heads):
        mask[u, ..., hs, :] = 1.0

    def stash(z: Tensor, hook: Any) -> Tensor:
        seen["z"] = z
        return z

    def add(out: Tensor, hook: Any) -> Tensor:
        z = seen["z"]
        m = mask.to(z.device, z.dtype)
        zu = (lanes.by_lane(z) * m).reshape(*z.shape[:2], -1)  # (lane batch) pos head*d
        zero = zu.new_zeros(1, zu.shape[-1])
        delta = donor_o(zu) - receiver_o(zu) - (donor_o(zero) - receiver_o(zero))
        return out + delta.to(out.dtype)

    return stash, add


def swapped_outputs(
    receiver: Any,
    donor: Any,
    run: TargetRun,
    layer: int,
    units: Sequence[Component],
    acts: DonorActs,
) -> list[Float[Tensor, "batch pos d_model"]]:
    """Per unit of block ``layer``: the receiver's ``hook_attn_out`` (attention units) or
    ``hook_mlp_out`` (an MLP) with that unit's parameters the donor's, on the receiver's run."""
    n_heads = int(receiver.cfg.n_heads)
    n_kv = int(getattr(receiver.cfg, "n_key_value_heads", None) or n_heads)
    lanes = _layout(len(units), run)
    q_heads = [u.query_heads(n_heads, n_kv) for u in units]
    kv_heads = [u.kv_heads(n_heads, n_kv) for u in units]
    pre = f"blocks.{layer}"
    attn_r, attn_d = receiver.blocks[layer].attn, donor.blocks[layer].attn
    stash, add = _output_swap(
        lanes, attn_r.o.original_component, attn_d.o.original_component, q_heads, n_heads
    )
    mlp_copies = [u for u, c in enumerate(units) if c.kind == "mlp"]

    def mlp_hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        lanes.by_lane(act)[mlp_copies] = acts["mlp"].to(act.dtype)
        return act

    got: dict[str, Tensor] = {}
    hooks = [
        (f"{pre}.attn.hook_q", _head_setter(lanes, acts["q"], q_heads)),
        (f"{pre}.attn.hook_k", _head_setter(lanes, acts["k"], kv_heads)),
        (f"{pre}.attn.hook_v", _head_setter(lanes, acts["v"], kv_heads)),
        (f"{pre}.attn.hook_z", stash),
        (f"{pre}.attn.o.hook_out", add),
        (f"{pre}.hook_attn_out", _saver(got, "attn")),
        (f"{pre}.hook_mlp_out", _saver(got, "mlp")),
    ]
    if mlp_copies:
        hooks.insert(5, (f"{pre}.mlp.hook_out", mlp_hook))
    with torch.inference_mode():
        _block(receiver, layer, run, lanes, hooks)
    return [
        lanes.by_lane(got["mlp" if c.kind == "mlp" else "attn"])[u] for u, c in enumerate(units)
    ]
