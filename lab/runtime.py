"""Where and how the lab computes: device choice and CPU thread count.

Nothing here runs at import; callers (the CLI, ``load_pair``) ask for it explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lab.errors import LabError

__all__ = [
    "cache_dir",
    "configure_threads",
    "default_device",
    "device_of",
    "parse_device",
    "resolve_device",
    "resolve_dtype",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def cache_dir(kind: str = "") -> Path:
    """``$STEERLAB_CACHE/kind`` (default ``~/.cache/steerlab/kind``), read when called: where
    generated checkpoints (planted organisms, converted real models) are kept out of git."""
    root = os.environ.get("STEERLAB_CACHE") or Path.home() / ".cache" / "steerlab"
    return Path(root).expanduser() / kind


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter: where its inputs go."""
    return next(model.parameters()).device


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device from its name; a LabError naming it when it is not one."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise LabError(f"Unknown device {device!r} (--device); use cpu, cuda or cuda:N.") from e


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to compute on: ``device`` (None: CUDA when there is one, else the CPU).

    Refuses, in one line naming it, a device that this machine or torch build does not have.
    """
    if device is None:
        return default_device()
    dev = parse_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch build ({torch.__version__}) has no CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (torch.cuda.is_available() is False)"
            )
            raise LabError(f"Device {str(dev)!r} (--device) was asked but {why}; use cpu.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise LabError(
                f"Device {str(dev)!r} (--device) was asked but there are {n} CUDA devices "
                f"(cuda:0 to cuda:{n - 1})."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LabError(f"Device {str(dev)!r} (--device) was asked but MPS is unavailable; use cpu.")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A torch dtype from a dtype or its name (``float32``, ``bf16`` ...); None means float32."""
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
