"""A metric bound to a prompt set: the positions it reads in each prompt, where those are among
every position a run reads, and its batch mean on one run or on many stacked patched runs."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from lab.errors import LabError
from probes.patching.metrics import Metric
from probes.patching.positions import read_positions

__all__ = ["BoundMetric", "read_values"]


class BoundMetric:
    """A metric with the positions it reads in each prompt and, once the positions read by all
    metrics are known (``index``), where they are among them (``idx``)."""

    def __init__(self, metric: Metric, n_pos: int, mask: torch.Tensor | None = None):
        self.metric, self.name = metric, metric.name
        self.reads = getattr(metric, "reads", "logits")  # "logits" or the hook it reads
        self.at = read_positions(metric, n_pos, mask)  # (batch | 1) read: array positions
        self.positions = sorted(set(self.at.flatten().tolist()))  # every one of them
        self.idx: torch.Tensor | list[int] = []  # per prompt (batch read), or one list for all
        self._tiled: dict[int, Metric | None] = {}

    def index(self, read: list[int]) -> None:
        """Locate this metric's positions among ``read`` (the positions read, ascending)."""
        idx = torch.searchsorted(torch.tensor(read), self.at)
        self.idx = idx[0].tolist() if (idx == idx[:1]).all() else idx

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This metric's rows of ``x`` (``prompts read ...``, copies of the batch stacked)."""
        if isinstance(self.idx, list):
            return x[:, self.idx]
        idx = self.idx.to(x.device).repeat(x.shape[0] // self.idx.shape[0], 1)
        return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]

    def _values(self, metric, logits: torch.Tensor) -> torch.Tensor:
        values = metric(self.take(logits))
        if not isinstance(values, torch.Tensor) or values.shape != (logits.shape[0],):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise LabError(
                f"Metric {self.name} returned shape {got}; a patching metric returns one value "
                f"per prompt, shape ({logits.shape[0]},)."
            )
        return values

    def __call__(self, logits: torch.Tensor) -> float:
        """The batch mean on read logits (``batch read vocab``), shape checked."""
        return float(self._values(self.metric, logits).float().mean())

    def many(self, logits: torch.Tensor) -> list[float]:
        """Batch means of stacked patched runs (``site batch read vocab``): one call if the
        metric tiles, else one per site."""
        copies, batch = logits.shape[:2]
        if copies not in self._tiled:
            self._tiled[copies] = self.metric.tile(copies)
        tiled = self._tiled[copies]
        if tiled is None:
            return [self(site) for site in logits]
        values = self._values(tiled, logits.reshape(copies * batch, *logits.shape[2:]))
        return values.float().view(copies, batch).mean(1).tolist()


def read_values(
    logits: Float[Tensor, "batch read vocab"] | None, acts: dict, reads: dict, name: str
) -> Float[Tensor, "batch read ..."]:
    """What a metric reading ``name`` sees of one run: its read logits or hook activations."""
    return logits if name == "logits" else acts[name][:, reads[name]]
