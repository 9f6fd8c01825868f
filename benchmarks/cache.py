"""Paired activation caching, measured: correctness, overhead, bounded memory, kill -9 + resume.

    python benchmarks/cache.py [--quick] [--json] [--device cpu|cuda] [--workdir DIR]

Everything it needs is built here: random tiny checkpoints (``lab.testing``) and random tokens.
- correctness: a tiny GPT-2 and a tiny Llama-shaped pair (grouped-query attention); the store's
  rows equal ``run_with_cache`` on the same padded batches (left and right padding), for both
  models: ``max_abs_diff`` in float32, ``max_abs_diff_half`` for float16/bfloat16 stores against
  the reference cast to that dtype (both 0: the store holds exactly what the model computed).
- overhead: all resid_post of both models of a GPT-2-small-shaped random pair, against two plain
  HF forwards (default attention, logits included) on the same batches, alternated in one run;
  the best of several repeats of each. ``overhead_ratio`` = cache time / HF time;
  ``overhead_ratio_vs_trunk`` compares with two forwards of the HF trunks (``base_model``: no
  unembedding either), so it is the price of hooking (TransformerBridge over eager attention, as
  ``load_pair`` loads it), copying and writing; ``tokens_per_s`` = dataset tokens cached per
  second (each through both models).
- memory: a fresh process caches ``activation_gib_small`` then ``activation_gib`` of
  activations (2 then 20 GiB; quick: 0.1 then 1 GiB) and reports its peak RSS after each; the
  bound is the RSS after loading plus (queue_depth + 2) shards plus 256 MiB, which does not
  depend on the dataset's size.
- kill: a subprocess caching into a store is killed with SIGKILL mid-run; ``resume`` then
  finishes it, and every tensor equals an uninterrupted run's (``kill_resume_equal``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import print_figures
from lab.activations.cache import cache_pair
from lab.activations.store import ActivationStore
from lab.datasets.dataset import Dataset
from lab.models.checkpoints import load_model, local_checkpoint
from lab.models.pair import load_pair
from lab.testing import TEST_SPECS, TinySpec, make_pair

GPT2_SMALL = TinySpec(
    arch="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12, n_ctx=1024
)
WIDE = TinySpec(arch="gpt2", d_model=256, n_layers=4, n_heads=4, n_ctx=256)  # bytes, not FLOPs
WIDE_HOOKS = "resid_pre,resid_mid,resid_post,mlp.hook_post,mlp_out,attn_out,attn.hook_z"
QUEUE_DEPTH = 2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_dataset(n: int, lo: int, hi: int, vocab: int, seed: int = 0) -> Dataset:
    """``n`` random sequences with lengths in [lo, hi] (equal lo and hi: no padding)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    return Dataset.from_tokens([torch.randint(4, vocab, (int(k),), generator=g) for k in lengths])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- correctness ---------------------------------------------------------------------------
def correctness(tmp: Path, device: str) -> dict:
    worst = {"float32": 0.0, "half": 0.0}
    hooks = "resid_post,attn.hook_z,mlp_out,hook_embed"
    for arch in ("gpt2", "llama"):
        pair = load_pair(*make_pair(tmp / arch, TEST_SPECS[arch]), device=device)
        ds = random_dataset(13, 3, 40, 320)
        for side in ("right", "left"):
            for dtype in ("float32", "float16", "bfloat16"):
                out = tmp / f"store-{arch}-{side}-{dtype}"
                store = cache_pair(
                    pair, ds, hooks, out=out, batch_size=4, padding_side=side, dtype=dtype,
                    progress=False,
                )  # fmt: skip
                row = 0
                for b in ds.batches(4, side):
                    n = b.n_rows
                    for role, model in pair.models.items():
                        kw = {k: v.to(device) for k, v in b.forward_kwargs().items()}
                        _, ref = model.run_with_cache(
                            b.tokens.to(device), names_filter=store.hooks, **kw
                        )
                        for h in store.hooks:
                            want = ref[h][b.keep.to(device)].to(store.dtype).float().cpu()
                            got = store.read(role, h, row, row + n).float()
                            key = "float32" if dtype == "float32" else "half"
                            worst[key] = max(worst[key], (want - got).abs().max().item())
                    row += n
                shutil.rmtree(out)
        log(f"correctness {arch}: max abs diff {worst}")
    return {"max_abs_diff": worst["float32"], "max_abs_diff_half": worst["half"]}


