"""Component swapping: exact against a physical weight swap, units, bad input."""

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lab.errors import LabError
from probes.patching.metrics import KLMetric, LogProb, read_logits
from probes.patching.swap import SwapConfig, swap_components
from probes.patching.units import Component, component_name, parse_components

QUIET = SwapConfig(progress=False)


def _out_axis(module) -> int:
    """The output axis of a projection's weight: Linear [out, in], Conv1D [in, out]."""
    return 0 if isinstance(module, nn.Linear) else 1


def physical_swap(model, donor, comp: Component):
    """A deep copy of ``model`` with ``comp``'s parameter slices overwritten by ``donor``'s."""
    out = copy.deepcopy(model)
    cfg = model.cfg
    n_heads, d_head = int(cfg.n_heads), int(cfg.d_head)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    q_heads, kv_heads = comp.query_heads(n_heads, n_kv), comp.kv_heads(n_heads, n_kv)
    theirs = dict(donor.named_parameters())
    tag = f".{comp.layer}._original_component."
    done = 0
    for name, p in out.named_parameters():
        if tag not in name or name.split(tag)[0].count(".") > 1:
            continue
        path, kind = name.rsplit(".", 1)
        module = out.get_submodule(path)
        role = path.split(tag)[1].split(".")[-2]  # q, k, v, qkv, o, q_proj ... c_fc
        src = theirs[name].detach()
        with torch.no_grad():
            if comp.kind == "mlp":
                if ".mlp." in name or name.split(tag)[1].startswith("mlp."):
                    p.copy_(src)
                    done += 1
                continue
            if ".mlp." in name or name.split(tag)[1].startswith("mlp."):
                continue
            axis = 0 if kind == "bias" else _out_axis(module)
            if role in ("q", "q_proj"):
                rows = [h * d_head + i for h in q_heads for i in range(d_head)]
            elif role in ("k", "k_proj", "v", "v_proj"):
                rows = [h * d_head + i for h in kv_heads for i in range(d_head)]
            elif role in ("qkv", "c_attn"):
                d = n_heads * d_head
                rows = [
                    j * d + h * d_head + i for j in range(3) for h in q_heads for i in range(d_head)
                ]
            elif role in ("o", "o_proj", "c_proj"):
                if kind == "bias":
                    continue
                axis = 1 - _out_axis(module)
                rows = [h * d_head + i for h in q_heads for i in range(d_head)]
            else:
                continue
            idx = torch.tensor(rows, dtype=torch.long)
            p.index_copy_(axis, idx, src.index_select(axis, idx))
            done += 1
    assert done, f"no parameter of {comp} found"
    return out.eval()


def far_pair(loaded_pair, arch):
    """The tiny pair with its tuned model moved far from the base (every weight plus noise of
    its own scale), so that swaps change the metrics by much more than rounding."""
    pair = loaded_pair(arch)
    tuned = copy.deepcopy(pair.tuned)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 0.1))
    return SimpleNamespace(
        models={"base": pair.base, "tuned": tuned.eval()}, base=pair.base, tuned=tuned
    )


def _metrics(pair, tokens):
    pos = tuple(range(tokens.shape[1]))
    with torch.inference_mode():
        base_lp = pair.base(tokens).log_softmax(-1)
    return [
        KLMetric(positions=pos, reference=base_lp),
        LogProb(positions=(-1, -2), targets=tokens[:, 0], label="lp"),
    ]


def _brute(model, tokens, metrics):
    with torch.inference_mode():
        logits = model(tokens)
    return [float(m(read_logits(logits, m)).mean()) for m in metrics]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2"])
@pytest.mark.parametrize("into", ["tuned", "base"])
def test_swap_equals_physical_weight_swap(loaded_pair, arch, into):
    pair = far_pair(loaded_pair, arch)
    tokens = torch.randint(4, 300, (3, 7))
    metrics = _metrics(pair, tokens)
    table = swap_components(pair, tokens, metrics, into=into, config=QUIET)
    receiver = pair.models[into]
    donor = pair.models["base" if into == "tuned" else "tuned"]
    comps = parse_components(
        receiver, [f"L{layer}H{h}" for layer in range(2) for h in range(4)] + ["L0.mlp", "L1.mlp"]
    )
    assert len(table) == len(comps) * 2
    for c in comps:
        want = _brute(physical_swap(receiver, donor, c), tokens, metrics)
        rows = table[(table.site == c.site.kind) & (table.layer == c.layer)]
        if c.kind != "mlp":
            rows = rows[rows["head"] == c.index]
        got = rows.set_index("metric").loc[[m.name for m in metrics], "value"].tolist()
        assert got == pytest.approx(want, abs=1e-5), c.name
    own = _brute(receiver, tokens, metrics)
    assert table.target.iloc[:2].tolist() == pytest.approx(own, abs=1e-5)
    # a swap changes the receiver: some component moves the KL by more than rounding
    assert (table.value - table.target).abs().max() > 5e-3


