"""Refusals of ``lab.activations.cache``: options and the out folder before anything is written,
disk space
before computing, write errors and Ctrl-C while writing. Each says what is wrong and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lab.activations.hooks import HookPlan
from lab.errors import LabError

__all__ = [
    "PADDING_SIDES",
    "CacheInterrupted",
    "check_options",
    "check_space",
    "disk_error",
    "unwritable",
]

PADDING_SIDES = ("left", "right")


class CacheInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``cache_pair``: the shards computed so far were written; resume finishes."""

    def __init__(self, root: Path, kept: int, total: int) -> None:
        self.root, self.kept, self.total = root, kept, total  # the store, shards present, planned
        super().__init__(
            f"Interrupted: {root} keeps {kept} of {total} shards and opens as is; rerun with "
            "resume=True (--resume) to finish it."
        )


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_out(root: Path) -> None:
    """Refuse an ``out`` that is a file or that cannot be written, before writing anything."""
    if root.exists() and not root.is_dir():
        raise LabError(f"out={str(root)!r} (--out) is a file, not a folder; give a store folder.")
    parent = root
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise LabError(f"out={str(root)!r} (--out) lies under {parent}, which is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LabError(
            f"Cannot write to {parent} (no write permission, or a read-only disk); give an "
            "out (--out) folder you can write to."
        )


def check_options(
    *, batch_size: Any, padding_side: Any, queue_depth: Any = 2, out: str | Path | None = None
) -> None:
    """Refuse a bad caching option, naming it, before anything is loaded or written."""
    if not _whole(batch_size, 1):
        raise LabError(f"batch_size (--batch-size) must be a whole number >= 1; got {batch_size!r}")
    if padding_side not in PADDING_SIDES:
        raise LabError(
            f"padding_side (--padding-side) must be 'left' or 'right'; got {padding_side!r}."
        )
    if not _whole(queue_depth, 0):
        raise LabError(f"queue_depth must be a whole number >= 0; got {queue_depth!r}.")
    if out is not None:
        _check_out(Path(out))


def unwritable(root: Path, e: OSError) -> LabError:
    return LabError(
        f"Cannot write the store to {root} ({e.strerror or e}); give an out (--out) folder you "
        "can write to."
    )


def disk_error(e: OSError, root: Path, done: int, total: int) -> LabError:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return unwritable(root, e)
    what = "The disk is full" if e.errno == errno.ENOSPC else f"Writing failed ({e})"
    kept = f"shards 0..{done - 1}" if done else "no shards yet"
    return LabError(
        f"{what} while writing shard {done} to {root}. The store keeps {kept} of {total} and "
        "opens as is; free space and rerun with resume=True (--resume)."
    )


def check_space(root: Path, plan: HookPlan, rows: int, dtype) -> None:
    """Refuse to start when the rest of the store (``rows`` token rows) cannot fit on the disk."""
    need = 2 * rows * plan.row_bytes(torch.empty((), dtype=dtype).element_size())
    free = shutil.disk_usage(root).free
    if need > free:
        raise LabError(
            f"The store needs about {need / 2**30:.2f} GiB more but {root} has "
            f"{free / 2**30:.2f} GiB free; free space, store fewer hooks or tokens, or use "
            "dtype='bfloat16'."
        )
