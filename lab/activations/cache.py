"""Paired activation caching: base and tuned on the same batches, streamed to an on-disk store.

For each batch, both models run with forward hooks on the requested hook points (added in a
context manager, always removed). Each hook gathers the kept rows (real, selected tokens) on the
device, casts them to the storage dtype and copies them into a host buffer (pinned on CUDA,
asynchronous); after the last requested hook it raises a private exception, so nothing after it
runs (no final norm or unembedding unless asked for). A writer thread turns filled buffers into
shards while the next batch computes. A fixed pool of buffers bounds memory: when the disk falls
behind, compute waits for a free buffer, so memory depends on the batch, never on the dataset.

Every option is checked before anything is written (a refused run leaves no manifest behind).
The writer records each shard's size and SHA-256 as it writes it (``lab.activations.store``); a
resume checks
every present shard against its record and recomputes the missing and the damaged ones. Ctrl-C
stops after the shards already computed are written and raises ``CacheInterrupted`` (a
``KeyboardInterrupt``) saying what was kept.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

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
from lab.activations.hooks import HookPlan, plan_hooks
from lab.activations.shards import ShardRecord, file_sha256, write_shard
from lab.activations.store import (
    FORMAT,
    JOURNAL,
    ActivationStore,
    append_record,
    complete_shards,
    identity_diff,
    model_location,
    read_manifest,
    scan_shards,
    shard_path,
    shard_records,
    write_manifest,
)
from lab.datasets.dataset import Batch, Dataset, Padding
from lab.errors import LabError
from lab.runtime import parse_device, resolve_dtype

__all__ = ["CacheInterrupted", "cache_pair", "check_options", "weights_fingerprint"]

_PACKAGES = ("torch", "transformers", "transformer-lens", "safetensors", "steerlab")


class _Stop(Exception):
    """Raised by the last requested hook: the rest of the forward is not needed."""


@dataclass(frozen=True)
class _Job:
    index: int  # shard index (= batch index)
    slot: dict[str, Tensor]  # host buffers "model/hook" -> [max_rows, ...]
    rows: int  # rows filled in each buffer
    extra: dict[str, Tensor]  # seq, pos and targets of the rows (CPU)
    done: Any  # CUDA event to wait on before reading the buffers, or None


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def weights_fingerprint(model: Any) -> str:
    """A cheap hash of the weights: the first and last values of every parameter."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        edge = torch.cat([flat[:8], flat[-8:]]).float().cpu()
        h.update(name.encode() + edge.numpy().tobytes())
    return h.hexdigest()[:16]


def _manifest(pair, dataset: Dataset, plan: HookPlan, dtype, batch_size, padding_side) -> dict:
    example = dataset.batch(0, 1)
    targets = {
        k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape[1:])}
        for k, t in example.targets.items()
    }
    return {
        "format": FORMAT,
        "models": {
            role: {
                "source": pair.sources.get(role, role),
                "location": model_location(pair.sources.get(role, role)),
                "fingerprint": weights_fingerprint(m),
            }
            for role, m in pair.models.items()
        },
        "hooks": list(plan.names),
        "shapes": {h: list(s) for h, s in plan.shapes.items()},
        "dtype": str(dtype).removeprefix("torch."),
        "dataset": {
            "name": dataset.name,
            "hash": dataset.fingerprint(),
            "n_sequences": len(dataset),
            "n_tokens": dataset.n_tokens,
        },
        "batch_size": batch_size,
        "padding_side": padding_side,
        "n_shards": -(-len(dataset) // batch_size),
        "targets": targets,
        "pair": {"architecture": pair.cfg.architecture, "n_layers": pair.cfg.n_layers},
        "versions": _versions(),
        "created": _now(),
        "complete": False,
    }


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


def _host_slot(plan: HookPlan, roles, max_rows: int, dtype, pin: bool) -> dict[str, Tensor]:
    return {
        f"{role}/{h}": torch.empty((max_rows, *plan.shapes[h]), dtype=dtype, pin_memory=pin)
        for role in roles
        for h in plan.names
    }


class _Capture:
    """Per-batch target of the hooks: which rows to keep and the host buffers to fill."""

    def __init__(self, plan: HookPlan, dtype: torch.dtype) -> None:
        self.plan, self.dtype = plan, dtype
        self.index: Tensor | None = None  # kept rows of the flattened (batch * pos) activation
        self.slot: dict[str, Tensor] = {}  # "model/hook" -> host buffer of this batch

    def hook(self, role: str, name: str):
        key, last = f"{role}/{name}", name == self.plan.last

        def fn(act: Any, *, hook: Any) -> Any:
            t = (act[0] if isinstance(act, tuple) else act).detach().flatten(0, 1)
            buf = self.slot[key][: self.index.shape[0]]
            if t.device == buf.device and t.dtype == buf.dtype:  # CPU: gather straight in
                torch.index_select(t, 0, self.index, out=buf)
            else:  # gather on the device, then one (asynchronous) copy to the host
                buf.copy_(t.index_select(0, self.index).to(self.dtype), non_blocking=True)
            if last:
                raise _Stop
            return act

        return fn

    @contextmanager
    def attached(self, models: dict[str, Any]):
        """The hooks on every model for the whole run, removed on exit whatever happens."""
        with ExitStack() as stack:
            for role, model in models.items():
                hooks = [(h, self.hook(role, h)) for h in self.plan.names]
                stack.enter_context(model.hooks(fwd_hooks=hooks))
            yield self


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
    pair: Any,
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
    manifest = _manifest(pair, dataset, plan, dtype, batch_size, padding_side)
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
        pool.put(_host_slot(plan, pair.models, max_rows, dtype, pin=cuda))
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
        with torch.inference_mode(), _Capture(plan, dtype).attached(pair.models) as capture:
            for i in todo:
                batch = dataset.batch(i * batch_size, (i + 1) * batch_size, padding_side)
                slot = pool.get()
                if writer.error is not None:
                    pool.put(slot)
                    break
                _run_batch(pair, capture, batch, slot)
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
    write_manifest(root, manifest | {"complete": True, "finished": _now(), "shards": shards})
    (root / JOURNAL).unlink(missing_ok=True)  # folded into the manifest
    return ActivationStore.open(root)


def _run_batch(pair: Any, capture: _Capture, batch: Batch, slot: dict) -> None:
    device = pair.device
    tokens = batch.tokens.to(device, non_blocking=True)
    capture.index = batch.keep.reshape(-1).nonzero().squeeze(1).to(device, non_blocking=True)
    capture.slot = slot
    kwargs = {k: v.to(device, non_blocking=True) for k, v in batch.forward_kwargs().items()}
    for model in pair.models.values():
        with suppress(_Stop):
            model(tokens, return_type=None, **kwargs)