def test_kv_group_unit_on_gqa_llama(loaded_pair):
    pair = far_pair(loaded_pair, "llama")  # 4 query heads, 2 key/value heads
    tokens = torch.randint(4, 300, (3, 7))
    metrics = _metrics(pair, tokens)
    table = swap_components(pair, tokens, metrics, unit="kv_group", config=QUIET)
    groups = table[table.site == "kv_group"]
    assert sorted(set(zip(groups.layer, groups["head"], strict=True))) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    for name in ("L0G1", "L1G0"):
        c = parse_components(pair.tuned, [name])[0]
        assert c.query_heads(4, 2) == ([2, 3] if name == "L0G1" else [0, 1])
        want = _brute(physical_swap(pair.tuned, pair.base, c), tokens, metrics)
        rows = groups[(groups.layer == c.layer) & (groups["head"] == c.index)]
        got = rows.set_index("metric").loc[[m.name for m in metrics], "value"].tolist()
        assert got == pytest.approx(want, abs=1e-5), name
    # a query head under GQA keeps the shared keys and values: not the group's swap
    head = swap_components(pair, tokens, metrics, ["L0H2", "L0G1"], config=QUIET)
    kl = head[head.metric == metrics[0].name].value.tolist()
    assert abs(kl[0] - kl[1]) > 1e-4


def test_identical_pair_has_no_effect(loaded_pair):
    base = loaded_pair("gemma2").base
    pair = SimpleNamespace(models={"base": base, "tuned": copy.deepcopy(base)}, base=base)
    tokens = torch.randint(4, 300, (2, 6))
    table = swap_components(pair, tokens, _metrics(pair, tokens), config=QUIET)
    assert (table.value - table.target).abs().max() < 1e-6
    assert (table.source - table.target).abs().max() < 1e-6


def test_unknown_component_lists_valid_names(loaded_pair):
    pair = loaded_pair("llama")
    tokens = torch.randint(4, 300, (2, 5))
    for bad in ("L2H0", "L0H9", "L0G2", "head3", "L9.mlp"):
        with pytest.raises(LabError, match=r"No component .*Valid names: L0H0, L0H1"):
            swap_components(pair, tokens, _metrics(pair, tokens), [bad], config=QUIET)
    with pytest.raises(LabError, match="unit must be one of head, kv_group"):
        swap_components(pair, tokens, _metrics(pair, tokens), unit="neuron", config=QUIET)
    with pytest.raises(LabError, match="into must be one of"):
        swap_components(pair, tokens, _metrics(pair, tokens), into="rlhf", config=QUIET)
    assert [c.name for c in parse_components(pair.base, ["L1 MLP", "l0h3", "L1G1"])] == [
        "L1.mlp",
        "L0H3",
        "L1G1",
    ]


def test_shapes_that_differ_are_refused_before_any_forward(loaded_pair):
    gpt2, llama = loaded_pair("gpt2"), loaded_pair("llama")
    pair = SimpleNamespace(models={"base": gpt2.base, "tuned": llama.tuned})
    ran = []
    handles = [m.register_forward_hook(lambda *a: ran.append(1)) for m in pair.models.values()]
    try:
        with pytest.raises(LabError, match="shapes differ"):
            swap_components(
                pair,
                torch.randint(4, 300, (2, 5)),
                LogProb(targets=torch.zeros(2, dtype=torch.long)),
            )
    finally:
        for h in handles:
            h.remove()
    assert not ran


def test_component_name_is_one_spelling_for_units_and_table_sites():
    assert component_name("head", 2, 5) == component_name("z", 2, 5) == "L2H5"
    assert component_name("kv_group", 1, 0) == "L1G0"
    assert component_name("mlp", 3) == component_name("mlp_out", 3, None) == "L3.mlp"
    assert [c.name for c in (Component("head", 2, 5), Component("mlp", 3))] == ["L2H5", "L3.mlp"]
    with pytest.raises(LabError, match="No component kind"):
        component_name("resid_pre", 0)
