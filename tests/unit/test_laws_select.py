"""Reliability from the bounds of the held-out error, and which law predicts: reliable first, then undecided."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from forgetscale.laws import fit_law
from forgetscale.laws.select import (
    RELIABLE_ERROR,
    Reliability,
    choose_law,
    comparison_table,
    error_bounds,
    reliability,
)
from forgetscale.laws.validate import BIAS_GRID

GRID = np.asarray(BIAS_GRID)


@pytest.fixture(scope="module")
def kl_fit():
    rng = np.random.default_rng(0)
    P, N = np.repeat([1e4, 4e4, 16e4, 64e4], 5), np.tile([8, 12, 16, 24, 32.0], 4)
    kl = 1e-3 * P**0.2 * N**0.8 * np.exp(0.02 * rng.standard_normal(P.size))
    return fit_law("kl_power", {"P": P, "N": N}, kl, groups=np.repeat(np.arange(4), 5), n_boot=0,
                   holdout={"P": P, "N": N}, change={"forget_kl": kl})  # fmt: skip


def _with(fit, err, lo_shift=-0.05, hi_shift=0.05, **held):
    """The fit with held-out error ``err`` on both splits and a hand-made bound grid: the simulated 5% quantile
    of a law biased by b is ``b + lo_shift``, the 97.5% quantile ``b + hi_shift``."""
    heldout = {k: {**h, "error_of_change": {"forget_kl": err}, **held} for k, h in fit.heldout.items()}
    q = {"lo": np.maximum(GRID + lo_shift, 0).tolist(), "hi": (GRID + hi_shift).tolist()}
    bound = {"bias": GRID.tolist(), "alpha": 0.05, "P": q, "N": q}
    cal = {**fit.calibration, "noise_floor": {"forget_kl": 0.08}, "error_bound": {"forget_kl": bound}}
    return replace(fit, heldout=heldout, calibration=cal)


def test_the_stored_fit_has_bounds_that_bracket_its_error(kl_fit):
    b = error_bounds(kl_fit, "forget_kl")
    assert set(b) == {"P", "N"}
    for key, (lo, hi) in b.items():
        e = kl_fit.heldout[key]["error_of_change"]["forget_kl"]
        assert lo <= e <= hi, (key, lo, e, hi)


def test_three_states_read_from_the_bounds(kl_fit):
    ok = reliability(_with(kl_fit, 0.05), "forget_kl")  # upper bound: 0.05 + 0.05
    assert ok.state == "reliable" and bool(ok) and ok.upper == pytest.approx(0.10, abs=1e-9)
    assert ok.limit == RELIABLE_ERROR == 0.15 and "upper bound" in ok.reason
    # 10% observed but the bound 17%: what one split cannot vouch for is not reliable, whatever the point error
    mid = reliability(_with(kl_fit, 0.12), "forget_kl")
    assert mid.state == "undecided" and "cannot decide" in mid.reason
    assert mid.upper == pytest.approx(0.17, abs=1e-9) and mid.lower == pytest.approx(0.07, abs=1e-9)
    bad = reliability(_with(kl_fit, 0.25), "forget_kl")  # lower bound 0.20 > 0.15
    assert bad.state == "unreliable" and bad.lower == pytest.approx(0.20, abs=1e-9) and "lower bound" in bad.reason
    stalled = reliability(_with(kl_fit, 0.05, converged=False), "forget_kl")
    assert stalled.state == "unreliable" and "did not converge" in stalled.reason
    uncal = replace(_with(kl_fit, 0.05), calibration={"note": "2 runs (< 3)"})
    assert reliability(uncal, "forget_kl").state == "unreliable"
    old = replace(kl_fit, calibration={k: v for k, v in kl_fit.calibration.items() if k != "error_bound"})
    assert reliability(old, "forget_kl").state == "undecided"  # a fit stored before the bounds
    assert isinstance(ok, Reliability) and {"upper", "lower"} <= set(ok.to_dict())


def test_a_bound_never_falls_on_the_wrong_side_of_the_error(kl_fit):
    # noise inflates a mean absolute error: the inversion alone would put the upper bound at 0.02 < 0.05
    r = reliability(_with(kl_fit, 0.05, lo_shift=0.03, hi_shift=0.04), "forget_kl")
    assert r.upper == pytest.approx(0.05) and r.lower <= 0.05


def test_an_undecided_law_predicts_when_none_is_reliable_and_an_unreliable_one_never(kl_fit):
    fits = {"a": _with(kl_fit, 0.12), "b": _with(kl_fit, 0.30)}
    assert choose_law(fits, "forget_kl") == "a"  # undecided beats unreliable
    fits["c"] = _with(kl_fit, 0.07)
    assert choose_law(fits, "forget_kl") == "c"  # reliable
    fits = {"a": _with(kl_fit, 0.12), "c": _with(kl_fit, 0.01, lo_shift=-0.2, hi_shift=0.2)}  # c: 0.21 upper
    assert reliability(fits["c"], "forget_kl").state == "undecided"
    fits["r"] = _with(kl_fit, 0.09)
    assert choose_law(fits, "forget_kl") == "r"  # reliable first, although c's error is smaller
    assert choose_law({"b": _with(kl_fit, 0.30)}, "forget_kl") is None
    row = comparison_table({"d": {"b": _with(kl_fit, 0.30)}})[0]
    assert row["state"] == "unreliable" and row["error_lower"] == pytest.approx(0.25)
