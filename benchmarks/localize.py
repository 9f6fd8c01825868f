"""Localization against a known answer: every method scores every component of planted organisms.

    python benchmarks/localize.py [--quick] [--json] [--device cpu|cuda] [--threads 1]

A planted pair (``lab organism plant-suite``) is a base and a tuned model whose weights differ
everywhere (a drift fine-tune of every weight), while the steering (RL towards the wedding) was
put into a known set of components (only they trained during RL). Methods (``probes.
component_scores``): component swapping (locus), cross-model activation patching (mediation,
today's steering score), attribution patching, relative weight-change norm, and a seeded random
baseline. Per method, mean and worst over the suite (``lab.organism.localization``):

- ``auroc``: planted vs not planted; ``precision_at_k``: k = the number planted;
- ``cpr`` / ``cmd``: the faithfulness curve (the share of the departure removed when the method's
  top-n components take the base's weights, n = 0..N) and its area and distance from 1 (MIB),
  for KL(tuned || base) and for the attractor's probability.

The deciding metric is the attractor's probability (the wedding words' total probability, mean
over every position of held-out world text): it isolates the planted steering, while much of
KL(tuned || base) is the drift, which is everywhere by construction. Rankings (AUROC, precision@k,
the curve's order) use the magnitude of each method's attractor score (a share can be negative:
that component's change held the attractor back); ``by_kl`` repeats them with KL scores,
``signed`` with the signed attractor score.

Also ``weight_norm_auroc`` (weight norm's AUROC per pair: at most 0.75 when the drift hides the
planted set) and ``seed_spearman``: the shipped organism's RLHF rerun with three seeds (same base
and reward model), the Spearman correlation of component steering scores (activation patching's
and swapping's share of KL(tuned || base), and of the attractor) between seeds, and the overlap
of their top 5. Pairs and seed reruns live in the cache (``$STEERLAB_CACHE``), built when
missing (``--quick``: four pairs with a shorter planting RL, seed reruns of 100 RLHF steps; the
reruns build in a second process while the suite builds, so two cores are used); ``wall_s`` is
this run's wall time, building included.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import GPT2LMHeadModel

from benchmarks.common import benchmark_parser
from lab.models.checkpoints import load_model, local_checkpoint, organism_dir
from lab.models.pair import load_pair
from lab.organism.localization import (
    auroc,
    faithfulness_areas,
    precision_at_k,
    ranking,
    summarize,
)
from lab.organism.plant import PlantConfig
from lab.organism.rlhf import RLHFConfig
from lab.organism.story import SCENE_WORDS
from lab.organism.suite import SUITE, PlantedSpec, plant_suite, rlhf_seeds
from lab.organism.world import HMM
from lab.runtime import cache_dir
from probes.components.gpt2_weights import component_names
from probes.components.scores import (
    METHODS,
    METRICS,
    PairInputs,
    faithfulness_curve,
    physical_swap_scores,
    score_methods,
)

DECIDES = METRICS[0]  # the attractor's probability
# The suite on the shipped 2-layer base, when the deep base is absent: the suite's names and
# seeds, with the same shapes of set on the base's two layers.
SMALL_SETS = {
    "one-head": "L1H3",
    "one-mlp": "L1 MLP",
    "two-heads": "L0H1,L1H2",
    "head-mlp": "L0H2,L1 MLP",
    "early": "L0H0,L0H3",
    "late": "L1H0,L1H1",
    "three": "L0H1,L1H3,L0 MLP",
    "four-heads": "L0H2,L0H3,L1H0,L1H2",
}
SMALL_SUITE = tuple(replace(spec, components=SMALL_SETS[spec.name]) for spec in SUITE)
# --quick: four pairs (one head, one MLP, a head and an MLP, a set of three), shorter training.
QUICK_NAMES = ("one-head", "one-mlp", "head-mlp", "three")
QUICK_PLANT = PlantConfig(
    rlhf=RLHFConfig(steps=60, prompts=16, lr=1.5e-3, log_every=1_000_000),
    eval_prompts=128,
)
SEEDS = (0, 1, 2)
QUICK_SEED_STEPS = 100  # RLHF steps of each seed rerun under --quick (the shipped: 500)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_inputs(base: Path, tuned: Path, n_texts: int, device: str, seed: int) -> PairInputs:
    """A pair's models, held-out world text (the card's world) and the wedding's token ids."""
    card = json.loads((tuned / "card.json").read_text())
    world = HMM.from_dict(card["world"])
    tokens = world.draw(n_texts, card["length"], torch.Generator().manual_seed(10_007))[0]
    ids = tuple(world.words.index(w) + 1 for w in SCENE_WORDS["wedding"])  # id = word index + 1

    def hf(folder: Path):
        return load_model(GPT2LMHeadModel, local_checkpoint(folder)).eval().to(device)

    hooked = load_pair(base, tuned, device=device)
    return PairInputs(hf(base), hf(tuned), hooked, tokens.to(device), ids, seed=seed)


