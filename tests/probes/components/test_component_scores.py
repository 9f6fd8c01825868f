"""Localization methods on an exactly planted pair: tuned is the base with one head's weights
changed, so swapping finds it alone (locus) while patching also credits what reads it
(mediation), weight norms see only it, and the faithfulness curve is 1 from n = 1 on."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from lab.errors import LabError
from lab.models.checkpoints import load_model, local_checkpoint
from lab.models.pair import load_pair
from lab.testing import TEST_SPECS, make_checkpoint
from probes.components.gpt2_weights import component_names, swap_components
from probes.components.scores import (
    METHODS,
    PairInputs,
    departure_values,
    faithfulness_curve,
    physical_swap_scores,
    score_methods,
)

PLANTED = "L1H2"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    spec = TEST_SPECS["gpt2"]
    base_dir = make_checkpoint(root / "base", spec, seed=0)
    other_dir = make_checkpoint(root / "other", spec, seed=1)  # an unrelated head: a big departure
    base = load_model(GPT2LMHeadModel, local_checkpoint(base_dir)).eval()
    other = load_model(GPT2LMHeadModel, local_checkpoint(other_dir)).eval()
    tuned = swap_components(base, other, [PLANTED])
    tuned.save_pretrained(root / "tuned")
    for f in base_dir.glob("tokenizer*"):
        (root / "tuned" / f.name).write_bytes(f.read_bytes())
    tokens = torch.randint(4, spec.vocab_size, (4, 8), generator=torch.Generator().manual_seed(0))
    hooked = load_pair(base_dir, root / "tuned", device="cpu")
    x = PairInputs(base, tuned, hooked, tokens, attractor=(10, 11, 12, 13, 14), seed=3)
    return x, score_methods(x)


def gaps(x):
    """Each metric's departure (tuned - base): a share's error times it is a value's error."""
    base_lp = x.base(x.tokens).logits.log_softmax(-1).detach()
    tuned = departure_values(x.tuned, base_lp, x.tokens, x.attractor)
    base = departure_values(x.base, base_lp, x.tokens, x.attractor)
    return {m: abs(tuned[m] - base[m]) for m in ("attractor", "kl")}


def test_swap_finds_the_planted_head_alone(planted):
    x, scores = planted
    gap = gaps(x)
    for metric in ("attractor", "kl"):
        s = scores["swap"][metric]
        assert abs(s[PLANTED] - 1) * gap[metric] < 1e-6  # the metric's value, to 1e-6
        assert all(abs(v) * gap[metric] < 1e-6 for k, v in s.items() if k != PLANTED)


def test_swap_equals_the_physical_swap(planted):
    x, scores = planted
    brute, gap = physical_swap_scores(x), gaps(x)
    for metric in ("attractor", "kl"):
        for name, v in brute[metric].items():
            assert abs(scores["swap"][metric][name] - v) * gap[metric] < 1e-6, (metric, name)


def test_activation_patching_credits_what_reads_it(planted):
    _, scores = planted
    s = scores["activation_patching"]["kl"]
    # z is the head's output before W_O, whose rows are the head's too: tuned's W_O stays
    assert 0.1 < s[PLANTED] < 0.99
    before = [k for k in s if k.startswith("L0") or (k.startswith("L1H") and k != PLANTED)]
    assert all(abs(s[k]) < 1e-5 for k in before)  # same inputs, same activations
    assert abs(s["L1 MLP"]) > 1e-3  # downstream of the head: mediation, not locus


def test_weight_norm_attribution_and_random(planted):
    x, scores = planted
    w = scores["weight_norm"]["attractor"]
    assert w[PLANTED] > 0.1 and all(v == 0 for k, v in w.items() if k != PLANTED)
    a = scores["attribution_patching"]["kl"]
    assert all(a[k] == 0 for k in a if k.startswith("L0"))  # no activation difference there
    assert a[PLANTED] != 0
    r = scores["random"]["kl"]
    assert list(r) == component_names(x.tuned) and all(0 <= v < 1 for v in r.values())
    assert r == score_methods(x, ["random"])["random"]["kl"]  # seeded


def test_faithfulness_curve_of_the_exact_set(planted):
    x, _ = planted
    order = [PLANTED] + [n for n in component_names(x.tuned) if n != PLANTED]
    curve = faithfulness_curve(x, order)
    for metric in ("attractor", "kl"):
        assert curve[metric][0] == 0.0 and len(curve[metric]) == len(order) + 1
        assert curve[metric][1:] == pytest.approx([1.0] * len(order), abs=1e-5)


def test_unknown_method_is_refused(planted):
    x, _ = planted
    with pytest.raises(LabError, match="known: " + ", ".join(METHODS)):
        score_methods(x, ["swap", "gradients"])
