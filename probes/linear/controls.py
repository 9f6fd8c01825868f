"""Controls that make a probe score mean something.

- Control tasks (Hewitt & Liang 2019): the same probe fitted to labels that carry no information
  about the representation beyond token identity (``types``: each token type gets a random label
  drawn from the target's empirical distribution) or none at all (``shuffle``: labels permuted
  across rows). Selectivity = task score - control score.
- A randomly initialised model of the same shape (``random_init_like``): its activations are
  collected like any other model's and probed as the baseline "model".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lab.errors import LabError, close_matches

__all__ = ["CONTROLS", "make_control", "random_init_like", "shuffle_control", "type_control"]


def shuffle_control(y: Tensor, seed: int, token_ids: Tensor | None = None) -> Tensor:
    """``y`` with its rows permuted: same label distribution, no relation to the features."""
    perm = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed))
    return y[perm.to(y.device)]


def type_control(y: Tensor, seed: int, token_ids: Tensor | None = None) -> Tensor:
    """Hewitt & Liang's control task: one random target per token type, drawn from ``y``'s rows."""
    if token_ids is None:
        raise LabError(
            "The 'types' control needs the token id of every row; pass token_ids=..., or use the "
            "'shuffle' control."
        )
    if token_ids.shape[0] != y.shape[0]:
        raise LabError(f"token_ids has {token_ids.shape[0]} rows but the target has {y.shape[0]}.")
    types, inverse = torch.unique(token_ids.cpu(), return_inverse=True)
    gen = torch.Generator().manual_seed(seed)
    donor = torch.randint(0, y.shape[0], (len(types),), generator=gen)  # a random row per type
    return y[donor[inverse].to(y.device)]


CONTROLS: dict[str, Callable[..., Tensor]] = {"shuffle": shuffle_control, "types": type_control}


def make_control(name: str, y: Tensor, seed: int, token_ids: Tensor | None = None) -> Tensor:
    """The control target called ``name`` for ``y``."""
    if name not in CONTROLS:
        raise LabError(
            f"Unknown control {name!r}; available: {', '.join(CONTROLS)}."
            + close_matches(name, CONTROLS)
        )
    return CONTROLS[name](y, seed, token_ids)


def random_init_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model of ``model``'s class and config (a Hugging Face model).

    The global RNG is left untouched. Collect its activations on the same tokens and probe it as
    one more model (e.g. ``"random"``) next to base and tuned.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise LabError(
            f"{type(model).__name__} has no .config; pass a Hugging Face model (the HF model "
            "inside a TransformerBridge is its .original_model)."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(config)
    return fresh.eval()
