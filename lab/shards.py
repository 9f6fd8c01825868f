"""Safetensors shards: written atomically and straight from tensor memory, read memory-mapped.

The format is plain safetensors (an 8-byte little-endian header length, a JSON header of
``{name: {dtype, shape, data_offsets}}`` plus ``__metadata__``, then the raw bytes), so any
safetensors reader opens a shard. Writing here streams each tensor's buffer to the file (the
official ``save_file`` first builds one bytes object of the whole shard, doubling its memory);
reading maps the file and returns zero-copy tensor views, so a slice of rows costs only the
pages it touches.

Atomicity: a shard is written to a hidden ``.tmp`` name, flushed, fsynced, then renamed into
place, so a shard file exists complete or not at all, whatever kills the writer.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ShardReader", "write_shard"]

_CODES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES = {code: dtype for dtype, code in _CODES.items()}


def write_shard(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> int:
    """Write ``tensors`` (CPU) to ``path`` atomically; return the bytes written."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {
            "dtype": _CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name in names:
                t = tensors[name].contiguous()
                if t.numel():
                    f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return 8 + len(raw) + offset


@dataclass(frozen=True)
class _Entry:
    dtype: torch.dtype  # element type
    shape: tuple[int, ...]  # tensor shape
    begin: int  # byte offset of the data in the file


class ShardReader:
    """One shard's header, read eagerly; its data mapped on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.metadata: dict[str, str] = header.pop("__metadata__", {})
        self.entries = {
            k: _Entry(_DTYPES[v["dtype"]], tuple(v["shape"]), 8 + n + v["data_offsets"][0])
            for k, v in header.items()
        }
        self._map: mmap.mmap | None = None

    def tensor(self, name: str) -> Tensor:
        """A zero-copy, copy-on-write view of tensor ``name`` over the mapped file."""
        e = self.entries[name]
        count = 1
        for d in e.shape:
            count *= d
        if count == 0:
            return torch.empty(e.shape, dtype=e.dtype)
        if self._map is None:
            with open(self.path, "rb") as f:
                # ACCESS_COPY: writable views (no torch warning) that never write the file back
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        flat = torch.frombuffer(self._map, dtype=e.dtype, count=count, offset=e.begin)
        return flat.view(e.shape)