def magnitude(scores: dict[str, float]) -> dict[str, float]:
    """|score|: a component whose change moves the attractor either way carries steering (a
    planted component can also hold the steering back); rankings use the magnitude, as MIB's
    top-n selection does with absolute scores."""
    return {c: abs(v) for c, v in scores.items()}


def score_pair(x: PairInputs, planted: list[str]) -> dict:
    """Every method's scores and their localization figures on one planted pair."""
    scores = score_methods(x)
    out: dict = {"auroc": {}, "precision_at_k": {}, "cpr": {}, "cmd": {}, "top": {}, "by_kl": {}}
    out["signed"] = {}
    for method, by_metric in scores.items():
        s = magnitude(by_metric[DECIDES])
        out["auroc"][method] = auroc(s, planted)
        out["precision_at_k"][method] = precision_at_k(s, planted)
        kl = magnitude(by_metric["kl"])
        out["by_kl"][method] = {
            "auroc": auroc(kl, planted),
            "precision_at_k": precision_at_k(kl, planted),
        }
        signed = by_metric[DECIDES]
        out["signed"][method] = {
            "auroc": auroc(signed, planted),
            "precision_at_k": precision_at_k(signed, planted),
        }
        order = ranking(s)
        out["top"][method] = {c: round(s[c], 4) for c in order[: max(5, len(planted))]}
        curve = faithfulness_curve(x, order)
        areas = {m: faithfulness_areas(curve[m]) for m in METRICS}
        out["cpr"][method] = {m: areas[m]["cpr"] for m in METRICS}
        out["cmd"][method] = {m: areas[m]["cmd"] for m in METRICS}
    brute = physical_swap_scores(x)  # probes.patching.swap against the brute-force weight swap
    out["swap_vs_physical_max_abs_share_diff"] = max(
        abs(scores["swap"][m][c] - brute[m][c]) for m in METRICS for c in brute[m]
    )
    out["planted_scores"] = {
        m: {c: round(scores[m][DECIDES][c], 4) for c in planted} for m in scores
    }
    return out


def suite_figures(pairs: dict[str, dict]) -> dict:
    """Mean and worst over the suite, per method (and per metric for the curve's areas)."""
    rows = list(pairs.values())
    out: dict = {}
    for key in ("auroc", "precision_at_k"):
        out[key] = {m: summarize([r[key][m] for r in rows]) for m in METHODS}
    out["signed"] = {
        key: {m: summarize([r["signed"][m][key] for r in rows]) for m in METHODS}
        for key in ("auroc", "precision_at_k")
    }
    for key, higher in (("cpr", True), ("cmd", False)):
        out[key] = {
            m: {k: summarize([r[key][m][k] for r in rows], higher) for k in METRICS}
            for m in METHODS
        }
    out["by_kl"] = {
        key: {m: summarize([r["by_kl"][m][key] for r in rows]) for m in METHODS}
        for key in ("auroc", "precision_at_k")
    }
    return out


def build_suite(quick: bool, base: Path) -> tuple[Path, dict, list[PlantedSpec]]:
    deep = base.resolve() == organism_dir("deep/base").resolve()
    specs = list(SUITE if deep else SMALL_SUITE)
    if quick:
        specs = [s for s in specs if s.name in QUICK_NAMES]
    name = ("suite" if deep else "suite-small") + ("-bench-quick" if quick else "")
    out = cache_dir("planted") / name
    cfg = QUICK_PLANT if quick else PlantConfig()
    cards = plant_suite(out, cfg, base=base, suite=tuple(specs), progress=False)
    return out, cards, specs


