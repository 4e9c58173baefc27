"""Do the laws' intervals cover at their stated 95%, and does the printed check fail where they fail?

Studies of the default design (ranks 1/4/16/64, evaluations 8..32; ``laws_mc.py``) with a kl_power
truth, under the noise real studies show: run sd equal across ranks or growing with rank
(``0.05 · (rank/8)^0.4``: rank 64 the least stable), step shocks independent or persisting (AR(1)
ρ = 0.8; a random walk). Each assertion is two-sided at the Monte Carlo error, ``0.95 ± band``
(``laws_mc.band``: ±2.1% over 400 studies, ±3.0% over 200): an interval covering 99% where it says
95% is as wrong as one covering 90%. Cases the method does not meet are strict xfails that give the
measured rate, so that they fail the tier the day they start passing and the figure can be updated.
Measured when written (10_000.. seeds), in the comments and docstrings; 2-3 minutes on the shared 2-core machine.
"""

from __future__ import annotations

import pytest

from tests.sim.laws_mc import band, simulate

pytestmark = pytest.mark.sim

SEED0 = 10_000
TWO_ORDERS = {"seeds_per_rank": 2}
GROWING = {"run_sd_power": 0.4}
SCENARIOS = {
    "two orders, equal run sd": (400, TWO_ORDERS),
    "two orders, run sd growing with rank": (400, {**TWO_ORDERS, **GROWING}),
    "one order, run sd growing with rank": (200, {"seeds_per_rank": 1, **GROWING}),
    "one order, AR(1) step shocks": (200, {"seeds_per_rank": 1, "shock": "ar1"}),
    "one order, random-walk step shocks": (200, {"seeds_per_rank": 1, "shock": "walk", "step_sd": 0.035}),
}


def tally(name: str):
    n, design = SCENARIOS[name]
    return simulate(n, SEED0, **design)


def within(rate: float, n: int, nominal: float = 0.95) -> bool:
    return abs(rate - nominal) <= band(nominal, n)


@pytest.mark.parametrize("name, rank", [
    ("two orders, equal run sd", 8),  # measured 0.938 (a t on Satterthwaite's df: 0.935)
    pytest.param("two orders, equal run sd", 256, marks=pytest.mark.xfail(
        strict=True, reason="measured 0.984, above 0.929-0.971: eight runs give the run variance's slope in log "
                            "rank a sampling sd near 1.07, so at 4x beyond the largest rank they cannot rule out a "
                            "spread that grows, and the interval averaged over what they allow is wider than an "
                            "equal spread needs. A t on Satterthwaite's df from the REML information covered "
                            "0.965 here but 0.918 with growing spread (the studies whose slope came out below 0 "
                            "covered ~0.49); with the slope given a N(0, 1) prior, 0.984 and 0.940; tempering the "
                            "likelihood by 2, 0.970 and 0.922: no rule tried met both, and covering too much is "
                            "the side a user can plan with")),
    ("two orders, run sd growing with rank", 8),  # 0.938 (0.933)
    ("two orders, run sd growing with rank", 256),  # 0.970 (a t on Satterthwaite's df: 0.918)
])  # fmt: skip
def test_a_new_runs_points_fall_inside_the_prediction_interval_at_95_percent(name, rank):
    t = tally(name)
    rate = t.rate("", rank)
    assert within(rate, t.n), (name, rank, rate, band(0.95, t.n))


def test_run_variance_is_modelled_where_the_runs_allow_and_assumed_equal_where_they_do_not():
    """Two runs per rank leave 6 run-level df: the slope in P is fitted in every study. One run per rank
    leaves 2: it is assumed equal, and the output says so; the interval at 4x then fails under growing
    run sd (measured 0.77) and the end-level check fails with it (0.90), where the earlier in-sample
    check read 1.00."""
    two, one = tally("two orders, run sd growing with rank"), tally("one order, run sd growing with rank")
    assert all(two.slope_fitted) and not any(one.slope_fitted)
    assert all("linear in log P" in m for m in two.models)
    assert all("assumed equal" in m for m in one.models)
    assert one.rate("", 256) < 0.95 - band(0.95, one.n)
    assert one.rate("check") < 0.95 - band(0.95, one.n), one.rate("check")


@pytest.mark.parametrize("name", [
    "two orders, equal run sd",  # measured b 0.950 (the earlier df margin: 0.92)
    "two orders, run sd growing with rank",  # 0.935
    "one order, AR(1) step shocks",  # 0.925 over 200 (earlier: 0.84); a random walk: 0.855, below
])  # fmt: skip
def test_the_n_exponent_covers_at_95_percent(name):
    t = tally(name)
    assert within(t.rate("cover_b"), t.n), (name, t.rate("cover_b"))


@pytest.mark.parametrize("name", [
    "two orders, equal run sd",  # measured a 0.9675 (the cluster jackknife with Bell-McCaffrey df: 0.978)
    "two orders, run sd growing with rank",  # 0.945 (0.950)
    "one order, run sd growing with rank",  # 0.965 over 200 (0.98-0.995)
    pytest.param("one order, AR(1) step shocks", marks=pytest.mark.xfail(
        strict=True, reason="measured 0.915 over 200 (0.923 over 600 iid-shock studies, 50_000.. seeds), "
                            "against 0.92-0.98: with 4 runs the t has 2 df, and the model-based run variance "
                            "of the near-least-squares Huber fit reads ~10% low (the jackknife: 0.965)")),
])  # fmt: skip
def test_the_p_exponent_covers_at_95_percent_not_more(name):
    """The P exponent is read from the run totals alone: a t on the run-level model's variance with the
    runs' residual df (``intervals.run_level_variance``), not the cluster jackknife, whose run part
    weighs the end runs by their leverage and whose cell part adds noise that balanced shocks do not."""
    t = tally(name)
    assert within(t.rate("cover_a"), t.n), (name, t.rate("cover_a"))


@pytest.mark.parametrize("name", ["one order, AR(1) step shocks", "one order, random-walk step shocks"])
def test_persistent_shocks_are_stated_and_the_check_sees_what_they_do(name):
    """One data order cannot show a batch effect that persists: its steps move together and look like
    part of the law. The intervals take step shocks as independent and say so; a new run with its own
    order then falls outside more often (measured: AR(1) 0.87 / 0.90 at rank 8 / 256, random walk
    0.835 / 0.876; N exponent 0.925 / 0.855), and the end-level check reads it (0.89, 0.89)."""
    t = tally(name)
    assert "independent across steps" in t.conditional_on and "one data order" in t.conditional_on
    low = 0.95 - band(0.95, t.n)
    assert t.rate("", 8) < low and t.rate("check") < low, (t.rate("", 8), t.rate("check"))
    assert abs(t.rate("check") - t.rate("", 8)) < 0.06, (t.rate("check"), t.rate("", 8))
