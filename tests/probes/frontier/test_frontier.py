"""The frontier on the shipped organism with small budgets: every method's curve, its readings
(calibration contrast, costs, comparison with RLHF) and its plot."""

import dataclasses

import pytest

from lab.errors import LabError
from lab.organism import load_organism
from probes.frontier import (
    METHODS,
    FrontierConfig,
    calibration_contrast,
    compare_with_rlhf,
    curve_costs,
    frontier,
    plot_frontier,
)

SMALL = FrontierConfig(
    methods=("pi_star", "pi_star_rm", "best_of_n", "rlhf"),
    betas=(0.1, 1.0),
    best_of=(1, 4, 16),
    pool=16,
    texts=64,
    prompts=64,
    replay_rlhf=False,
    match_grid=(0.03, 0.1, 0.3, 1.0, 50.0),
)


@pytest.fixture(scope="module")
def org():
    return load_organism("data/organism")


@pytest.fixture(scope="module")
def table(org, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # no replayed checkpoints: the shipped three
        mp.setenv("STEERLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return frontier(org, SMALL, progress=False)


def test_every_method_gives_its_curve(table):
    counts = table.groupby("method", sort=False).size().to_dict()
    assert counts == {"pi_star": 2, "pi_star_rm": 2, "best_of_n": 3, "rlhf": 3}
    assert table[["true_utility", "kl_to_base", "kl_to_pi_star", "ece"]].notna().all().all()


def test_pi_star_is_the_optimum(table):
    star = table[table.method == "pi_star"]
    assert star.kl_to_pi_star.abs().max() < 1e-9
    best_star = star[star.knob == 0.1].true_utility.item()
    others = table[table.method != "pi_star"]
    assert (others.true_utility < best_star).all()  # nothing beats pi* of the true utility


def test_best_of_n_climbs_the_reward_model_at_its_stated_kl(table):
    bon = table[table.method == "best_of_n"].set_index("knob")
    assert bon.loc[1.0, "kl_to_base"] == 0.0
    assert bon.loc[16.0, "kl_to_base"] == pytest.approx((2.772588722 - 15 / 16) / 24)
    assert bon.loc[16.0, "rm_score"] > bon.loc[4.0, "rm_score"] > bon.loc[1.0, "rm_score"]
    assert (bon.pi_star_match == "matched KL").all()


def test_pi_star_of_the_rm_saturates_at_the_pool(table):
    rm = table[table.method == "pi_star_rm"].set_index("knob")
    assert rm.loc[0.1, "rm_score"] > rm.loc[1.0, "rm_score"]
    # the SNIS estimate of KL cannot exceed log(pool) per sequence
    assert (rm.kl_to_base <= 2.772588722 / 24 + 1e-9).all()


def test_rlhf_breaks_calibration_and_the_kept_base_does_not(table, org):
    rlhf = table[table.method == "rlhf"].set_index("knob")
    assert list(rlhf.index) == [0.0, org.cards["peak"]["peak_step"], 500.0]
    assert rlhf.source.str.startswith("shipped checkpoints").all()
    assert rlhf.loc[500.0, "ece"] > 10 * rlhf.loc[0.0, "ece"]
    contrast = calibration_contrast(table).set_index(["method", "point"])
    kept = table[table.predictor == "base"].ece.max()
    assert contrast.loc[("rlhf", "last checkpoint (step=500)"), "ece"] > 10 * kept


def test_costs_charge_the_shared_pool_to_each_method_and_rlhf_its_recorded_run(table, org):
    cost = curve_costs(table).set_index("method")
    assert cost.loc["rlhf", "recorded_cpu_s"] == org.cards["rlhf"]["wall_time_s"]["rlhf"]
    pool_rm, pool_bon = cost.loc["pi_star_rm", "curve_cpu_s"], cost.loc["best_of_n", "curve_cpu_s"]
    assert min(pool_rm, pool_bon) > 0.5 * max(pool_rm, pool_bon) > 0


def test_compare_with_rlhf_at_equal_kl(table):
    with pytest.raises(LabError, match="no 'sampler_practitioner' rows"):
        compare_with_rlhf(table)
    out = compare_with_rlhf(table, "best_of_n")
    rlhf = table[table.method == "rlhf"]
    assert out["rlhf_peak_true_utility"] == rlhf.true_utility.max()
    assert out["rlhf_runs_for_the_same_betas_cpu_s"] == 3 * rlhf.recorded_cpu_s.iloc[0]
    inside = [r for r in out["equal_kl"] if r["kl_to_base"] <= rlhf.kl_to_base.max()]
    assert inside and all(r["difference"] == r["difference"] for r in inside)  # not NaN


def test_plot_is_a_function_of_the_table(table):
    fig = plot_frontier(table)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 4
    with pytest.raises(LabError, match="missing kl_to_base"):
        plot_frontier(table.drop(columns="kl_to_base"))


def test_the_oracle_sampler_is_near_pi_star(org):
    cfg = dataclasses.replace(SMALL, methods=("sampler_oracle",), betas=(1.0,), head_texts=64)
    row = frontier(org, cfg, progress=False).iloc[0]
    assert row.kl_to_pi_star < 0.05 and row.predictor == "base"
    assert row.policy_ece > row.ece  # the policy is not a predictor; the base answers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"betas": (0.1, 0.0)}, "beta must be > 0"),
        ({"methods": ("ppo",)}, "Unknown frontier method"),
        ({"best_of": (1, 32)}, "best_of must lie in 1..pool"),
    ],
)
def test_bad_configs_are_refused(org, change, message):
    with pytest.raises(LabError, match=message):
        frontier(org, dataclasses.replace(SMALL, **change), progress=False)


def test_the_registry_names_every_method():
    assert set(METHODS) == {
        "pi_star", "pi_star_rm", "best_of_n", "sampler_oracle", "sampler_practitioner", "rlhf"
    }  # fmt: skip
