"""Hooks, recording activations of a pair, and the on-disk activation store.

``cache_pair`` runs both models of a pair on the same batches and streams the chosen hook points to
a store folder; ``ActivationStore`` reads it back (by model, hook and token slice, or stacked by
layer for probes). ``hooks`` chooses hook points by name or pattern, and defines ``StopForward``
and ``stopping``, the one way a forward ends early.
"""

from lab.activations.cache import cache_pair
from lab.activations.cache_checks import CacheInterrupted, check_options
from lab.activations.hooks import (
    HookPlan,
    StopForward,
    hook_point,
    match_hooks,
    plan_hooks,
    split_patterns,
    stopping,
)
from lab.activations.manifest import weights_fingerprint
from lab.activations.store import ActivationStore

__all__ = [
    "ActivationStore",
    "CacheInterrupted",
    "HookPlan",
    "StopForward",
    "cache_pair",
    "check_options",
    "hook_point",
    "match_hooks",
    "plan_hooks",
    "split_patterns",
    "stopping",
    "weights_fingerprint",
]