# ---- overhead ------------------------------------------------------------------------------
def overhead(tmp: Path, device: str, quick: bool) -> dict:
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    dirs = make_pair(tmp / "gpt2-small", GPT2_SMALL, perturb=0.01)
    pair = load_pair(*dirs, device=device)
    hf = [load_model(AutoModelForCausalLM, local_checkpoint(d)).to(device).eval() for d in dirs]
    log(f"overhead: GPT-2-small-shaped pair built and loaded in {time.perf_counter() - t0:.0f}s")
    cuda = device.startswith("cuda")
    n_seq, seq_len, bs, repeats = (4, 64, 4, 2) if quick else (16, 128, 4, 3)
    if cuda:
        n_seq, seq_len, bs, repeats = (64, 512, 16, 3) if quick else (256, 1024, 16, 3)
    ds = random_dataset(n_seq, seq_len, seq_len, GPT2_SMALL.vocab_size, seed=1)
    batches = [b.tokens.to(device) for b in ds.batches(bs)]

    def run_hf(trunk: bool = False) -> float:
        """Two HF forwards per batch: the LM (logits) or its trunk (no unembedding)."""
        models = [m.base_model for m in hf] if trunk else hf
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            for tokens in batches:
                for model in models:
                    model(input_ids=tokens)
        sync(device)
        return time.perf_counter() - start

    def run_cache(i: int) -> float:
        out = tmp / f"overhead-{i}"
        start = time.perf_counter()
        cache_pair(pair, ds, "resid_post", out=out, batch_size=bs, progress=False)
        elapsed = time.perf_counter() - start
        shutil.rmtree(out)
        return elapsed

    run_hf()  # warm-up of both paths
    run_cache(-1)
    t_hf, t_cache, t_trunk = [], [], []
    for i in range(repeats):
        t_hf.append(run_hf())
        t_cache.append(run_cache(i))
        t_trunk.append(run_hf(trunk=True))
        log(f"overhead {i}: HF {t_hf[-1]:.2f}s, cache {t_cache[-1]:.2f}s, trunk {t_trunk[-1]:.2f}s")
    shutil.rmtree(tmp / "gpt2-small")
    return {
        "overhead_ratio": round(min(t_cache) / min(t_hf), 4),
        "overhead_ratio_median": round(
            sorted(t_cache)[repeats // 2] / sorted(t_hf)[repeats // 2], 4
        ),
        "overhead_ratio_vs_trunk": round(min(t_cache) / min(t_trunk), 4),
        "hf_two_forwards_s": round(min(t_hf), 3),
        "hf_two_trunk_forwards_s": round(min(t_trunk), 3),
        "cache_s": round(min(t_cache), 3),
        "tokens_per_s": round(ds.n_tokens / min(t_cache), 1),
        "overhead_tokens": ds.n_tokens,
    }


# ---- memory --------------------------------------------------------------------------------
def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(pair_root: str, out: str, sizes: str, device: str) -> None:
    """In a fresh process: cache each size (sequences of 128 tokens) in turn; print JSON.

    The peak RSS (VmHWM: this process's own; ru_maxrss would include the parent's) is read
    after each size, so a peak that stays put from the small run to the large one is flat.
    """
    pair = load_pair(f"{pair_root}/base", f"{pair_root}/tuned", device=device)
    report: dict = {"base_rss_mb": _proc_status_mb("VmRSS"), "runs": []}
    for i, n_seq in enumerate(map(int, sizes.split(","))):
        ds = random_dataset(n_seq, 128, 128, WIDE.vocab_size, seed=2)
        where = Path(f"{out}-{i}")
        store = cache_pair(pair, ds, WIDE_HOOKS, out=where, batch_size=8, progress=False,
                           queue_depth=QUEUE_DEPTH)  # fmt: skip
        shard = max(p.stat().st_size for p in where.glob("shard-*.safetensors"))
        run = {"bytes": store.nbytes(), "shard_mb": shard / 2**20}
        report["runs"].append(run | {"peak_rss_mb": _proc_status_mb("VmHWM")})
        shutil.rmtree(where)
    print(json.dumps(report))


def memory(tmp: Path, device: str, quick: bool) -> dict:
    root = tmp / "wide"
    make_pair(root, WIDE)
    per_seq = 2 * 128 * 4 * (4 * (256 * 6 + 1024))  # bytes per sequence: 2 models x 4 layers
    gib = 1 if quick else 20
    sizes = ",".join(str(int(scale * gib * 2**30 / per_seq)) for scale in (0.1, 1.0))
    cmd = [sys.executable, __file__, "--memory-child", str(root), str(tmp / "mem"), sizes, device]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{res.stderr[-3000:]}")
    report = json.loads(res.stdout.strip().splitlines()[-1])
    log(f"memory: {report}")
    small, big = report["runs"]
    bound = report["base_rss_mb"] + (QUEUE_DEPTH + 2) * big["shard_mb"] + 256
    return {
        "peak_rss_mb": round(big["peak_rss_mb"], 1),
        "peak_rss_after_small_mb": round(small["peak_rss_mb"], 1),
        "rss_bound_mb": round(bound, 1),
        "rss_after_load_mb": round(report["base_rss_mb"], 1),
        "shard_mb": round(big["shard_mb"], 1),
        "activation_gib": round(big["bytes"] / 2**30, 2),
        "activation_gib_small": round(small["bytes"] / 2**30, 2),
        "rss_within_bound": big["peak_rss_mb"] <= bound,
    }


# ---- kill -9 and resume --------------------------------------------------------------------
KILL_HOOKS = "resid_post,attn.hook_z"
KILL_SEQS = 300  # 75 shards of 4 sequences; the kill comes after 15


def kill_child(pair_root: str, out: str, device: str) -> None:
    pair = load_pair(f"{pair_root}/base", f"{pair_root}/tuned", device=device)
    ds = random_dataset(KILL_SEQS, 8, 32, 320, seed=3)
    cache_pair(pair, ds, KILL_HOOKS, out=out, batch_size=4, progress=False)


def _tensors(store: ActivationStore) -> dict[str, torch.Tensor]:
    out = {f"{m}/{h}": store.read(m, h) for m in store.models for h in store.hooks}
    return out | {"seq": store.sequence_ids(), "pos": store.positions()}


def kill_resume(tmp: Path, device: str) -> dict:
    root = tmp / "gpt2"  # the correctness pair, made here when that section was skipped
    if not (root / "base").is_dir():
        make_pair(root, TEST_SPECS["gpt2"])
    out = tmp / "killed"
    cmd = [sys.executable, __file__, "--kill-child", str(root), str(out), device]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = 0
    while proc.poll() is None and shards < 15:
        time.sleep(0.005)
        shards = len(list(out.glob("shard-*.safetensors"))) if out.is_dir() else 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = ActivationStore.open(out)
    at_kill = partial.n_shards
    log(f"kill: SIGKILL at {at_kill} of {partial.manifest['n_shards']} shards; {partial!r}")
    pair = load_pair(f"{root}/base", f"{root}/tuned", device=device)
    ds = random_dataset(KILL_SEQS, 8, 32, 320, seed=3)
    resumed = cache_pair(pair, ds, KILL_HOOKS, out=out, batch_size=4, resume=True, progress=False)
    ref = cache_pair(pair, ds, KILL_HOOKS, out=tmp / "uninterrupted", batch_size=4, progress=False)
    a, b = _tensors(resumed), _tensors(ref)
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {
        "kill_resume_equal": bool(equal and resumed.complete),
        "shards_at_kill": at_kill,
        "shards_total": resumed.n_shards,
        "partial_store_opened": True,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: under two minutes on CPU")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--skip", default="", help="sections to skip: correctness,overhead,memory,kill")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--kill-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from lab.runtime import configure_threads

    configure_threads(args.threads)
    if args.memory_child:
        return memory_child(*args.memory_child)
    if args.kill_child:
        return kill_child(*args.kill_child)
    t0 = time.perf_counter()
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="steerlab-bench-cache-"))
    tmp.mkdir(parents=True, exist_ok=True)
    figures: dict = {"device": args.device, "quick": args.quick, "threads": torch.get_num_threads()}
    if args.device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name()
    skip = set(args.skip.split(","))
    try:
        sections = (
            ("correctness", lambda: correctness(tmp, args.device)),
            ("overhead", lambda: overhead(tmp, args.device, args.quick)),
            ("memory", lambda: memory(tmp, args.device, args.quick)),
            ("kill", lambda: kill_resume(tmp, args.device)),
        )
        for name, run in sections:
            if name not in skip:
                start = time.perf_counter()
                figures |= run()
                figures[f"{name}_s"] = round(time.perf_counter() - start, 1)
    finally:
        if args.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    print_figures(figures, args.json, width=24)


if __name__ == "__main__":
    main()
