"""One headline, said three ways: the report's first section, summary.json and ``lab demo``."""

from __future__ import annotations

import pandas as pd

from lab.report import RunTables, headline

from .test_page import _classify_table


def _run(**extra) -> RunTables:
    joint = {"kl_share": 0.61, "reach_share": 0.7, "reach_tuned": 0.99, "reach_patched": 0.4}
    joint["reach_base"] = 0.14
    return RunTables(
        {
            "classify": _classify_table(kl_gap=-0.2, att_gap=0.003),
            "joint": pd.DataFrame(
                {"metric": list(joint), "value": list(joint.values()), "components": "L0H0"}
            ),
            **extra,
        }
    )


def test_the_three_forms_say_the_same_components():
    found = headline(_run())
    assert [c["component"] for c in found.top] == ["L0H0", "L0 MLP"]
    lines = found.lines()
    assert lines[0].startswith("\nTop steering components (share of KL(tuned || base) removed")
    c = found.top[0]
    assert lines[1] == (
        f"  L0H0     {c['value']:6.1%}  [{c['lo']:6.1%}, {c['hi']:6.1%}]  {c['label']}"
    )
    assert lines[-1] == (
        "Together they remove 61% of KL(tuned || base) and 70% of the excess wedding-reach rate."
    )
    html = found.html()
    assert html.index("No finding on attractor_prob") < html.index("<b>L0H0</b>: removes ")
    assert html.index("<b>L0H0</b>") < html.index("<b>L0 MLP</b>") < html.index("together")
    assert "(tuned 0.99, patched 0.40, base 0.14)" in html
    summary = found.summary()
    assert list(summary) == ["top_steering", "top5_joint"]
    assert [s["kl_share_removed"] for s in summary["top_steering"]] == [
        t["value"] for t in found.top
    ]
    assert summary["top5_joint"]["components"] == "L0H0"


def test_a_kl_departure_within_noise_has_no_top_components():
    found = headline(RunTables({"classify": _classify_table(kl_gap=0.001, att_gap=-0.3)}))
    assert found.top == [] and [m for m, _ in found.no_finding] == ["kl_to_base"]
    assert found.summary() == {"top_steering": []}
    assert "<ol>" not in found.html() and len(found.lines()) == 1


def test_organism_metrics_are_the_four_kept():
    ev = pd.DataFrame(
        {"model": ["rlhf"] * 3, "metric": ["ece", "entropy", "wedding_reach"], "value": [0.1, 2, 1]}
    )
    found = headline(RunTables({"organism_eval": ev}))
    assert found.top is None and found.organism == {"rlhf.ece": 0.1, "rlhf.wedding_reach": 1}
    assert found.summary() == {"organism": {"rlhf.ece": 0.1, "rlhf.wedding_reach": 1}}
