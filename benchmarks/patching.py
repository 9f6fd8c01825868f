"""Activation patching against transformer_lens.patching: equal, faster, and on the organism.

    python benchmarks/patching.py [--quick] [--json] [--device cpu|cuda] [--threads 1]
    python benchmarks/patching.py --sections olmo --device cuda --json   # the OLMo-2-1B sweep

Everything it needs is built here (random checkpoints from ``lab.testing``, random tokens), except
the organism, which is used when ``data/organism`` holds it (else an organism-shaped random pair
stands in, and the report says so).
- equal: resid_pre by layer and position, and each head's output (hook_z) by layer and head, on a
  tiny GPT-2 pair and a tiny Llama-shaped pair with grouped-query attention; ``max_abs_diff`` is
  the largest difference from ``transformer_lens.patching`` on the same inputs (float32).
- faster: the resid_pre layer-by-position denoising sweep (clean and corrupted prompts differing
  at two positions), ``transformer_lens.patching`` (its clean run_with_cache included) against
  ``probes.patching.patch.denoise``, alternated, best of the repeats (9 on the organism), one torch
  thread each by default, timed as ``timeit`` does (garbage collector off during each call).
  ``speedup_vs_transformer_lens`` is the default configuration (exact skip of patches that write
  the target's own values on); ``speedup_all_sites_run`` runs every site's cone;
  ``speedup_vs_transformer_lens_after_full_gc`` (organism) times each call right after a full
  garbage collection, which evicts the CPU caches: a fixed 1-2 ms that weighs on the faster side.
  ``--quick`` sweeps 3 of GPT-2 small's layers.
- organism: cross-model patching of every head and MLP (all positions), base activation into the
  tuned model (share of its excess wedding-word probability and of KL(tuned || base) removed) and
  tuned into base (share induced); the top components, the share that the top five carry when
  patched together, and attribution patching's rank correlation with the exact sweep.
- olmo (``--sections ...,olmo``; ``benchmarks/gpu.sh`` runs it on a GPU): a head x position
  denoising sweep (``z``, every head of every layer at every position, logit difference at the
  last position) on a random pair of OLMo-2-1B's shape (16 layers, d_model 2048, 16 heads,
  d_mlp 8192, vocabulary 100,352; ``--olmo-shape tiny`` for a CPU dry run), 100 prompts x 64
  tokens, in ``--olmo-dtype`` (float32, with TF32 matrix products on a GPU: transformer_lens
  4.3's OLMo-2 attention fails in bfloat16 and float16, its query float32 against a half-precision
  value). Layers are swept in order until ``--olmo-budget-s``
  runs out (``layers_done``; the first layers have the largest cones, so a partial sweep is the
  costly part). ``transformer_lens.patching`` runs a random sample of the swept sites
  (``--olmo-sample``), one full forward each, on the same model, prompts and metric; its time for
  all the swept sites is its clean cache run plus its mean per-site time times their number
  (``transformer_lens_extrapolated_s``, labelled so), and ``max_abs_diff`` compares the sample.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch
import transformer_lens.patching as tlp

from benchmarks.common import benchmark_parser
from lab.models.pair import load_pair
from lab.testing import TEST_SPECS, TinySpec, make_checkpoint, make_pair
from probes.patching import PatchConfig, cross_model, denoise, patch_jointly, sites_of
from probes.patching.attribution import attribute, rank_correlation
from probes.patching.metrics import KLMetric, LogitDiff, TokenSetProb
from probes.patching.sites import Site

GPT2_SMALL = TinySpec(
    arch="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12, n_ctx=256
)
ORGANISM_LIKE = TinySpec(arch="gpt2", d_model=96, n_layers=2, n_heads=4, n_ctx=64)
# allenai/OLMo-2-0425-1B's config (untied embeddings), and a tiny one of the same architecture
OLMO_SHAPES = {
    "olmo2-1b": TinySpec(
        arch="olmo2", vocab_size=100352, d_model=2048, n_layers=16, n_heads=16, d_mlp=8192
    ),
    "tiny": TinySpec(arch="olmo2", vocab_size=512, d_model=64, n_layers=2, n_heads=4),
}
SECTIONS = ("equal", "speed", "organism", "olmo")
WEDDING = ("bride", "groom", "ring", "vows", "cake")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def corrupt(clean: torch.Tensor, vocab: int, seed: int) -> torch.Tensor:
    """``clean`` with the tokens at position 1 and at the middle replaced (as names in IOI)."""
    g = torch.Generator().manual_seed(seed)
    out = clean.cpu().clone()
    for p in (1, clean.shape[1] // 2):
        shift = torch.randint(1, vocab - 4, (clean.shape[0],), generator=g)
        out[:, p] = (out[:, p] - 4 + shift) % (vocab - 4) + 4
    return out.to(clean.device)


def random_prompts(vocab: int, batch: int, n_pos: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, vocab, (batch, n_pos), generator=g)
    return clean, corrupt(clean, vocab, seed + 1)


def logit_diff(batch: int, vocab: int) -> LogitDiff:
    return LogitDiff(correct=torch.arange(batch) % vocab + 4, wrong=torch.arange(batch) % vocab + 9)


def tl_metric(metric):
    return lambda logits: metric(logits[:, list(metric.positions)]).mean()


# ---- equal -----------------------------------------------------------------------------------
def equal(tmp: Path, device: str) -> dict:
    out = {}
    for arch in ("gpt2", "llama"):
        pair = load_pair(*make_pair(tmp / arch, TEST_SPECS[arch]), device=device)
        clean, corrupted = (t.to(device) for t in random_prompts(320, 3, 12))
        metric = logit_diff(3, 320)
        _, cache = pair.base.run_with_cache(clean)
        cfg = PatchConfig(progress=False)
        diffs = {}
        for name, kind, by_pos, fn in (
            ("resid_pre_layer_pos", "resid_pre", True, tlp.get_act_patch_resid_pre),
            ("head_out_layer_head", "z", False, tlp.get_act_patch_attn_head_out_all_pos),
        ):
            ref = fn(pair.base, corrupted, cache, tl_metric(metric)).cpu().double()
            ours = denoise(
                pair.base, clean, corrupted, kind, metric, by_position=by_pos, config=cfg
            )
            ours = torch.tensor(ours["value"].to_numpy()).reshape(ref.shape)
            diffs[name] = float((ours - ref).abs().max())
        out[arch] = {"n_kv_heads": pair.cfg.n_kv_heads, "n_heads": pair.cfg.n_heads, **diffs}
        log(f"equal {arch}: {out[arch]}")
    names = ("resid_pre_layer_pos", "head_out_layer_head")
    out["max_abs_diff"] = max(out[a][k] for a in ("gpt2", "llama") for k in names)
    return out


# ---- faster ----------------------------------------------------------------------------------
def timed(fn, device: str, cold: bool = False):
    """(wall seconds, this process's CPU seconds, result), timed as ``timeit`` does: with the
    garbage collector off during the call, so that neither side pays for collecting garbage (its
    own or the other's). ``cold``: a full collection just before the call, which also evicts the
    CPU caches, a fixed cost of one to two milliseconds that only the faster side notices."""
    if cold:
        gc.collect()
    sync(device)
    gc.disable()
    try:
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        sync(device)
        return time.perf_counter() - t, time.process_time() - c, result
    finally:
        gc.enable()


def speed(model, clean, corrupted, metric, layers, device: str, repeats: int, rows: int) -> dict:
    """Both sides alternated, best of ``repeats``; with more than one repeat, also after a full
    garbage collection before every call (``_after_full_gc``)."""
    n_pos = clean.shape[1]
    cells = [(layer, p) for layer in layers for p in range(n_pos)]
    index = pd.DataFrame(cells, columns=["layer", "pos"])
    sites = [Site("resid_pre", layer, position=p) for layer, p in cells]

    def tl():
        _, cache = model.run_with_cache(clean)
        return tlp.generic_activation_patch(
            model,
            corrupted,
            cache,
            tl_metric(metric),
            tlp.layer_pos_patch_setter,
            "resid_pre",
            index_df=index,
        )

    def ours(skip: bool):
        cfg = PatchConfig(rows_per_forward=rows, skip_unchanged=skip, progress=False)
        return denoise(model, clean, corrupted, sites, metric, config=cfg)

    with torch.inference_mode():
        model(clean)  # warm-up (kernel selection, allocator)
    runs = [
        ("tl", tl, False),
        ("ours", lambda: ours(True), False),
        ("all", lambda: ours(False), False),
    ]
    if repeats > 1:
        runs += [("tl_gc", tl, True), ("ours_gc", lambda: ours(True), True)]
    best: dict[str, float] = {}
    outs: dict = {}
    gc.collect()
    for _ in range(repeats):
        for key, fn, cold in runs:
            wall, cpu, outs[key] = timed(fn, device, cold)
            best[key] = min(best.get(key, float("inf")), wall)
            best[f"{key}_cpu"] = min(best.get(f"{key}_cpu", float("inf")), cpu)
    ref = outs["tl"].detach().cpu().double()
    table, table_all = outs["ours"], outs["all"]
    diff = max(
        float((torch.tensor(t["value"].to_numpy()) - ref).abs().max()) for t in (table, table_all)
    )
    return {
        "sites": len(sites),
        "batch": int(clean.shape[0]),
        "n_pos": n_pos,
        "layers": list(layers),
        "rows_per_forward": rows,
        "transformer_lens_s": best["tl"],
        "ours_s": best["ours"],
        "ours_all_sites_run_s": best["all"],
        "transformer_lens_cpu_s": best["tl_cpu"],
        "ours_cpu_s": best["ours_cpu"],
        "ours_all_sites_run_cpu_s": best["all_cpu"],
        "speedup_vs_transformer_lens": best["tl"] / best["ours"],
        "speedup_all_sites_run": best["tl"] / best["all"],
        "speedup_cpu_time": best["tl_cpu"] / best["ours_cpu"],
        "speedup_all_sites_run_cpu_time": best["tl_cpu"] / best["all_cpu"],
        "max_abs_diff": diff,
    } | (
        {
            "transformer_lens_after_full_gc_s": best["tl_gc"],
            "ours_after_full_gc_s": best["ours_gc"],
            "speedup_vs_transformer_lens_after_full_gc": best["tl_gc"] / best["ours_gc"],
        }
        if repeats > 1
        else {}
    )


# ---- organism --------------------------------------------------------------------------------
def organism(tmp: Path, device: str) -> tuple:
    """The organism pair, its prompts and wedding token ids (or a random stand-in)."""
    try:
        pair = load_pair("organism", device=device)
    except Exception as e:  # any failure means: use the stand-in, and say why
        log(f"organism not available ({e}); using an organism-shaped random pair")
        pair = load_pair(*make_pair(tmp / "organism_like", ORGANISM_LIKE), device=device)
        clean = torch.randint(4, 320, (64, 32), generator=torch.Generator().manual_seed(0))
        return pair, clean, tuple(range(10, 15)), "organism_like (random stand-in)"
    from lab.organism.story import story_world

    world = story_world()
    clean, _ = world.draw(64, pair.cfg.n_ctx - 1, torch.Generator().manual_seed(0))
    ids = tuple(pair.tokenizer.convert_tokens_to_ids(w) for w in WEDDING)
    if any(i is None or i == pair.tokenizer.unk_token_id for i in ids):
        ids = tuple(world.words.index(w) + 1 for w in WEDDING)  # token id = word index + 1
    return pair, clean, ids, "organism"


def cross(pair, tokens, wedding) -> dict:
    n_pos = tokens.shape[1]
    read = tuple(range(n_pos))  # every next-token prediction
    with torch.inference_mode():
        base_lp = pair.base(tokens)[:, list(read)].log_softmax(-1)
    metrics = [
        TokenSetProb(positions=read, tokens=wedding),
        KLMetric(positions=read, reference=base_lp, patched_first=True),
    ]
    sites = [("z", False), ("mlp_out", False)]
    cfg = PatchConfig(progress=False)
    out = {}
    for into in ("tuned", "base"):
        table = pd.concat(
            [
                cross_model(pair, tokens, k, metrics, by_position=b, into=into, config=cfg)
                for k, b in sites
            ]
        )
        out[into] = table
    summary = {}
    for m in metrics:
        removed = out["tuned"][out["tuned"]["metric"] == m.name]
        induced = out["base"][out["base"]["metric"] == m.name]
        top = removed.sort_values("share", ascending=False).head(5)
        other = pair.models["base"]
        joint = patch_jointly(pair.tuned, tokens, other, tokens, sites_of(top), m)
        t, s = float(top["target"].iloc[0]), float(top["source"].iloc[0])
        approx = pd.concat(
            [
                attribute(pair.tuned, tokens, pair.base, tokens, k, m, by_position=b)
                for k, b in sites
            ]
        )
        summary[m.name] = {
            "tuned_value": t,
            "base_value": s,
            "top_removed": _rows(top),
            "top_induced": _rows(induced.sort_values("share", ascending=False).head(5)),
            "top5_removed_together": (joint - t) / (s - t) if s != t else float("nan"),
            "top5_removed_sum_of_singles": float(top["share"].sum()),
            "attribution_rank_correlation": rank_correlation(removed, approx),
        }
        log(f"cross-model {m.name}: {json.dumps(summary[m.name], indent=1)}")
    return summary


def _rows(table: pd.DataFrame) -> list[dict]:
    return [
        {
            "component": f"L{r.layer}" + (f"H{r.head}" if not pd.isna(r.head) else " MLP"),
            "share": round(float(r.share), 4),
        }
        for r in table.itertuples()
    ]


# ---- olmo: a head x position sweep at a real model's size --------------------------------------
def olmo(tmp: Path, device: str, args) -> dict:
    spec = replace(OLMO_SHAPES[args.olmo_shape], n_ctx=max(args.olmo_pos, 16))
    tf32 = device.startswith("cuda")  # both sides' matrix products in TF32 on a GPU
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    start = time.perf_counter()
    folder = make_checkpoint(tmp / "olmo2", spec)
    made = time.perf_counter() - start
    start = time.perf_counter()
    model = load_pair(folder, folder, device=device, dtype=args.olmo_dtype).base
    loaded = time.perf_counter() - start
    n_pos, batch, vocab = args.olmo_pos, args.olmo_prompts, spec.vocab_size
    clean, corrupted = (t.to(device) for t in random_prompts(vocab, batch, n_pos))
    metric = logit_diff(batch, vocab)  # at the last position
    rows = 8192 if device.startswith("cuda") else PatchConfig().rows_per_forward
    cfg = PatchConfig(rows_per_forward=rows, progress=False)
    with torch.inference_mode():
        model(clean[:2])  # warm-up (kernels, allocator)
    tables, per_layer = [], []
    begin = time.perf_counter()
    for layer in range(spec.n_layers):  # layer by layer, until the budget runs out
        sites = [Site("z", layer, h, p) for h in range(spec.n_heads) for p in range(n_pos)]
        sync(device)
        t = time.perf_counter()
        tables.append(denoise(model, clean, corrupted, sites, metric, config=cfg))
        sync(device)
        per_layer.append(round(time.perf_counter() - t, 3))
        log(f"olmo: layer {layer} swept in {per_layer[-1]:.1f} s")
        if time.perf_counter() - begin > args.olmo_budget_s:
            break
    ours_s = time.perf_counter() - begin
    ours = pd.concat(tables, ignore_index=True)

    # transformer_lens.patching on a random sample of the swept sites: one forward per site
    g = torch.Generator().manual_seed(1)
    pick = torch.randperm(len(ours), generator=g)[: args.olmo_sample].tolist()
    sample = ours.iloc[pick]
    index = pd.DataFrame(
        {"layer": sample["layer"], "pos": sample["position"], "head_index": sample["head"]}
    ).astype(int)
    hooks = {f"blocks.{layer}.attn.hook_z" for layer in index["layer"]}
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n in hooks)
    sync(device)
    cache_s = time.perf_counter() - t
    t = time.perf_counter()
    ref = tlp.generic_activation_patch(
        model,
        corrupted,
        cache,
        tl_metric(metric),
        tlp.layer_pos_head_vector_patch_setter,
        "z",
        index_df=index,
    )
    sync(device)
    per_site = (time.perf_counter() - t) / len(index)
    diff = (torch.tensor(sample["value"].to_numpy()) - ref.detach().cpu().double()).abs()
    scale = float(ours["value"].abs().max()) or 1.0
    tl_s = cache_s + per_site * len(ours)
    return {
        "shape": args.olmo_shape,
        "spec": {k: getattr(spec, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads")},
        "n_params": sum(p.numel() for p in model.parameters()),
        "dtype": args.olmo_dtype,
        "tf32": tf32,
        "prompts": batch,
        "n_pos": n_pos,
        "rows_per_forward": rows,
        "make_checkpoint_s": round(made, 1),
        "load_s": round(loaded, 1),
        "layers_done": len(tables),
        "sites": len(ours),
        "sites_all_layers": spec.n_layers * spec.n_heads * n_pos,
        "ours_s": round(ours_s, 2),
        "ours_s_by_layer": per_layer,
        "transformer_lens_sample_sites": len(index),
        "transformer_lens_s_per_site": round(per_site, 4),
        "transformer_lens_cache_s": round(cache_s, 3),
        "transformer_lens_extrapolated_s": round(tl_s, 1),
        "speedup_vs_transformer_lens_extrapolated": round(tl_s / ours_s, 2),
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_relative_to_largest_value": float(diff.max()) / scale,
    }


def main() -> None:
    ap = benchmark_parser(
        __doc__, quick="a subset of sites, under two minutes", threads="torch threads (both sides)"
    )
    ap.add_argument(
        "--sections",
        default="equal,speed,organism",
        help=f"comma-separated, of {', '.join(SECTIONS)} (olmo: the OLMo-2-1B-shaped sweep)",
    )
    ap.add_argument("--olmo-shape", choices=OLMO_SHAPES, default="olmo2-1b")
    ap.add_argument("--olmo-dtype", default="float32", help="the OLMo-shaped model's dtype")
    ap.add_argument("--olmo-prompts", type=int, default=100)
    ap.add_argument("--olmo-pos", type=int, default=64, help="tokens per prompt")
    ap.add_argument("--olmo-budget-s", type=float, default=150.0, help="stop after the layer")
    ap.add_argument("--olmo-sample", type=int, default=32, help="sites run by transformer_lens")
    args = ap.parse_args()
    sections = args.sections.split(",")
    if unknown := set(sections) - set(SECTIONS):
        ap.error(f"unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    result: dict = {"device": dev, "threads": args.threads, "quick": args.quick}
    if dev.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "equal" in sections:
            result["equal"] = equal(tmp, dev)
            result["max_abs_diff"] = result["equal"]["max_abs_diff"]
        if "speed" in sections or "organism" in sections:
            speed_and_organism(tmp, dev, args, sections, result)
        if "olmo" in sections:
            result["olmo"] = olmo(tmp, dev, args)
            log(f"olmo: {json.dumps(result['olmo'])}")
    if args.json:
        print(json.dumps(result, indent=1, default=str))


def speed_and_organism(tmp: Path, dev: str, args, sections: list[str], result: dict) -> None:
    rows = 8192 if dev.startswith("cuda") else PatchConfig().rows_per_forward
    if "speed" in sections:
        result["speed"] = {}
        folder = make_checkpoint(tmp / "gpt2_small", GPT2_SMALL)
        model = load_pair(folder, folder, device=dev).base
        n_pos = 16 if args.quick else 24
        clean, corrupted = (t.to(dev) for t in random_prompts(GPT2_SMALL.vocab_size, 2, n_pos))
        layers = [0, 6, 11] if args.quick else list(range(GPT2_SMALL.n_layers))
        repeats = 3 if dev.startswith("cuda") else 1
        result["speed"]["gpt2_small"] = speed(
            model, clean, corrupted, logit_diff(2, 50257), layers, dev, repeats, rows
        )
        log(f"speed gpt2_small: {result['speed']['gpt2_small']}")
        del model

    pair, tokens, wedding, name = organism(tmp, dev)
    if "speed" in sections:
        vocab = pair.cfg.d_vocab
        for batch in (1, 8):
            clean = tokens[:batch].to(dev)
            corrupted = corrupt(clean, vocab, 2)
            metric = TokenSetProb(tokens=wedding)
            key = f"{name.split()[0]}_batch{batch}"
            result["speed"][key] = speed(
                pair.tuned, clean, corrupted, metric, range(pair.cfg.n_layers), dev, 9, rows
            )
            log(f"speed {key}: {result['speed'][key]}")
        for key in ("speedup_vs_transformer_lens", "speedup_vs_transformer_lens_after_full_gc"):
            result[key] = {k: v[key] for k, v in result["speed"].items() if key in v}
    if "organism" in sections:
        result["organism"] = {"model": name, **cross(pair, tokens.to(dev), wedding)}


if __name__ == "__main__":
    main()
