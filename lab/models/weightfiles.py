"""Is a weights file a sound safetensors file? Checked from its header, before anything loads.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
``{name: {dtype, shape, data_offsets}}`` (plus ``__metadata__``), then the tensors' bytes, which
the offsets must cover exactly. ``read_header`` checks all of that against the file's size while
reading only the header, so a truncated or random file is named as damaged instead of failing deep
inside the loader (or, with a random header length, asking for an enormous allocation).
``parse_header`` only parses the header, for readers with checks of their own (the store's
shards).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from lab.errors import LabError

__all__ = ["MAX_HEADER_BYTES", "damaged", "parse_header", "read_header"]

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit on the JSON header

# Bits per element of each safetensors dtype code; a code not listed skips the size check.
_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "U16": 16,
    "I16": 16,
    "F16": 16,
    "BF16": 16,
    "U32": 32,
    "I32": 32,
    "F32": 32,
    "U64": 64,
    "I64": 64,
    "F64": 64,
}


def damaged(path: str | Path, why: str) -> LabError:
    """The one-line refusal of a damaged weights file: what is wrong and how to fix it."""
    return LabError(
        f"{path} is damaged or not a safetensors file ({why}). Download the checkpoint again, "
        "or re-save it from a good copy with `model.save_pretrained(folder)`."
    )


def _offsets(path: Path, name: str, entry: Any) -> tuple[int, int]:
    """The (begin, end) data offsets of one tensor entry, its dtype and shape checked."""
    try:
        begin, end = (int(x) for x in entry["data_offsets"])
        shape = [int(d) for d in entry["shape"]]
        dtype = str(entry["dtype"])
    except (KeyError, TypeError, ValueError) as e:
        raise damaged(path, f"the header entry of tensor {name!r} is malformed") from e
    if any(d < 0 for d in shape):
        raise damaged(path, f"tensor {name!r} has a negative dimension {shape}")
    bits = _BITS.get(dtype)
    if bits is not None and math.prod(shape) * bits != (end - begin) * 8:
        raise damaged(
            path,
            f"tensor {name!r} ({dtype} {shape}) needs {math.prod(shape) * bits // 8:,} bytes "
            f"but its offsets span {end - begin:,}",
        )
    return begin, end


def parse_header(path: str | Path) -> tuple[int, dict[str, Any]]:
    """The header length and JSON header of the safetensors file at ``path``, checked only as far
    as parsing needs (a length that fits the file, UTF-8 JSON, an object), else ``damaged``."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise damaged(path, f"{size} bytes, fewer than the 8-byte header length")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n < 2 or n > min(size - 8, MAX_HEADER_BYTES):
            raise damaged(path, f"its header length says {n:,} bytes, the file has {size - 8:,}")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(path, "its header is not UTF-8 JSON") from e
    if not isinstance(header, dict):
        raise damaged(path, "its header is not a JSON object")
    return n, header


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of the safetensors file at ``path``, refused with a ``LabError`` naming the
    file when the header length, the JSON, or any tensor's offsets do not fit the file."""
    path = Path(path)
    n, header = parse_header(path)
    data = path.stat().st_size - 8 - n
    ends = [0]
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = _offsets(path, name, entry)
        if not 0 <= begin <= end <= data:
            raise damaged(
                path,
                f"tensor {name!r} lies at data bytes {begin:,}..{end:,}, but the file holds "
                f"{data:,}: it is truncated",
            )
        ends.append(end)
    if max(ends) != data:
        raise damaged(path, f"its tensors cover {max(ends):,} of its {data:,} data bytes")
    return header
