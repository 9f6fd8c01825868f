"""GPT-2 weights by component: slices cover each block's attention and MLP once, a physical swap
changes only what it names, and the relative weight change is the hand-computed norm ratio."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lab.errors import LabError
from lab.organism.components import component_masks
from probes.components.gpt2_weights import (
    component_names,
    swap_components,
    weight_change,
)


def tiny(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=4)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def models():
    a, b = tiny(0), tiny(1)
    with torch.no_grad():  # random biases, so bias slices are checked too
        for m in (a, b):
            for n, p in m.named_parameters():
                if n.endswith("bias"):
                    p.normal_()
    return a, b


def test_names_and_parsing(models):
    a, _ = models
    names = component_names(a)
    assert names[:5] == ["L0H0", "L0H1", "L0H2", "L0H3", "L0 MLP"] and len(names) == 10
    b = models[1]
    by_alias = swap_components(a, b, ["L1.mlp", "l0h2"])  # read as the organism reads them
    by_name = swap_components(a, b, ["L1 MLP", "L0H2"])
    pairs = zip(by_alias.parameters(), by_name.parameters(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    with pytest.raises(LabError, match="valid names: L0H0, L0H1"):
        swap_components(a, b, ["L2H0"])


def test_slices_cover_attention_and_mlp_once(models):
    a, _ = models
    counts = {n: torch.zeros_like(p) for n, p in a.named_parameters()}
    for name in component_names(a):
        for pname, owned in component_masks(a, name).items():
            counts[pname][owned] += 1
    for n, c in counts.items():
        if ".attn.c_attn." in n or ".mlp." in n or n.endswith("attn.c_proj.weight"):
            assert (c == 1).all(), n
        else:  # norms, embeddings, the per-block output bias: no component's
            assert (c == 0).all(), n


def test_swap_changes_only_the_named_component(models):
    a, b = models
    swapped = swap_components(a, b, ["L1H2"])
    sa, sb, ss = a.state_dict(), b.state_dict(), swapped.state_dict()
    restored = {n: t.clone() for n, t in ss.items()}
    for pname, owned in component_masks(a, "L1H2").items():
        assert torch.equal(ss[pname][owned], sb[pname][owned])
        restored[pname][owned] = sa[pname][owned]
    assert all(torch.equal(restored[n], sa[n]) for n in sa)  # nothing else changed
    # layer 0 computes as a; the residual after block 1 differs
    x = torch.randint(0, 40, (2, 8))
    with torch.no_grad():
        ha = a(x, output_hidden_states=True).hidden_states
        hs = swapped(x, output_hidden_states=True).hidden_states
    assert torch.equal(ha[1], hs[1]) and not torch.allclose(ha[2], hs[2])
    # every component swapped, plus what belongs to none: b itself
    full = swap_components(a, b, component_names(a))
    with torch.no_grad():
        for n, p in full.named_parameters():
            if ".h." not in n or "ln_" in n or n.endswith("attn.c_proj.bias"):
                p.copy_(b.state_dict()[n])
        assert torch.allclose(full(x).logits, b(x).logits, atol=1e-6)


def test_weight_change_is_the_norm_ratio(models):
    a, _ = models
    moved = swap_components(a, a, [])  # a copy
    with torch.no_grad():
        moved.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    change = weight_change(a, moved)
    mlp = a.transformer.h[0].mlp
    norm = sum(float(p.detach().double().pow(2).sum()) for p in mlp.parameters()) ** 0.5
    expected = 0.5 * mlp.c_fc.weight.numel() ** 0.5 / norm
    assert change["L0 MLP"] == pytest.approx(expected, rel=1e-6)  # float32 weights
    assert all(v == 0 for k, v in change.items() if k != "L0 MLP")


def test_shapes_that_differ_are_refused(models):
    a, _ = models
    other = GPT2LMHeadModel(
        GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=2, n_head=4)
    )
    with pytest.raises(LabError, match="differ in shape"):
        swap_components(a, other, ["L0H0"])
    with pytest.raises(LabError, match="differ in shape"):
        weight_change(a, other)
