"""What the caching hooks do on each batch: keep the real, selected token rows of every requested
hook point, in both models, in host buffers, and stop each forward after the last one.

Each hook gathers the kept rows on the device, casts them to the storage dtype and copies them into
a host buffer (pinned on CUDA, asynchronous); the last requested hook raises
``lab.activations.hooks.StopForward``, so nothing after it runs (no final norm or unembedding
unless asked for).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lab.activations.hooks import HookPlan, StopForward, stopping
from lab.datasets.batch import Batch
from lab.models.pair import ModelPair

if TYPE_CHECKING:  # for annotations only: importing transformer_lens takes seconds
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["Capture", "host_slot", "run_batch"]


def host_slot(
    plan: HookPlan, roles: Iterable[str], max_rows: int, dtype: torch.dtype, pin: bool
) -> dict[str, Tensor]:
    """One batch's host buffers: ``"model/hook"`` -> ``[max_rows, ...]`` (pinned when ``pin``)."""
    return {
        f"{role}/{h}": torch.empty((max_rows, *plan.shapes[h]), dtype=dtype, pin_memory=pin)
        for role in roles
        for h in plan.names
    }


class Capture:
    """Per-batch target of the hooks: which rows to keep and the host buffers to fill."""

    def __init__(self, plan: HookPlan, dtype: torch.dtype) -> None:
        self.plan, self.dtype = plan, dtype
        self.index: Tensor | None = None  # kept rows of the flattened (batch * pos) activation
        self.slot: dict[str, Tensor] = {}  # "model/hook" -> host buffer of this batch

    def hook(self, role: str, name: str):
        key, last = f"{role}/{name}", name == self.plan.last

        def fn(act: Any, *, hook: Any) -> Any:
            t = (act[0] if isinstance(act, tuple) else act).detach().flatten(0, 1)
            buf = self.slot[key][: self.index.shape[0]]
            if t.device == buf.device and t.dtype == buf.dtype:  # CPU: gather straight in
                torch.index_select(t, 0, self.index, out=buf)
            else:  # gather on the device, then one (asynchronous) copy to the host
                buf.copy_(t.index_select(0, self.index).to(self.dtype), non_blocking=True)
            if last:
                raise StopForward
            return act

        return fn

    @contextmanager
    def attached(self, models: dict[str, TransformerBridge]) -> Iterator[Capture]:
        """The hooks on every model for the whole run, removed on exit whatever happens."""
        with ExitStack() as stack:
            for role, model in models.items():
                hooks = [(h, self.hook(role, h)) for h in self.plan.names]
                stack.enter_context(model.hooks(fwd_hooks=hooks))
            yield self


def run_batch(pair: ModelPair, capture: Capture, batch: Batch, slot: dict[str, Tensor]) -> None:
    """Run both models on ``batch``, their hooks filling ``slot`` with the kept rows."""
    device = pair.device
    tokens = batch.tokens.to(device, non_blocking=True)
    capture.index = batch.keep.reshape(-1).nonzero().squeeze(1).to(device, non_blocking=True)
    capture.slot = slot
    kwargs = {k: v.to(device, non_blocking=True) for k, v in batch.forward_kwargs().items()}
    for model in pair.models.values():
        with stopping():
            model(tokens, return_type=None, **kwargs)
