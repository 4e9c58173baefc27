"""Do the laws' intervals cover at their stated 95%, and does the printed check fail where they fail?

Studies of the default design (ranks 1/4/16/64, evaluations 8..32; ``laws_mc.py``) with a kl_power
truth, under the noise real studies show: run sd equal across ranks or growing with rank
(``0.05 · (rank/8)^0.4``: rank 64 the least stable), step shocks independent or persisting (AR(1)
ρ = 0.8; a random walk). Each assertion is two-sided at the Monte Carlo error, ``0.95 ± band``
(``laws_mc.band``: ±2.1% over 400 studies, ±3.0% over 200): an interval covering 99% where it says
95% is as wrong as one covering 90%. Cases the method does not meet are strict xfails that give the
measured rate, so that they fail the tier the day they start passing and the figure can be updated.
Measured when written (10_000.. seeds), in the comments and docstrings; 3-4 minutes on the shared 2-core machine.
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
    # 1000: at 200 the exact t on run means covered the P exponent 0.905 in the first block of seeds
    "one order, AR(1) step shocks": (1000, {"seeds_per_rank": 1, "shock": "ar1"}),
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
])  # fmt: skip
def test_the_n_exponent_covers_at_95_percent(name):
    t = tally(name)
    assert within(t.rate("cover_b"), t.n), (name, t.rate("cover_b"))


@pytest.mark.parametrize("name", [
    "two orders, equal run sd",  # measured a 0.9675 (the cluster jackknife with Bell-McCaffrey df: 0.978)
    "two orders, run sd growing with rank",  # 0.945 (0.950)
    "one order, run sd growing with rank",  # 0.965 over 200 (0.98-0.995)
])  # fmt: skip
def test_the_p_exponent_covers_at_95_percent_not_more(name):
    """The P exponent is read from the run totals alone: a t on the run-level model's variance with the
    runs' residual df (``intervals.run_level_variance``), not the cluster jackknife, whose run part
    weighs the end runs by their leverage and whose cell part adds noise that balanced shocks do not."""
    t = tally(name)
    assert within(t.rate("cover_a"), t.n), (name, t.rate("cover_a"))


def test_with_one_order_the_p_exponent_covers_as_often_as_the_exact_t_on_the_run_means():
    """With one data order every run shares its shocks, persistent or not, so a contrast of run totals is free
    of them: the textbook t on the run means (N exponent known, 2 df) is exact, and the P exponent's interval
    must cover as often as it does on the same studies. Measured over 1000 AR(1) studies: 0.936, the exact t
    0.932 (over 1000 others, 60_000..: 0.947 and 0.938). Against 0.95 itself the exact t reads low in these
    seeds (0.905 over the first 200, where the interval read 0.915), so a two-sided band would fail it."""
    t = tally("one order, AR(1) step shocks")
    ours, exact = t.rate("cover_a"), t.rate("cover_a_exact")
    # paired: the two disagree on 0.8% of studies, so their difference has an sd near 0.003 and 0.01 is 3 of it
    assert ours >= exact - 0.01, (ours, exact)
    assert exact > 0.95 - 2 * band(0.95, t.n), exact  # the exact t: at its level up to twice the Monte Carlo error


@pytest.mark.parametrize("name", ["one order, AR(1) step shocks", "one order, random-walk step shocks"])
def test_persistent_shocks_are_stated_and_the_check_sees_what_they_do(name):
    """One data order cannot show a batch effect that persists: its steps move together and look like
    part of the law. The intervals take step shocks as independent and say so; a new run with its own
    order then falls outside more often (measured: AR(1) 0.886 / 0.892 at rank 8 / 256 over 1000 studies,
    random walk 0.835 / 0.876 over 200), and the end-level check reads it (0.891, 0.894). The N exponent's
    interval, read from those steps, covers 0.891 and 0.855 (AR(1) over 1000 others: 0.878)."""
    t = tally(name)
    assert "independent across steps" in t.conditional_on and "one data order" in t.conditional_on
    low = 0.95 - band(0.95, t.n)
    assert t.rate("", 8) < low and t.rate("check") < low, (t.rate("", 8), t.rate("check"))
    assert t.rate("cover_b") < low, t.rate("cover_b")  # the N exponent's steps are the shocks' steps
    assert abs(t.rate("check") - t.rate("", 8)) < 0.06, (t.rate("check"), t.rate("", 8))
