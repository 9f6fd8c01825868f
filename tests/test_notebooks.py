"""Every notebook executes top to bottom (so they never rot) and computes what it says it does;
none is committed with outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# Per notebook: an expression over its variables (run in a cell appended to it) and a check of
# its value. A notebook without an entry here fails: each one is checked by a number it computes.
CHECKS = {
    "01_tour": (
        "reach",  # wedding-reach rate of each model's continuations (world: 0.10)
        lambda reach: reach["tuned"] > 0.8 > 0.3 > reach["base"],
    ),
    "02_probes": (
        "{m: float(table[(table.split == 'test') & table.selected & (table.metric == 'r2') &"
        " (table.control == 'task') & (table.model == m)].value.max()) for m in ('base', 'tuned')}",
        lambda r2: r2["base"] > 0.9 and r2["tuned"] > 0.8,  # belief is linearly decodable
    ),
    "03_patching_and_migration": (
        "{'top': float(probes.top_steering(scores).value.iloc[0]), 'reach': reach,"
        " 'report': open(path).read().count('<section id=')}",
        lambda v: (
            v["top"] > 0.3
            and v["reach"]["tuned, top 5 from base"] < v["reach"]["tuned"] - 0.2
            and v["report"] >= 3
        ),  # headline, patching, migration (and the missing list)
    ),
    "04_your_checkpoints": (
        "{'tables': sorted(p.name for p in out.glob('*.parquet')), 'report': path.exists(),"
        " 'kv_heads': summary['n_kv_heads'], 'real': REAL,"
        " 'pruned': bool((~scores.exact.astype(bool)).any())}",
        lambda v: (
            {"patching.parquet", "classify.parquet"} <= set(v["tables"])
            and v["report"]
            and v["kv_heads"] == (3 if v["real"] else 2)  # SmolLM2 when cached, else a tiny pair
            and v["pruned"] == v["real"]  # 300 components: attribution-pruned exact patching
        ),
    ),
    "05_model_based": (
        "{'star': float(table[table.method == 'pi_star'].true_utility.max()),"
        " 'others': float(table[table.method != 'pi_star'].true_utility.max()),"
        " 'rlhf_ece': float(table[table.method == 'rlhf'].ece.max()),"
        " 'kept_ece': float(table[table.predictor == 'base'].ece.max()),"
        " 'oracle_kl': float(table[(table.method == 'sampler_oracle') & (table.knob == 1.0)]"
        ".kl_to_pi_star.iloc[0]), 'r2': float(r2.r2.max()),"
        " 'shares': float(reading[reading.component != 'total'].share.sum())}",
        lambda v: (
            v["star"] > v["others"]  # nothing beats pi* of the true utility
            and v["rlhf_ece"] > 10 * v["kept_ece"]  # the calibration contrast
            and v["oracle_kl"] < 0.05  # the oracle sampler sits on pi* (beta = 1)
            and v["r2"] > 0.9  # the value is linearly readable
            and abs(v["shares"] - 1) < 1e-6  # the components' shifts add up to RLHF's total
        ),
    ),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_computes_its_result(path):
    expression, check = CHECKS[path.stem]
    notebook = nbformat.read(path, as_version=4)
    check_cell = f"import json\nprint(json.dumps({expression}))"
    notebook.cells.append(nbformat.v4.new_code_cell(check_cell))
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()  # raises on the first cell that fails
    (printed,) = [o.text for o in notebook.cells[-1].outputs if o.output_type == "stream"]
    value = json.loads(printed)
    assert check(value), value


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_the_notebooks_are_there():
    names = {p.stem for p in NOTEBOOKS}
    assert {"01_tour", "04_your_checkpoints", "05_model_based"} <= names
