"""Paired activation caching: base and tuned on the same batches, streamed to an on-disk store.

For each batch, both models run with forward hooks on the requested hook points (added in a
context manager, always removed), which copy the kept rows (real, selected tokens) into host
buffers and stop the forward after the last requested hook (``lab.activations.capture``). A writer
thread turns filled buffers into shards while the next batch computes. A fixed pool of buffers
bounds memory: when the disk falls behind, compute waits for a free buffer, so memory depends on
the batch, never on the dataset.

Every option is checked before anything is written (a refused run leaves no manifest behind).
The writer records each shard's size and SHA-256 as it writes it (``lab.activations.records``); a
resume checks every present shard against its record and recomputes the missing and the damaged
ones. Ctrl-C
stops after the shards already computed are written and raises ``CacheInterrupted`` (a
``KeyboardInterrupt``) saying what was kept.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lab.activations.cache_checks import (
    CacheInterrupted,
    check_options,
    check_space,
    disk_error,
    unwritable,
)
from lab.activations.capture import Capture, host_slot, run_batch
from lab.activations.hooks import plan_hooks
from lab.activations.manifest import (
    build_manifest,
    identity_diff,
    now,
    read_manifest,
    write_manifest,
)
from lab.activations.records import (
    JOURNAL,
    append_record,
    complete_shards,
    scan_shards,
    shard_path,
    shard_records,
)
from lab.activations.shards import ShardRecord, file_sha256, write_shard
from lab.activations.store import ActivationStore
from lab.datasets.batch import Padding
from lab.datasets.dataset import Dataset
from lab.errors import LabError
from lab.models.pair import ModelPair
from lab.runtime import parse_device, resolve_dtype

__all__ = ["cache_pair"]


@dataclass(frozen=True)
class _Job:
    index: int  # shard index (= batch index)
    slot: dict[str, Tensor]  # host buffers "model/hook" -> [max_rows, ...]
    rows: int  # rows filled in each buffer
    extra: dict[str, Tensor]  # seq, pos and targets of the rows (CPU)
    done: torch.cuda.Event | None  # CUDA event to wait on before reading the buffers, or None


def _prepare(root: Path, manifest: dict, resume: bool) -> list[int]:
    """Create or reopen ``root``; return the shards to write (missing or damaged ones)."""
    total = manifest["n_shards"]
    try:
        root.mkdir(parents=True, exist_ok=True)
        old = read_manifest(root)
        if old is None:
            if any(root.iterdir()):
                raise LabError(
                    f"{root} is not empty and holds no store; give an empty or new folder."
                )
            write_manifest(root, manifest)
            return list(range(total))
    except OSError as e:
        raise unwritable(root, e) from e
    differ = identity_diff(old, manifest)
    if differ:
        raise LabError(
            f"{root} holds a different store (it differs in {', '.join(differ)}); choose "
            "another --out folder, or delete this one to replace it."
        )
    done = complete_shards(root)
    if not resume:
        raise LabError(
            f"{root} already holds this store ({done} of {old['n_shards']} shards); pass "
            "resume=True (--resume) to finish it, or choose another folder."
        )
    for p in root.glob(".*.tmp"):
        p.unlink()  # half-written shards of a killed run
    good, damaged = scan_shards(root, old, checksum=True)
    records = shard_records(root, old)
    for i in good:
        if i not in records:  # written just before a kill, or by an older version: record it
            path = shard_path(root, i)
            append_record(root, i, ShardRecord(path.stat().st_size, file_sha256(path)))
    for i, problem in damaged.items():
        print(f"recomputing {shard_path(root, i).name}: {problem}", file=sys.stderr)
    todo = sorted(set(range(total)) - set(good))
    if todo and old.get("complete"):
        write_manifest(root, old | {"complete": False})
    return todo


class _Writer(threading.Thread):
    """Writes queued shards in order; returns their buffers to the pool."""

    def __init__(self, root: Path, pool: queue.Queue, depth: int) -> None:
        super().__init__(name="steerlab-store-writer", daemon=True)
        self.root, self.pool = root, pool
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                if self.error is None:
                    if job.done is not None:
                        job.done.synchronize()
                    tensors = {k: v[: job.rows] for k, v in job.slot.items()} | job.extra
                    path = shard_path(self.root, job.index)
                    meta = {"rows": str(job.rows), "batch": str(job.index)}
                    append_record(self.root, job.index, write_shard(path, tensors, meta))
            except BaseException as e:  # reported by the compute loop
                self.error = e
            finally:
                self.pool.put(job.slot)


def _batch_rows(dataset: Dataset, batch_size: int) -> list[int]:
    """Token rows of each batch (= shard) of ``batch_size`` sequences."""
    per = dataset.select.sum(1)
    per = torch.cat([per, per.new_zeros(-len(per) % batch_size)])
    return per.view(-1, batch_size).sum(1).tolist()


def _present(root: Path, total: int) -> int:
    return sum(shard_path(root, i).exists() for i in range(total))


def cache_pair(
    pair: ModelPair,
    dataset: Dataset,
    hooks: str | Sequence[str] = "resid_post",
    *,
    out: str | Path,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    padding_side: Padding = "right",
    resume: bool = False,
    progress: bool = True,
    queue_depth: int = 2,
) -> ActivationStore:
    """Run base and tuned on the same batches of ``dataset`` and store ``hooks`` of both.

    ``hooks``: TransformerLens names or patterns (see ``lab.activations.hooks``). ``device``: where
    the
    forwards run; it must be the pair's (load the pair there). ``dtype``: storage dtype
    (default: the models' own; ``float16``/``bfloat16`` halve the store). ``resume``: continue
    an interrupted run into the same ``out`` from its first missing shard. ``queue_depth``:
    shards waiting for the disk; host memory holds ``queue_depth + 1`` batches of activations.
    Returns the opened store. Every option is checked before anything is written.
    """
    check_options(
        batch_size=batch_size, padding_side=padding_side, queue_depth=queue_depth, out=out
    )
    have, want = pair.device, parse_device(device or pair.device)
    if want.type != have.type or want.index not in (None, have.index):
        raise LabError(
            f"The pair is on {have} but device={str(want)!r} was asked; load it there "
            f"with load_pair(..., device={str(want)!r})."
        )
    dtype = pair.dtype if dtype is None else resolve_dtype(dtype)
    dataset.check_context(pair.cfg.n_ctx)
    if len(dataset) == 0:
        raise LabError("The dataset is empty.")
    plan = plan_hooks(pair.base, hooks)
    manifest = build_manifest(pair, dataset, plan, dtype, batch_size, padding_side)
    root = Path(out)
    total = manifest["n_shards"]
    try:
        todo = _prepare(root, manifest, resume)
    except OSError as e:
        raise disk_error(e, root, 0, total) from e
    rows = _batch_rows(dataset, batch_size)
    check_space(root, plan, sum(rows[i] for i in todo), dtype)
    cuda = pair.device.type == "cuda"
    max_rows = min(batch_size, len(dataset)) * dataset.max_len
    pool: queue.Queue = queue.Queue()
    for _ in range(queue_depth + 1):
        pool.put(host_slot(plan, pair.models, max_rows, dtype, pin=cuda))
    writer = _Writer(root, pool, queue_depth)
    writer.start()
    done_tokens = dataset.n_tokens - sum(rows[i] for i in todo)
    interrupted = False
    bar = tqdm(
        total=dataset.n_tokens,
        initial=done_tokens,
        unit="tok",
        disable=not progress,
        desc=f"caching {len(plan.names)} hooks x {len(pair.models)} models",
    )
    try:
        with torch.inference_mode(), Capture(plan, dtype).attached(pair.models) as capture:
            for i in todo:
                batch = dataset.batch(i * batch_size, (i + 1) * batch_size, padding_side)
                slot = pool.get()
                if writer.error is not None:
                    pool.put(slot)
                    break
                run_batch(pair, capture, batch, slot)
                event = torch.cuda.Event() if cuda else None
                if event is not None:
                    event.record()
                extra = {"seq": batch.row_sequences(), "pos": batch.row_positions()}
                extra |= {f"target/{k}": t.contiguous() for k, t in batch.targets.items()}
                writer.jobs.put(_Job(i, slot, batch.n_rows, extra, event))
                bar.update(batch.n_rows)
    except KeyboardInterrupt:
        interrupted = True  # the batches already computed are still written, below
    finally:
        writer.jobs.put(None)
        writer.join()
        bar.close()
    if interrupted:
        raise CacheInterrupted(root, _present(root, total), total) from None
    if writer.error is not None:
        e = writer.error
        if isinstance(e, OSError):
            raise disk_error(e, root, complete_shards(root), total) from e
        raise e
    records = shard_records(root, read_manifest(root) or manifest)
    shards = [{"bytes": records[i].bytes, "sha256": records[i].sha256} for i in range(total)]
    write_manifest(root, manifest | {"complete": True, "finished": now(), "shards": shards})
    (root / JOURNAL).unlink(missing_ok=True)  # folded into the manifest
    return ActivationStore.open(root)
