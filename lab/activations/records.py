"""The shard files of a store folder and what each must be: paths, the journal, scans.

While a store is written, every shard written is recorded (size and SHA-256) as one line of the
journal ``shards.jsonl``, appended and fsynced; when the store is complete the records are folded
into the manifest and the journal removed. A scan checks the shard files present against their
headers and records (``lab.activations.shards.shard_problem``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lab.activations.shards import ShardRecord, shard_problem

__all__ = [
    "JOURNAL",
    "append_record",
    "complete_shards",
    "scan_shards",
    "shard_path",
    "shard_records",
]

JOURNAL = "shards.jsonl"
_SHARD = re.compile(r"shard-(\d{6})\.safetensors")


def shard_path(root: Path, index: int) -> Path:
    """Where shard ``index`` of the store in ``root`` lives."""
    return root / f"shard-{index:06d}.safetensors"


def _present(root: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _SHARD.fullmatch(p.name)))


def shard_records(root: Path, manifest: dict[str, Any]) -> dict[int, ShardRecord]:
    """Each shard's recorded size and checksum: the manifest's, updated by the journal's."""
    out = {
        i: ShardRecord(r["bytes"], r["sha256"])
        for i, r in enumerate(manifest.get("shards") or [])
        if r is not None
    }
    journal = root / JOURNAL
    if journal.is_file():
        for line in journal.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                out[int(r["index"])] = ShardRecord(int(r["bytes"]), str(r["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue  # blank, or cut short by a kill: that shard is checked by its header
    return out


def append_record(root: Path, index: int, record: ShardRecord) -> None:
    """Record a written shard in the journal (appended, flushed and fsynced)."""
    line = {"index": index, "bytes": record.bytes, "sha256": record.sha256}
    with open(root / JOURNAL, "a") as f:
        f.write("\n" + json.dumps(line))  # on a line of its own, even after one cut short
        f.flush()
        os.fsync(f.fileno())


def scan_shards(
    root: Path, manifest: dict[str, Any], checksum: bool
) -> tuple[list[int], dict[int, str]]:
    """The shard files present and intact, and the damaged ones with what is wrong with each."""
    records = shard_records(root, manifest)
    good, damaged = [], {}
    for i in _present(root):
        problem = shard_problem(shard_path(root, i), records.get(i), checksum)
        if problem is None:
            good.append(i)
        else:
            damaged[i] = problem
    return good, damaged


def complete_shards(root: Path) -> int:
    """How many shards 0..k-1 exist without a gap (the first missing one is k)."""
    present = set(_present(root))
    k = 0
    while k in present:
        k += 1
    return k
