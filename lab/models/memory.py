"""Will the pair fit? Weight bytes from safetensors headers against the device's free memory.

A pair that cannot fit is refused before loading, instead of swapping the machine to death.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lab.errors import LabError
from lab.models.weightfiles import read_header
from lab.runtime import resolve_device

__all__ = ["available_memory", "check_fits", "count_parameters"]

HEADROOM = 1.3  # activations, the HF-to-bridge wrapping and allocator slack, over raw weights


def count_parameters(folder: str | Path) -> int | None:
    """Parameters in a checkpoint folder, read from its safetensors headers (no weights load)."""
    total, found = 0, False
    for f in Path(folder).glob("*.safetensors"):
        header = read_header(f)  # a damaged file is named in one line
        for name, entry in header.items():
            if name != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                total, found = total + n, True
    return total if found else None


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        resolve_device(device)  # a one-line refusal when there is no such CUDA device
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits(n_params: int, dtype: torch.dtype, device: torch.device, n_models: int = 2) -> None:
    """Refuse when ``n_models`` models of ``n_params`` in ``dtype`` cannot fit on ``device``."""
    need = int(n_params * dtype.itemsize * n_models * HEADROOM)
    free = available_memory(device)
    if need > free:
        gib = 2**30
        raise LabError(
            f"The pair needs about {need / gib:.1f} GiB on {device} ({n_models} x {n_params:,} "
            f"parameters in {str(dtype).removeprefix('torch.')}), but only {free / gib:.1f} GiB "
            "is free. Use dtype='bfloat16', a GPU (device='cuda'), or device_map='auto' to "
            "spread the models over several GPUs."
        )
