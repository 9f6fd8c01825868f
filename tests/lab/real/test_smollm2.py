"""The lab on a real pretrained model: SmolLM2-135M-Instruct, converted from PyPI's GGUF.

These run when ``lab fetch smollm2`` has filled the cache (``.ci/run`` does it first) and are
skipped otherwise: nothing here downloads.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab.activations.cache import cache_pair
from lab.calibration.calibrate import calibrate
from lab.datasets.dataset import Dataset
from lab.datasets.prompts import read_prompts, write_prompts
from lab.models.built import intact
from lab.models.pair import load_pair
from lab.runtime import cache_dir
from probes.patching.metrics import LogitDiff
from probes.patching.patch import PatchConfig, denoise
from probes.patching.sites import Site

FOLDER = cache_dir("real") / "smollm2"
pytestmark = pytest.mark.skipif(
    not intact(FOLDER), reason="no converted SmolLM2: run `lab fetch smollm2` (CI does)"
)

TEXTS = ["The capital of Germany is Berlin.", "Once upon a time, a girl named Lily found a"]


@pytest.fixture(scope="module")
def pair():
    return load_pair(FOLDER, FOLDER)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(FOLDER)


def test_bridge_equals_hf(pair, tokenizer):
    hf = AutoModelForCausalLM.from_pretrained(FOLDER).eval()
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        want, got = hf(ids).logits, pair.base(ids)
    assert (got - want).abs().max().item() < 1e-4
    # a real model, not random weights: it knows the capital
    prompt = tokenizer("The capital of Germany is", return_tensors="pt").input_ids
    with torch.no_grad():
        top = pair.base(prompt)[0, -1].argmax().item()
    assert tokenizer.decode(top).strip() == "Berlin"


def test_exact_patching_equals_transformer_lens_on_sampled_heads(pair, tokenizer):
    model = pair.base
    prompts = ["The capital of France is", "The capital of Italy is"]
    clean = torch.tensor(tokenizer(prompts).input_ids)
    corrupted = clean.flip(0)
    paris, rome = tokenizer(" Paris").input_ids[0], tokenizer(" Rome").input_ids[0]
    metric = LogitDiff(correct=torch.tensor([paris, rome]), wrong=torch.tensor([rome, paris]))
    heads = [(0, 0), (7, 4), (15, 8), (22, 1), (29, 5)]
    sites = [Site("z", layer, head) for layer, head in heads]
    table = denoise(model, clean, corrupted, sites, metric, config=PatchConfig(progress=False))
    _, cache = model.run_with_cache(clean)
    expected = tlp.generic_activation_patch(
        model,
        corrupted,
        cache,
        lambda logits: metric(logits[:, list(metric.positions)]).mean(),
        tlp.layer_head_vector_patch_setter,
        "z",
        index_df=pd.DataFrame(heads, columns=["layer", "head"]),
    )
    got = table.set_index(["layer", "head"]).loc[heads, "value"].to_numpy()
    assert torch.allclose(torch.tensor(got), expected.double(), atol=1e-4, rtol=0)
    assert expected.abs().max() > 1e-3  # the sample moves the metric: a real comparison


def test_store_equals_run_with_cache(pair, tokenizer, tmp_path):
    ds = Dataset.from_texts(TEXTS, tokenizer)
    store = cache_pair(pair, ds, "resid_post", out=tmp_path / "s", batch_size=2, progress=False)
    row = 0
    for b in ds.batches(2, "right"):
        for role, model in pair.models.items():
            _, ref = model.run_with_cache(b.tokens, names_filter=store.hooks, **b.forward_kwargs())
            for h in store.hooks:
                assert torch.equal(store.read(role, h, row, row + b.n_rows), ref[h][b.keep])
        row += b.n_rows
    assert row == store.n_tokens


def test_calibration_suite_runs(pair, tmp_path):
    shipped = read_prompts("calibration")
    records = [r for r in shipped if r.kind == "coin"][:2] + [
        r for r in shipped if r.kind == "control"
    ][:2]
    path = write_prompts(tmp_path / "few.jsonl", records)
    table = calibrate(pair, [str(path)])
    assert len(table) == 2 * len(records)
    probs = table["probs"].map(sum)
    assert torch.allclose(
        torch.tensor(probs.to_numpy()), torch.ones(len(table), dtype=torch.float64)
    )
