"""The model-based alternative's figures: Q-head R² by layer, the value-guided sampler against pi*.

    python benchmarks/value_head.py [--quick] [--json] [--threads 1]

On the shipped organism (issue 17, items 1, 2 and 4; ``probes.value``):

- ``r2``: held-out R² of an oracle Q head fitted at each residual layer of the base against the
  exact soft values Q* of the labeler's true utility (centred per prefix, since a per-prefix
  constant does not change pi_Q), per beta of the grid;
- ``oracle``: the value-guided sampler with the best layer's head, at every grid beta and at two
  betas between grid points (interpolated), side by side with pi* itself (the exact optimum, the
  anchor): KL(pi_Q || pi*) per token, true utility and KL to the base of both; the head fitted by
  ridge on Q* (``objective="ridge"``) and the same head refined to minimise CE(pi*, pi_Q)
  (``objective="kl"``, columns ``kl_fit_*``) side by side;
- ``practitioner``: the same sampler with a head fitted from the reward model and base samples
  only (fitted soft-Bellman iteration), its true utility, KL to the base and reward-model score;
- ``read``: the value head's wedding direction against the RLHF model's residual shift (cosine)
  and each top migration-map component's share of the shift along it;
- ``cpu_s``: CPU seconds of the oracle fit (with the R² at every layer), of the KL refinement, of
  the practitioner fit and of decoding one beta.

``--quick`` uses 128 sequences per source where the full run uses 512.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lab.organism as organism
from benchmarks.common import benchmark_parser, print_figures
from lab.models.outputs import model_logprobs
from lab.organism.metrics import as_policy, generation_metrics
from probes.value import (
    fit_practitioner_head,
    fit_q_head,
    guided_policy,
    oracle_tokens,
    oracle_values,
    q_head_r2,
    read_value_head,
)

BETAS = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0)
BETWEEN = (0.15, 0.7)  # off the grid: Q/beta interpolated in log beta
TOP = ["L1 MLP", "L0 MLP", "L1H3", "L0H2", "L1H2"]  # the demo's top steering components
KEEP = ("true_utility", "kl_to_base", "kl_to_pi_star", "wedding_reach", "rm_score")


def _measure(org, policy, prompts, beta: float) -> dict[str, float]:
    """A policy's continuations of ``prompts`` scored as the frontier scores them."""
    samples = policy.sample(prompts, org.length, torch.Generator().manual_seed(8))
    rm = org.reward_model
    m = generation_metrics(
        samples,
        org.prompt_words + 1,
        org.world,
        org.labeler,
        logprobs=policy.next_token_logprobs(samples[:, :-1]),
        base_logprobs=model_logprobs(org.pair.base, samples[:, :-1]),
        pi_star=organism.PiStar(org.world, org.labeler, beta, org.length),
        reward_model=lambda t, s: torch.cat([rm(x, s) for x in t.split(256)]),
    )
    return {k: round(m[k], 4) for k in KEEP if k in m}


def main() -> None:
    ap = benchmark_parser(__doc__, quick="128 sequences per source", threads="CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = 128 if args.quick else 512
    org = organism.load()
    base = org.pair.base
    start = org.prompt_words + 1
    t0 = time.process_time()
    gen = torch.Generator().manual_seed(0)
    tokens = oracle_tokens(org.world, org.labeler, n, org.length, org.prompt_words, BETAS, gen)
    values = oracle_values(org.world, org.labeler, tokens, BETAS, org.length)
    r2 = q_head_r2(base, tokens, values, betas=BETAS)
    best = int(r2.groupby("layer").r2.mean().idxmax())
    head = fit_q_head(base, tokens, values, best, betas=BETAS)
    cpu = {"oracle_fit": round(time.process_time() - t0, 1)}
    t1 = time.process_time()
    star_lp = torch.stack(
        [organism.PiStar(org.world, org.labeler, b, org.length).next_token_logprobs(tokens)
         for b in BETAS], 2,
    )  # fmt: skip
    kl_head = fit_q_head(
        base, tokens, values, best, betas=BETAS, objective="kl", target_logprobs=star_lp
    )
    cpu["kl_fit"] = round(time.process_time() - t1, 1)
    prompts = org.world.draw(n, org.prompt_words, torch.Generator().manual_seed(7))[0]
    oracle = []
    for beta in sorted((*BETAS, *BETWEEN)):
        t1 = time.process_time()
        q = _measure(org, guided_policy(base, head, beta), prompts, beta)
        cpu.setdefault("decode_one_beta", round(time.process_time() - t1, 1))
        k = _measure(org, guided_policy(base, kl_head, beta), prompts, beta)
        star = _measure(org, as_policy(organism.PiStar(org.world, org.labeler, beta, org.length)),
                        prompts, beta)  # fmt: skip
        oracle.append({"beta": beta, "on_grid": beta in BETAS, **q,
                       **{f"kl_fit_{key}": v for key, v in k.items()},
                       "pi_star_true_utility": star["true_utility"],
                       "pi_star_kl_to_base": star["kl_to_base"]})  # fmt: skip
    t1 = time.process_time()
    plain = as_policy(base).sample(
        org.world.draw(n, org.prompt_words, torch.Generator().manual_seed(9))[0],
        org.length,
        torch.Generator().manual_seed(10),
    )
    prac = fit_practitioner_head(base, org.reward_model, plain, BETAS, start=start)
    cpu["practitioner_fit"] = round(time.process_time() - t1, 1)
    practitioner = [
        {"beta": b, **_measure(org, guided_policy(base, prac, b), prompts, b)} for b in BETAS
    ]
    texts = org.world.draw(n, org.length, torch.Generator().manual_seed(11))[0]
    read = read_value_head(org.pair, head, texts, org.world, org.labeler, 1.0, start=start, top=TOP)
    figures = {
        "r2": {
            int(layer): round(float(g.r2.mean()), 4) for layer, g in r2.groupby("layer")
        },  # mean over betas
        "best_layer": best,
        "oracle": oracle,
        "oracle_beta_within_0.05": [r["beta"] for r in oracle if r["kl_to_pi_star"] <= 0.05],
        "kl_fit_beta_within_0.05": [r["beta"] for r in oracle if r["kl_fit_kl_to_pi_star"] <= 0.05],
        "practitioner": practitioner,
        "read": read.round(4).to_dict("records"),
        "cpu_s": cpu,
        "n_per_source": n,
    }
    print_figures(figures, args.json, 24)


if __name__ == "__main__":
    main()