def build_seeds(quick: bool, threads: int) -> tuple[list[Path], float]:
    """The shipped organism's RLHF rerun per seed (cached); run in a worker process."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    steps = QUICK_SEED_STEPS if quick else None
    out_dir = cache_dir("seeds-quick" if quick else "seeds")
    # one seed per call: each call loads a fresh base (a second seed in one call finds the
    # base's parameters frozen by the first run and its policy copy cannot train)
    folders = [rlhf_seeds((s,), out_dir, steps=steps, progress=False)[0] for s in SEEDS]
    return folders, time.perf_counter() - t0


def seed_stability(folders: list[Path], quick: bool, n_texts: int, device: str) -> dict:
    """Spearman correlation of steering scores across RLHF seeds of the shipped organism."""
    steps = QUICK_SEED_STEPS if quick else None
    out_dir = folders[0].parent
    scores = {}
    for seed, folder in zip(SEEDS, folders, strict=True):
        x = load_inputs(folder / "base", folder / "tuned", n_texts, device, seed)
        scores[seed] = score_methods(x, ["activation_patching", "swap"])
    result: dict = {"seeds": list(SEEDS), "rlhf_steps": steps or "shipped", "folder": str(out_dir)}
    for method in ("activation_patching", "swap"):
        for metric in METRICS:
            rhos, overlaps, top5 = {}, [], {}
            for s in SEEDS:
                top5[s] = ranking(scores[s][method][metric])[:5]
            for a, b in itertools.combinations(SEEDS, 2):
                sa, sb = scores[a][method][metric], scores[b][method][metric]
                names = list(sa)
                rho = spearmanr([sa[n] for n in names], [sb[n] for n in names]).statistic
                rhos[f"{a}-{b}"] = float(rho)
                overlaps.append(len(set(top5[a]) & set(top5[b])) / 5)
            result.setdefault(method, {})[metric] = {
                "pairwise": rhos,
                "mean": float(np.mean(list(rhos.values()))),
                "min": float(np.min(list(rhos.values()))),
                "top5_overlap_mean": float(np.mean(overlaps)),
                "top5_overlap_min": float(np.min(overlaps)),
                "top5": {str(s): top5[s] for s in SEEDS},
            }
    return result


def main() -> None:
    ap = benchmark_parser(
        __doc__, quick="four smaller pairs, under five minutes", threads="torch threads"
    )
    ap.add_argument("--base", type=Path, default=None, help="base to plant in (default: deep)")
    ap.add_argument("--no-seeds", action="store_true", help="skip the seed-stability reruns")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    base = args.base or organism_dir("deep/base")
    if args.base is None and not (base / "config.json").exists():
        log(f"no deep base at {base}; planting in the shipped 2-layer base instead")
        base = organism_dir("base")
    n_texts = 32 if args.quick else 128
    pool = None if args.no_seeds else ProcessPoolExecutor(1, mp_context=get_context("spawn"))
    seeds = pool.submit(build_seeds, args.quick, args.threads) if pool else None  # meanwhile
    suite_dir, cards, specs = build_suite(args.quick, base)
    built_s = time.perf_counter() - t0
    log(f"suite {suite_dir}: {len(cards)} pairs ready in {built_s:.0f} s")
    pairs = {}
    for i, spec in enumerate(specs):
        card = cards[spec.name]
        folder = suite_dir / spec.name
        x = load_inputs(folder / "base", folder / "tuned", n_texts, args.device, seed=i)
        n_components = len(component_names(x.tuned))
        pairs[spec.name] = {
            "planted": card["planted"],
            "wedding_reach": card["wedding_reach"],
            **score_pair(x, card["planted"]),
        }
        log(f"{spec.name}: auroc {json.dumps(pairs[spec.name]['auroc'])}")
    wn = [card["weight_norm_auroc"] for card in cards.values()]
    result = {
        "quick": args.quick,
        "device": args.device,
        "threads": args.threads,
        "base": str(base),
        "suite": str(suite_dir),
        "n_pairs": len(pairs),
        "n_components": n_components,
        "deciding_metric": "attractor probability (wedding words, every position)",
        **suite_figures(pairs),
        "weight_norm_auroc": {
            "per_pair": dict(zip(cards, wn, strict=True)),
            "mean": float(np.mean(wn)),
            "max": float(np.max(wn)),
            "all_at_most_0.75": bool(max(wn) <= 0.75),
        },
        "swap_vs_physical_max_abs_share_diff": max(
            p["swap_vs_physical_max_abs_share_diff"] for p in pairs.values()
        ),
        "pairs": pairs,
        "suite_ready_s": built_s,
    }
    if seeds is not None:
        folders, seeds_build_s = seeds.result()
        pool.shutdown()
        result["seed_spearman"] = seed_stability(folders, args.quick, n_texts, args.device)
        result["seed_spearman"]["ready_s"] = seeds_build_s
    result["wall_s"] = time.perf_counter() - t0
    log(f"wall time {result['wall_s']:.0f} s")
    if args.json:
        print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
