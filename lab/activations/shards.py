"""Safetensors shards: written atomically and straight from tensor memory, read memory-mapped.

The format is plain safetensors (an 8-byte little-endian header length, a JSON header of
``{name: {dtype, shape, data_offsets}}`` plus ``__metadata__``, then the raw bytes), so any
safetensors reader opens a shard. Writing here streams each tensor's buffer to the file (the
official ``save_file`` first builds one bytes object of the whole shard, doubling its memory);
reading maps the file and returns zero-copy tensor views, so a slice of rows costs only the
pages it touches.

Atomicity: a shard is written to a hidden ``.tmp`` name, flushed, fsynced, then renamed into
place, so a shard file exists complete or not at all, whatever kills the writer.

Integrity: writing returns the shard's size and SHA-256 (hashed from the same buffers as they are
written, so no second read), which the store records. ``shard_problem`` checks a shard file
against its header (the size the header implies: catches truncation with no record at all) and
against a record (size always; the checksum when asked, since that reads the whole file).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lab.errors import LabError
from lab.models.weightfiles import parse_header

__all__ = ["ShardReader", "ShardRecord", "file_sha256", "shard_problem", "write_shard"]

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


@dataclass(frozen=True)
class ShardRecord:
    """What a shard file must be: recorded when written, checked when opened or resumed."""

    bytes: int  # file size
    sha256: str  # hex SHA-256 of the whole file


def write_shard(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> ShardRecord:
    """Write ``tensors`` (CPU) to ``path`` atomically; return its size and checksum."""
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
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for chunk in (struct.pack("<Q", len(raw)), raw):
                f.write(chunk)
                digest.update(chunk)
            for name in names:
                t = tensors[name].contiguous()
                if t.numel():
                    data = memoryview(t.view(-1).view(torch.uint8).numpy())
                    f.write(data)
                    digest.update(data)  # releases the GIL: the compute thread runs on
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ShardRecord(8 + len(raw) + offset, digest.hexdigest())


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _header(path: Path) -> tuple[int, dict]:
    """A shard's header length and JSON header; LabError naming the file when unreadable."""
    try:
        return parse_header(path)
    except LabError as e:
        why = "its header does not parse"
        raise LabError(f"{path} is damaged: {why}; recompute it (resume).") from e


def _implied_size(n: int, header: dict) -> int:
    """The file size that a header of ``n`` bytes describes: header plus every tensor's data."""
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def shard_problem(path: Path, record: ShardRecord | None, checksum: bool) -> str | None:
    """What is wrong with the shard at ``path`` (None when nothing is).

    Always: the file's size against its header's and the record's. ``checksum``: also its
    SHA-256 against the record's (reads the file).
    """
    size = path.stat().st_size
    try:
        implied = _implied_size(*_header(path))
    except (LabError, KeyError, TypeError, IndexError):
        return f"{size} bytes and an unreadable header"
    if size != implied:
        return f"{size} bytes but its header describes {implied}"
    if record is not None and size != record.bytes:
        return f"{size} bytes but {record.bytes} were written"
    if record is not None and checksum and file_sha256(path) != record.sha256:
        return "its SHA-256 differs from the one recorded when it was written"
    return None


@dataclass(frozen=True)
class _Entry:
    dtype: torch.dtype  # element type
    shape: tuple[int, ...]  # tensor shape
    begin: int  # byte offset of the data in the file


class ShardReader:
    """One shard's header, read eagerly; its data mapped on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        n, header = _header(path)
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
