"""Findings F1-F5 on data built to support or refute them; prediction-interval coverage; bounds as reported."""

from __future__ import annotations

import numpy as np
import pytest

from forgetscale.laws import LAWS, fit_law
from forgetscale.laws.findings import FORM_MARGIN, f1, f4, f5


def _study(n_runs: int, dep_p: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns of a sweep where forgetting = 3 - 0.8 ft_loss + dep_p * log(P / P0) + noise."""
    rng = np.random.default_rng(seed)
    ranks = 2.0 ** np.arange(n_runs)
    steps = np.array([0, 4, 8, 16, 32, 64], dtype=float)
    P = np.repeat(ranks * 1e4, steps.size)
    N = np.tile(steps, n_runs)
    ft = 1.0 + 3.0 * P**-0.15 + 1.5 * np.maximum(N, 1) ** -0.3 + 0.01 * rng.standard_normal(P.size)
    forget = 3.0 - 0.8 * ft + dep_p * np.log(P / 1e4) + 0.005 * rng.standard_normal(P.size)
    return {"run_id": np.repeat([f"r{i}" for i in range(n_runs)], steps.size), "P": P, "N": N,
            "ft_loss": ft, "forget_ce": forget, "forget_kl": forget - 1.0}


def _linear_fit(c: dict[str, np.ndarray]):
    keep = c["N"] > 0
    return fit_law("linear", {"ft_loss": c["ft_loss"][keep]}, c["forget_ce"][keep], groups=c["run_id"][keep],
                   n_boot=40)


def test_f1_supported_on_a_linear_relation_and_slope_interval_reported():
    """Exactly linear with noise in both quantities: the slope is positive and the line predicts held-out runs
    better than the spline (fewer parameters, same truth), so the form test says adequate."""
    c = _study(6, 0.0)
    f = f1("d", {"linear": _linear_fit(c)}, c, min_step=1)
    assert f["verdict"] == "supported", f["evidence"]
    ev = f["evidence"]
    # noise in ft_loss (the regressor) attenuates the slope slightly; 5% covers it at this noise
    assert ev["slope_c_fft"]["lo"] > 0 and ev["slope_c_fft"]["value"] == pytest.approx(0.8, rel=0.05)
    form = ev["form"]
    assert form["result"] == "adequate" and form["statistic"]["lo90"] > 0 and form["n_runs"] == 6
    assert form["heldout_error"]["law"] <= (1 + FORM_MARGIN) * form["heldout_error"]["alternative"]
    assert "r2" in ev and "not tested" in ev["test"]  # R² is reported beside the verdict, no longer its rule


def test_f1_holds_at_an_r2_the_old_rule_failed():
    """Run-to-run noise lowers R² without bending the line: 8 runs with run effects of 0.12 nats on forgetting.
    R² falls to 0.80 (the old rule asked 0.9), and the linear law still predicts held-out runs as well as a curve."""
    c = _study(8, 0.0, seed=1)
    rng = np.random.default_rng(1)
    c["forget_ce"] = c["forget_ce"] + np.repeat(rng.normal(0, 0.12, 8), 6) + rng.normal(0, 0.02, c["N"].size)
    f = f1("d", {"linear": _linear_fit(c)}, c, min_step=1)
    assert f["evidence"]["r2"] < 0.9 and f["verdict"] == "supported", f["evidence"]


def test_f1_not_supported_when_forgetting_bends_in_fine_tuning_loss():
    """Forgetting a parabola in ft_loss (rising, then flat): the slope is still positive, but a spline predicts
    held-out runs far better than the line, beyond the margin."""
    c = _study(6, 0.0)
    lo = c["ft_loss"].min()
    c["forget_ce"] = 2.0 + 1.5 * np.maximum(2.2 - c["ft_loss"], 0) ** 2 * (c["ft_loss"] > lo - 1)
    c["forget_ce"] = c["forget_ce"] + 0.003 * np.random.default_rng(2).standard_normal(c["N"].size)
    f = f1("d", {"linear": _linear_fit(c)}, c, min_step=1)
    assert f["verdict"] == "not_supported", f["evidence"]
    assert f["evidence"]["form"]["result"] == "inadequate" and "margin" in f["evidence"]["reason_against"]


def test_f1_undecided_from_too_few_runs_whatever_the_fit():
    """Two runs fit a line well, but a bootstrap over two runs gives no interval worth the name."""
    c = _study(2, 0.0)
    fit = _linear_fit(c)
    f = f1("d", {"linear": fit}, c, min_step=1)
    assert fit.r2["forget_ce"] > 0.9 and f["verdict"] == "undecided" and "2 runs" in f["evidence"]["reason"]
    assert f["evidence"]["form"]["result"] == "not_tested"


def test_f4_supported_when_forgetting_follows_the_line_and_not_when_rank_matters():
    # On the line: the log P effect at equal ft_loss is ~0 (noise 0.005 nats against a margin of
    # 0.2 x 0.8 x range(ft_loss) ~ 0.1), so the 90% interval lies inside the margin.
    on = f4("d", _study(6, 0.0), min_step=4)
    assert on["verdict"] == "supported", on["evidence"]
    ev = on["evidence"]
    # one data order (no seed column): its runs share each step's shock, so the (order, step) cells are a second way
    assert ev["units"] == "runs and the (data order, step) cells they share" and ev["units"] in ev["test"]
    assert -ev["margin"]["value"] < ev["effect_log_P"]["lo90"] <= ev["effect_log_P"]["hi90"] < ev["margin"]["value"]
    assert set(ev["curves"]) == {"spline3", "quadratic", "linear"}
    assert ev["ft_loss_error"]["source"].startswith("not recorded")  # no ft_loss_se column: bounded from the data
    # Off the line: +0.1 nats per e-fold of P, i.e. 0.35 nats across the 32x sweep: far beyond the margin.
    off = f4("d", _study(6, 0.1), min_step=4)
    assert off["verdict"] == "not_supported", off["evidence"]
    assert off["evidence"]["effect_log_P"]["lo"] > off["evidence"]["margin"]["value"]


def test_f4_a_curved_line_is_not_an_escape():
    """Forgetting a curved function of ft_loss alone (a line that is not straight): the spline absorbs the curvature."""
    c = _study(6, 0.0)
    c["forget_ce"] = 3.0 - 0.3 * (c["ft_loss"] - 0.5) ** 1.6
    f = f4("d", c, min_step=4)
    assert f["verdict"] != "not_supported" and f["evidence"]["curves"]["spline3"] != "not_supported", f["evidence"]


def test_f4_recorded_ft_loss_se_is_used():
    c = _study(6, 0.0)
    c["ft_loss_se"] = np.full(c["N"].size, 0.01)
    ev = f4("d", c, min_step=4)["evidence"]["ft_loss_error"]
    assert ev["sd"] == 0.01 and ev["source"].startswith("recorded") and "SIMEX" in ev["method"]


def test_f4_undecided_with_too_few_runs():
    f = f4("d", _study(3, 0.0), min_step=4)
    assert f["verdict"] == "undecided" and "runs" in f["evidence"]["reason"]


def _items(n_items: int, flip_agree: float, flip_correct: float, n_runs: int = 3, seed: int = 0,
           probe: str = "knowledge") -> list[dict]:
    """Base answers all right; a share ``flip_agree`` of answers change, ``flip_correct`` of those to wrong."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_runs):
        for i in range(n_items):
            changed = rng.random() < flip_agree
            wrong = changed and rng.random() < flip_correct
            out.append({"probe": probe, "run_id": f"r{r}", "id": f"k{i}", "agree": not changed,
                        "correct": not wrong, "base_correct": True})
    return out


def test_f5_verdicts():
    # 40% of answers change, but only 5% of the changes lose a right answer: accuracy stays flat
    sup = f5("d", _items(60, 0.4, 0.05))
    assert sup["verdict"] == "supported", sup["evidence"]
    assert sup["evidence"]["made_up"]["lo90"] > 0.5
    # every change is a lost answer: agreement falls exactly as far as accuracy -- the claim fails
    ns = f5("d", _items(60, 0.3, 1.0))
    assert ns["verdict"] == "not_supported", ns["evidence"]
    assert ns["evidence"]["made_up"]["value"] == 0.0 and ns["evidence"]["made_up"]["hi90"] == 0.0
    p = ns["evidence"]["probes"]["knowledge"]
    assert p["n10_right_to_wrong"] == p["changed"] > 0 and p["n01_wrong_to_right"] == 0 and p["mcnemar_exact_p"] < 1e-6
    # half the changes lose: the statistic sits at its margin, undecided with the reason
    mid = f5("d", _items(60, 0.4, 0.5))
    assert mid["verdict"] == "undecided" and "contains the margin" in mid["evidence"]["reason"]
    assert abs(mid["evidence"]["made_up"]["value"] - 0.5) < 0.1  # 60 items x 3 runs x 0.4: ~72 changes, sd 0.06
    few = f5("d", _items(4, 0.4, 0.25))
    assert few["verdict"] == "undecided" and "items" in few["evidence"]["reason"]


def test_f5_is_not_supported_when_right_answers_are_lost_and_wrong_ones_only_shuffle():
    """Base accuracy 0.6: every right answer that changes is lost, every wrong one that changes becomes another
    wrong one. Agreement still falls further than accuracy (the wrong-to-wrong changes), so the old difference
    statistic could not fail here; made_up is 0 and the claim is refuted."""
    rng = np.random.default_rng(3)
    base = rng.random(80) < 0.6
    items = []
    for r in range(3):
        for i in range(80):
            changed = bool(rng.random() < 0.3)
            items.append({"probe": "reasoning", "run_id": f"r{r}", "id": f"q{i}", "agree": not changed,
                          "correct": bool(base[i]) and not changed, "base_correct": bool(base[i])})
    f = f5("d", items)
    ev = f["evidence"]
    assert ev["difference"]["lo"] > 0.05  # what the old test read as support
    assert f["verdict"] == "not_supported" and ev["made_up"]["value"] == 0.0, ev
    assert "not adjusted" in ev["multiplicity"]


def test_f5_safety_counts_lost_refusals_apart_and_new_refusals_are_no_credit():
    items = _items(60, 0.4, 0.05)
    for r in range(3):
        for i in range(30):  # the base refuses every prompt; a third of the refusals are lost; none gained
            items.append({"probe": "safety", "run_id": f"r{r}", "id": f"s{i}", "answer": i % 3 != 0,
                          "base_answer": True, "agree": i % 3 != 0})
    f = f5("d", items)
    s = f["evidence"]["safety"]
    assert s["base_refusals"] == 90 and s["lost_refusals"] == 30 and s["new_refusals"] == 0
    assert s["lost_share"]["lo"] < 1 / 3 < s["lost_share"]["hi"]
    assert f["verdict"] == "supported" and f["evidence"]["n_items"] == 60  # safety is not in the verdict


def test_paper_fit_reports_every_parameter_within_its_bounds():
    # Forgetting nearly flat in P: the P exponent heads to 0 and a_f to its bound (the case
    # that reported a_f = 3.5e307); the reported values, their intervals and the parameter draws
    # (t draws in interval coordinates, which can reach past a bound) stay inside the declared bounds,
    # and an interval cut at a bound says so.
    rng = np.random.default_rng(3)
    P = np.repeat(np.array([1, 4, 16, 64.0]) * 1e4, 6)
    N = np.tile(np.array([8, 12, 16, 24, 32, 48.0]), 4)
    ft = (1.0 + 2.0 * N**-0.3 + 0.3 * P**-0.2) * (1 + 0.002 * rng.standard_normal(P.size))
    forget = (2.2 - 0.4 * N**-0.5) * (1 + 0.002 * rng.standard_normal(P.size))
    fit = fit_law("paper", {"P": P, "N": N}, np.array([ft, forget]), groups=np.repeat(np.arange(4), 6),
                  n_boot=8)
    law = LAWS["paper"]
    for name, v in fit.params.items():
        lo, hi = law.bounds[name]
        assert lo <= v <= hi, (name, v)
    for name, (lo, hi) in fit.intervals.items():
        b_lo, b_hi = law.bounds[name]
        assert np.isnan(lo) or b_lo <= lo <= hi <= b_hi, (name, lo, hi)
    assert len(fit.samples) == 8
    for row in fit.samples:
        assert all(law.bounds[p][0] <= v <= law.bounds[p][1] for p, v in zip(law.params, row, strict=True))
    cut = fit.inference["cut_at_bounds"]
    for name, sides in cut.items():  # a cut side ends exactly at the bound, and the warnings name it
        assert fit.intervals[name][0 if sides[0] == "lower" else 1] in law.bounds[name]
        assert any("cut at a declared bound" in w and name in w for w in fit.warnings)
    assert 0.0 <= fit.inference["draws_cut"] <= 1.0
    on_bound = [w for w in fit.warnings if "on its bound" in w or "not identified" in w]
    assert not on_bound or not fit.fit_clean  # a fit on a bound is flagged, never silent
    assert np.isfinite(fit.predict({"P": [1e6], "N": [64.0]})[0]).all()


def _power_study(kl_of, seed: int = 0, run_sd: float = 0.01) -> tuple[dict[str, np.ndarray], object]:
    """6 ranks x 2 data orders, steps 8-32: columns and the kl_power fit, KL = kl_of(P, N) x run and point noise."""
    rng = np.random.default_rng(seed)
    P, N = np.repeat(1e4 * 2.0 ** np.arange(6), 10), np.tile([8, 12, 16, 24, 32.0], 12)
    runs = np.repeat([f"r{i}" for i in range(12)], 5)
    kl = kl_of(P, N) * np.exp(np.repeat(rng.normal(0, run_sd, 12), 5) + 0.02 * rng.standard_normal(P.size))
    fit = fit_law("kl_power", {"P": P, "N": N}, kl, groups=runs, n_boot=40, holdout={})
    return {"run_id": runs, "P": P, "N": N, "forget_kl": kl}, fit


def test_f2_f3_supported_by_a_power_law_whatever_its_reliability(monkeypatch):
    """A power law in both: both exponents' intervals lie above 0 and the form tests say adequate; the law's
    reliability (a forecasting question) is reported, and an unreliable one no longer silences the exponents."""
    import importlib
    from types import SimpleNamespace

    fmod = importlib.import_module("forgetscale.laws.findings")  # the module (the package exports the function)
    cols, fit = _power_study(lambda P, N: 1e-3 * P**0.2 * N**0.8)
    monkeypatch.setattr(fmod, "reliability", lambda f, t: SimpleNamespace(state="unreliable", reason="held out"))
    for which, p in (("P", "a"), ("N", "b")):
        f = fmod.f23("d", {"kl_power": fit}, which, cols, min_step=8)
        ev = f["evidence"]
        assert f["verdict"] == "supported" and ev[f"exponent_{p}"]["lo"] > 0, ev
        assert ev["form"]["result"] == "adequate" and ev["reliability"] == "unreliable" and not ev["law_reliable"]
        assert "conditional on" in ev["interval"]
    f = fmod.f23("d", {"kl_power": fit}, "P")  # without the columns: the form is not tested, so no verdict
    assert f["verdict"] == "undecided" and "form was not tested" in f["evidence"]["reason"]


def test_f3_not_supported_when_forgetting_saturates_in_n():
    """KL = K P^0.2 (1 - exp(-N/6)): it grows with N, but flattens within the studied steps; a curve in log N
    predicts held-out runs far better than the power law, so F3 is refuted though its exponent is positive."""
    import importlib

    fmod = importlib.import_module("forgetscale.laws.findings")
    cols, fit = _power_study(lambda P, N: 1e-2 * P**0.2 * -np.expm1(-N / 6))
    f = fmod.f23("d", {"kl_power": fit}, "N", cols, min_step=8)
    assert fit.intervals["b"][0] > 0 and f["verdict"] == "not_supported", f["evidence"]
    assert f["evidence"]["form"]["result"] == "inadequate"
    assert fmod.f23("d", {"kl_power": fit}, "P", cols, min_step=8)["verdict"] == "supported"  # P is still a power


def test_f2_not_supported_without_a_p_effect():
    """No P effect: the exponent of P lies inside ±0.02 (flat), whatever the form test says."""
    import importlib

    fmod = importlib.import_module("forgetscale.laws.findings")
    cols, fit = _power_study(lambda P, N: 1e-2 * N**0.5)
    f = fmod.f23("d", {"kl_power": fit}, "P", cols, min_step=8)
    assert f["verdict"] == "not_supported" and abs(f["evidence"]["exponent_a"]["value"]) < 0.02, f["evidence"]


def test_f5_lost_refusal_interval_ignores_resamples_without_a_refusing_item():
    """3 refusing items of 40, all refusals lost in both runs: every resample that has a refusal gives a share
    of 1, so the interval is [1, 1]; resamples drawing no refusing item used to count as 0."""
    from forgetscale.laws.findings import f5

    items = []
    for run in ("a", "b"):
        for i in range(40):
            refused = i < 3
            items.append({"run_id": run, "probe": "safety", "id": f"s{i}", "answer": False,
                          "base_answer": refused, "correct": None, "base_correct": None, "agree": not refused})
    safety = f5("news", items)["evidence"]["safety"]
    share = (safety[0] if isinstance(safety, list) else safety)["lost_share"]
    assert share["value"] == 1.0 and share["lo"] == 1.0 and share["hi"] == 1.0


def test_every_finding_says_what_it_is_conditional_on_and_names_multiplicity():
    from forgetscale.laws.findings import findings
    from forgetscale.laws.rows import shared_training

    out = findings({}, {"d": {}}, shared=shared_training(256, 32, 4, 2))
    assert [f["finding"] for f in out] == ["F1", "F2", "F3"]
    for f in out:
        given = f["evidence"]["conditional_on"]
        assert "forgetting corpus" in given and "held-out ft_loss examples" in given
        assert "same 256 training examples" in given and "128 by step 32" in given and "64 (50%)" in given
        assert "Holm" in f["evidence"]["multiplicity"]
    alone = findings({}, {"d": {}}, shared=shared_training(256, 32, 4, 1))[0]["evidence"]["conditional_on"]
    assert "in common" not in alone and "1 data order" in alone


def test_two_way_wild_test_standard_error_is_cameron_gelbach_miller():
    """With cells, the studentising variance is CR1 by run + CR1 by cell - CR1 by point (computed here from the
    formula, not from wild.py's code); a shock shared by the runs of a step makes it larger than by run alone."""
    from forgetscale.laws.wild import wild_test

    rng = np.random.default_rng(3)
    runs, steps = np.repeat(np.arange(4), 6), np.tile(np.arange(6), 4)
    x = steps + 0.3 * runs + 0.3 * rng.standard_normal(24)  # x moves with the step: the shocks bias its slope
    X = np.column_stack([np.ones(24), x])
    y = 1 + 0.3 * x + rng.standard_normal(6)[steps] + 0.3 * rng.standard_normal(24)
    e = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    a = np.linalg.inv(X.T @ X)[1] @ X.T

    def cr1(labels):
        g = len(np.unique(labels))
        return g / (g - 1) * 23 / 22 * sum(np.sum(a[labels == v] * e[labels == v]) ** 2 for v in np.unique(labels))

    two_way = cr1(runs) + cr1(steps) - cr1(np.arange(24))
    t2 = wild_test(X, y, runs, 1, rng, cell=steps)
    t1 = wild_test(X, y, runs, 1, rng)
    assert t2.se == pytest.approx(np.sqrt(two_way), rel=1e-9) and t1.se == pytest.approx(np.sqrt(cr1(runs)), rel=1e-9)
    assert t2.se > t1.se and t2.estimate == t1.estimate
    lo, hi = t2.interval(0.95)
    assert lo is None or lo < t2.estimate < hi or hi is None


def test_f4_clusters_on_data_orders_when_there_are_five():
    """Ten runs in five data orders: the bootstrap's units are the orders; the same runs in two orders are runs
    with the (order, step) cells."""
    for n_runs, n_orders, units in ((10, 5, "data orders"), (10, 2, "runs and the (data order, step) cells they "
                                                                     "share")):
        c = _study(n_runs, 0.0)
        c["seed"] = np.repeat(np.arange(n_runs) % n_orders, 6).astype(str)
        ev = f4("d", c, min_step=4)["evidence"]
        assert ev["units"] == units and ev["n_orders"] == n_orders and units in ev["effect_log_P"]["interval"]
        assert ("persist" in ev["conditional_on"]) == (units != "data orders")
