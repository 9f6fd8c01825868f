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

``--explain`` adds, per pair where swapping's precision@k misses on the attractor, why
(``explain``, ``explain_pair``): each component in swapping's top k that is not planted (an
intruder) and each planted one, with its swap share of the tuned model's attractor departure,
its relative weight change, and the share the same swap moves in the *drift* model (before any
RL; the drift's own effect, in units of the tuned model's departure); the drift model's own share
of the departure; the share removed by swapping all planted components together against the sum
of their single shares (redundancy when the joint share is well above the sum); and precision@k
of swapping ranked by attractor specificity (|attractor share| / |KL share|). Beside probes'
methods the benchmark scores ``swap_into_base``: component swapping the other way, the share of
the departure the base shows with one tuned component (sufficiency; ``swap`` is necessity).
``--texts tuned`` reads every metric on the tuned model's own continuations of world prompts
instead of world text; ``--jobs N`` scores N pairs at once in worker processes.
"""

from __future__ import annotations

import argparse
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
from lab.models.outputs import model_logprobs
from lab.models.pair import load_pair
from lab.organism.localization import (
    auroc,
    faithfulness_areas,
    precision_at_k,
    ranking,
    summarize,
)
from lab.organism.plant import PlantConfig
from lab.organism.rlhf import RLHFConfig, sample_continuations
from lab.organism.story import SCENE_WORDS
from lab.organism.suite import SUITE, PlantedSpec, plant_suite, rlhf_seeds
from lab.organism.world import HMM
from lab.runtime import cache_dir
from probes.components.classify import component_name
from probes.components.gpt2_weights import swap_components
from probes.components.scores import (
    METHODS,
    METRICS,
    PairInputs,
    departure_values,
    faithfulness_curve,
    physical_swap_scores,
    score_methods,
)
from probes.patching.metrics import KLMetric, TokenSetProb
from probes.patching.swap import SwapConfig
from probes.patching.swap import swap_components as swap_table
from probes.patching.table import sites_of

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


def world_texts(world: HMM, tuned: GPT2LMHeadModel, card: dict, n: int) -> torch.Tensor:
    """Held-out world text (the card's world), every position scored."""
    return world.draw(n, card["length"], torch.Generator().manual_seed(10_007))[0]


def tuned_texts(world: HMM, tuned: GPT2LMHeadModel, card: dict, n: int) -> torch.Tensor:
    """The tuned model's own continuations of held-out world prompts, where the steering acts
    (the distribution RL trained on): the attractor's departure there is large."""
    g = torch.Generator().manual_seed(10_007)
    prompts = world.draw(n, card["prompt_words"], g)[0]
    return sample_continuations(tuned, prompts, card["length"], g)


TEXTS = {"world": world_texts, "tuned": tuned_texts}  # --texts: what every metric is read on


def load_inputs(
    base: Path, tuned: Path, n_texts: int, device: str, seed: int, texts: str = "world"
) -> PairInputs:
    """A pair's models, the texts to score on (``TEXTS``) and the wedding's token ids."""
    card = json.loads((tuned / "card.json").read_text())
    world = HMM.from_dict(card["world"])
    ids = tuple(world.words.index(w) + 1 for w in SCENE_WORDS["wedding"])  # id = word index + 1

    def hf(folder: Path):
        return load_model(GPT2LMHeadModel, local_checkpoint(folder)).eval().to(device)

    tokens = TEXTS[texts](world, hf(tuned).cpu(), card, n_texts)
    hooked = load_pair(base, tuned, device=device)
    return PairInputs(hf(base), hf(tuned), hooked, tokens.to(device), ids, seed=seed)


def magnitude(scores: dict[str, float]) -> dict[str, float]:
    """|score|: a component whose change moves the attractor either way carries steering (a
    planted component can also hold the steering back); rankings use the magnitude, as MIB's
    top-n selection does with absolute scores."""
    return {c: abs(v) for c, v in scores.items()}


def swap_into_base_scores(x: PairInputs) -> dict:
    """Component swapping the other way (sufficiency): the share of the tuned model's departure
    that the *base* shows when the one component takes the tuned model's weights,
    ``(m(base with c from tuned) - m(base)) / (m(tuned) - m(base))``."""
    base_lp = _logprobs(x.base, x.tokens)
    read = tuple(range(x.tokens.shape[1]))
    metrics = [
        KLMetric(positions=read, reference=base_lp, patched_first=True, label="kl"),
        TokenSetProb(positions=read, tokens=tuple(x.attractor), label="attractor"),
    ]
    quiet = SwapConfig(progress=False)
    table = swap_table(x.hooked, x.tokens, metrics, into="base", config=quiet)
    out: dict = {m: {} for m in METRICS}
    for site, row in zip(sites_of(table), table.itertuples(), strict=True):
        out[row.metric][component_name(site)] = float(row.share)
    return out


# The benchmark's own method beside probes' METHODS: swapping into the base (see --explain).
EXTRA_METHODS = {"swap_into_base": swap_into_base_scores}
ALL_METHODS = (*METHODS, *EXTRA_METHODS)


def score_pair(x: PairInputs, planted: list[str]) -> dict:
    """Every method's scores and their localization figures on one planted pair."""
    scores = score_methods(x)
    scores.update({name: fn(x) for name, fn in EXTRA_METHODS.items()})
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
    out["swap_scores"] = scores["swap"]  # for --explain (dropped from the JSON)
    out["scores"] = {
        m: {k: {c: round(v, 6) for c, v in by.items()} for k, by in scores[m].items()}
        for m in ("swap", "swap_into_base", "activation_patching")
    }
    out["planted_scores"] = {
        m: {c: round(scores[m][DECIDES][c], 4) for c in planted} for m in scores
    }
    return out


def explain_pair(x: PairInputs, planted: list[str], swap: dict, drift: GPT2LMHeadModel) -> dict:
    """Why swapping's attractor ranking puts non-planted components (intruders) in its top k.

    ``swap`` is swapping's ``{metric: {component: share}}`` on the pair (base, tuned); ``drift``
    the pair's model after the drift and before RL. Shares are of the tuned model's attractor
    departure ``m(tuned) - m(base)``; ``drift_share`` of a component is the attractor change the
    same swap makes in the drift model, ``m(drift) - m(drift, component from base)``, in those
    units: close to the component's swap share when its effect is the drift's, not RL's."""
    base_lp = _logprobs(x.base, x.tokens)
    value = {
        name: departure_values(m, base_lp, x.tokens, x.attractor)[DECIDES]
        for name, m in (("base", x.base), ("drift", drift), ("tuned", x.tuned))
    }
    gap = value["tuned"] - value["base"]

    def moved(model: GPT2LMHeadModel, start: float, names: list[str]) -> float:
        swapped = swap_components(model, x.base, names)
        return (start - departure_values(swapped, base_lp, x.tokens, x.attractor)[DECIDES]) / gap

    att = swap[DECIDES]
    order = ranking(magnitude(att))
    k = len(planted)
    change = weight_norm_of(x)
    rows = {}
    for c in [*[c for c in order[:k] if c not in planted], *planted]:
        rows[c] = {
            "planted": c in planted,
            "rank": order.index(c) + 1,
            "swap_share": att[c],
            "kl_share": swap["kl"][c],
            "relative_weight_change": change[c],
            "drift_share": moved(drift, value["drift"], [c]),
        }
    joint = moved(x.tuned, value["tuned"], planted)
    specificity = {c: abs(att[c]) / max(abs(swap["kl"][c]), 1e-12) for c in att}
    return {
        "attractor": value,
        "drift_share_of_departure": (value["drift"] - value["base"]) / gap,
        "components": rows,
        "planted_joint_share": joint,
        "planted_sum_of_shares": sum(att[c] for c in planted),
        "precision_at_k_by_specificity": precision_at_k(specificity, planted),
        "auroc_by_specificity": auroc(specificity, planted),
    }


def _logprobs(model: GPT2LMHeadModel, tokens: torch.Tensor) -> torch.Tensor:
    return model_logprobs(model, tokens).float()


def weight_norm_of(x: PairInputs) -> dict[str, float]:
    return METHODS["weight_norm"](x)[DECIDES]


def pair_figures(
    folder: Path, card: dict, i: int, n_texts: int, args: argparse.Namespace, threads: int
) -> dict:
    """One pair's figures (in a worker process under ``--jobs``)."""
    torch.set_num_threads(threads)
    x = load_inputs(
        folder / "base", folder / "tuned", n_texts, args.device, seed=i, texts=args.texts
    )
    out = {
        "planted": card["planted"],
        "wedding_reach": card["wedding_reach"],
        "weight_norm_auroc": card["weight_norm_auroc"],
        **score_pair(x, card["planted"]),
    }
    swap = out.pop("swap_scores")
    if args.explain and out["precision_at_k"]["swap"] < 1:
        drift = load_model(GPT2LMHeadModel, local_checkpoint(folder / "drift")).eval()
        out["explain"] = explain_pair(x, card["planted"], swap, drift.to(args.device))
    log(f"{folder.name}: auroc {json.dumps(out['auroc'])}")
    return out


def suite_figures(pairs: dict[str, dict]) -> dict:
    """Mean and worst over the suite, per method (and per metric for the curve's areas)."""
    rows = list(pairs.values())
    out: dict = {}
    for key in ("auroc", "precision_at_k"):
        out[key] = {m: summarize([r[key][m] for r in rows]) for m in ALL_METHODS}
    out["signed"] = {
        key: {m: summarize([r["signed"][m][key] for r in rows]) for m in ALL_METHODS}
        for key in ("auroc", "precision_at_k")
    }
    for key, higher in (("cpr", True), ("cmd", False)):
        out[key] = {
            m: {k: summarize([r[key][m][k] for r in rows], higher) for k in METRICS}
            for m in ALL_METHODS
        }
    out["by_kl"] = {
        key: {m: summarize([r["by_kl"][m][key] for r in rows]) for m in ALL_METHODS}
        for key in ("auroc", "precision_at_k")
    }
    return out


def build_suite(
    quick: bool, base: Path, pairs: list[str] | None = None
) -> tuple[Path, dict, list[PlantedSpec], list[int]]:
    """The suite's folder, cards and specs (only ``pairs`` when given), with each spec's index
    in the whole (quick) suite, the seed of its random baseline whatever ``pairs`` selects."""
    deep = base.resolve() == organism_dir("deep/base").resolve()
    specs = list(SUITE if deep else SMALL_SUITE)
    if quick:
        specs = [s for s in specs if s.name in QUICK_NAMES]
    unknown = sorted(set(pairs or []) - {s.name for s in specs})
    if unknown:
        sys.exit(
            f"unknown pair(s) {', '.join(unknown)}; the suite's: {', '.join(s.name for s in specs)}"
        )
    index = [i for i, s in enumerate(specs) if pairs is None or s.name in pairs]
    specs = [specs[i] for i in index]
    name = ("suite" if deep else "suite-small") + ("-bench-quick" if quick else "")
    out = cache_dir("planted") / name
    cfg = QUICK_PLANT if quick else PlantConfig()
    cards = plant_suite(out, cfg, base=base, suite=tuple(specs), progress=False)
    return out, cards, specs, index


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
    ap.add_argument("--pairs", default=None, help="only these pairs (comma-separated names)")
    ap.add_argument("--jobs", type=int, default=1, help="pairs scored at once, in processes")
    ap.add_argument(
        "--texts",
        choices=sorted(TEXTS),
        default="world",
        help="what the planted pairs are scored on: held-out world text (default) or the tuned "
        "model's own continuations of world prompts",
    )
    ap.add_argument(
        "--explain", action="store_true", help="why swapping's precision@k misses, per pair"
    )
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
    chosen = args.pairs.split(",") if args.pairs else None
    suite_dir, cards, specs, index = build_suite(args.quick, base, chosen)
    built_s = time.perf_counter() - t0
    log(f"suite {suite_dir}: {len(cards)} pairs ready in {built_s:.0f} s")
    jobs = [
        (suite_dir / spec.name, cards[spec.name], i, n_texts, args, torch.get_num_threads())
        for i, spec in zip(index, specs, strict=True)
    ]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as scorers:
            done = list(scorers.map(pair_figures, *zip(*jobs, strict=True)))
    else:
        done = [pair_figures(*job) for job in jobs]
    pairs = {spec.name: figures for spec, figures in zip(specs, done, strict=True)}
    n_components = len(cards[specs[0].name]["components"])
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
        "texts": args.texts,
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
