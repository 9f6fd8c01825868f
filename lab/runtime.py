"""Where and how the lab computes: device choice and CPU thread count.

Nothing here runs at import; callers (the CLI, ``load_pair``) ask for it explicitly.
"""

from __future__ import annotations

import os

import torch

__all__ = ["configure_threads", "default_device", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A torch dtype from a dtype or its name (``float32``, ``bf16`` ...); None means float32."""
    from lab.errors import LabError

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise LabError(f"Unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}.")
    return _DTYPES[dtype]


def configure_threads(n: int | None = None) -> int:
    """Set torch's CPU threads: ``n``, else $STEERLAB_THREADS, else one fewer than the cores.

    Two threads on two cores shared with another process can run ten times slower than one, so
    the default leaves a core free.
    """
    if n is None:
        env = os.environ.get("STEERLAB_THREADS")
        n = int(env) if env else max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(n)
    return n
