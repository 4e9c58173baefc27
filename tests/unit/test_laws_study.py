"""Study layer: rows -> fits per dataset, comparison table, predict, plan."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from forgetscale.laws import (
    LAWS,
    RELIABLE_ERROR,
    FitError,
    PlanError,
    comparison_table,
    fit_study,
    law_specs,
    plan,
    predict,
    rows_to_arrays,
)

P_PER_RANK = 1e5
RANKS = (1, 2, 4, 8, 16, 32)
STEPS = (0, 2, 4, 8, 16, 32, 64, 128, 256)
TRUE = {
    "instruct": dict(c_fft=0.8, s_fft=3.5, a_f=3e5, a_ft=1e5, b_f=5.0, b_ft=10.0, c_ft=0.2,
                     s_ft=1.0, alpha_f=0.25, alpha_ft=0.3, beta_f=0.5, beta_ft=0.4, rho=2.0),
    "news": dict(c_fft=1.0, s_fft=4.0, a_f=1e6, a_ft=2e5, b_f=8.0, b_ft=6.0, c_ft=0.3,
                 s_ft=1.5, alpha_f=0.3, alpha_ft=0.25, beta_f=0.45, beta_ft=0.5, rho=1.5),
}
# base entropy per dataset: just below the least forget_ce on the grid, so KL = forget_ce - H > 0
H = {"instruct": 1.25, "news": 0.12}
LABELS = {"linear", "paper", "kl_power", "additive:forget_ce", "additive:ft_loss"}


def true_values(ds: str, P, N) -> dict[str, np.ndarray]:
    x = np.array([np.atleast_1d(P), np.atleast_1d(N)], dtype=float)
    ft, forget = LAWS["paper"].predict(TRUE[ds], x)
    return {"ft_loss": ft, "forget_ce": forget, "forget_kl": forget - H[ds]}


def make_rows(datasets=("instruct", "news"), ranks=RANKS, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for ds in datasets:
        for r in ranks:
            for step in STEPS:
                P = r * P_PER_RANK
                if step == 0:  # identity adapter: no forgetting yet
                    vals = {"ft_loss": 4.0, "forget_ce": H[ds], "forget_kl": 0.0}
                else:
                    t = true_values(ds, P, step)
                    ft = float(t["ft_loss"][0]) * (1 + 0.01 * rng.standard_normal())
                    kl = float(t["forget_kl"][0]) * (1 + 0.01 * rng.standard_normal())
                    vals = {"ft_loss": ft, "forget_ce": H[ds] + kl, "forget_kl": kl}
                rows.append({"run_id": f"{ds}-r{r}", "dataset": ds, "rank": r, "P": P,
                             "step": step, **vals, "base_entropy": H[ds],
                             "forget_top1_ce": None, "data_loss": 3.0})
    return rows


@pytest.fixture(scope="module")
def fits():
    return fit_study(make_rows(), n_boot=10)


# ---------------------------------------------------------------------------- fit_study

def test_fits_every_law_per_dataset(fits):
    assert set(fits) == {"instruct", "news"}
    for by_label in fits.values():
        assert set(by_label) == LABELS
        assert all(f.n_groups == len(RANKS) for f in by_label.values())
        assert all(set(f.heldout) == {"P", "N"} for f in by_label.values())
    assert fits["news"]["additive:ft_loss"].targets == ("ft_loss",)
    assert fits["news"]["additive:ft_loss"].inputs == ("P", "N")


def test_step_zero_and_min_step_are_excluded():
    rows = make_rows(("instruct",))
    n_runs, n_pos = len(RANKS), len(STEPS) - 1
    f = fit_study(rows, laws=["linear", "kl_power"], n_boot=0)["instruct"]
    assert f["kl_power"].n_points == n_runs * n_pos
    assert f["linear"].n_points == n_runs * n_pos  # default min_step=1 drops step 0 too
    f0 = fit_study(rows, laws=["linear", "kl_power"], min_step=0, n_boot=0)["instruct"]
    assert f0["linear"].n_points == n_runs * len(STEPS)  # step 0 is a valid (ft, forget) pair
    assert f0["kl_power"].n_points == n_runs * n_pos  # but never for a law in N
    f16 = fit_study(rows, laws=["kl_power"], min_step=16, n_boot=0)["instruct"]
    assert f16["kl_power"].n_points == n_runs * sum(s >= 16 for s in STEPS)
    assert f16["kl_power"].domain["N"] == (16.0, 256.0)


def test_recovers_the_generating_exponents(fits):
    f = fits["news"]
    assert f["paper"].params["beta_ft"] == pytest.approx(0.5, rel=0.15)
    assert f["paper"].r2["forget_ce"] > 0.98 and f["paper"].r2["ft_loss"] > 0.98


def test_unfittable_laws_are_skipped_with_a_reason_or_raise():
    one_rank = [dict(r, dataset="single", run_id="single-r4")
                for r in make_rows(("instruct",), ranks=(4,))]
    rows = make_rows(("instruct",)) + one_rank
    skipped: dict[str, dict[str, str]] = {}
    out = fit_study(rows, laws=["linear", "kl_power"], n_boot=0, skipped=skipped)
    assert set(out["single"]) == {"linear"}
    assert "at least 2 distinct P" in skipped["single"]["kl_power"]
    assert "instruct" not in skipped
    with pytest.raises(FitError, match="dataset 'single', law 'kl_power'"):
        fit_study(rows, laws=["linear", "kl_power"], n_boot=0)


def test_missing_values_are_dropped_and_said():
    rows = make_rows(("instruct",))
    rows[3]["forget_kl"] = None
    f = fit_study(rows, laws=["kl_power"], n_boot=0)["instruct"]["kl_power"]
    assert f.n_points == len(RANKS) * (len(STEPS) - 1) - 1
    assert any("without forget_kl" in w for w in f.warnings)


def test_rows_must_have_the_measurement_keys():
    row = make_rows(("instruct",))[0]
    del row["forget_kl"]
    with pytest.raises(ValueError, match="forget_kl"):
        rows_to_arrays([row])


def test_law_specs_expand_and_validate():
    assert [s.label for s in law_specs(["additive:ft_loss"])] == ["additive:ft_loss"]
    assert {s.label for s in law_specs()} >= LABELS
    with pytest.raises(ValueError, match="unknown target"):
        law_specs(["additive:accuracy"])
    with pytest.raises(KeyError, match="unknown law"):
        law_specs(["chinchilla2"])


def test_comparison_table_is_sorted_by_heldout_error(fits):
    table = comparison_table(fits)
    assert {(r["dataset"], r["law"]) for r in table} == {(d, lab) for d in fits for lab in LABELS}
    assert len(table) == 2 * 6  # paper models two targets
    for ds in fits:
        for target in ("ft_loss", "forget_ce", "forget_kl"):
            errs = [r["heldout_error_of_change"] for r in table if r["dataset"] == ds and r["target"] == target]
            assert errs and errs == sorted(errs, key=lambda e: (e is None, e or 0))
    json.dumps(table, allow_nan=False)


# ---------------------------------------------------------------------------- predict

def test_predict_is_close_to_the_truth_and_says_which_law(fits):
    P, N = 4e5, 50.0
    out = predict(fits["instruct"], P, N, base_entropy=H["instruct"])
    truth = true_values("instruct", P, N)
    for q in ("ft_loss", "forget_ce", "forget_kl"):
        d = out[q]
        assert d["value"] == pytest.approx(float(truth[q][0]), rel=0.03), q
        assert d["lo"] <= d["value"] <= d["hi"]
        assert d["law"] in fits["instruct"] and d["fitted_target"] in fits["instruct"][d["law"]].targets
        assert d["extrapolated"] is False and d["reliable"] is True
    # one forgetting law; the other quantity is derived through the base entropy (exactly)
    assert out["forget_ce"]["law"] == out["forget_kl"]["law"]
    for k in ("value", "lo", "hi"):
        assert out["forget_ce"][k] - out["forget_kl"][k] == pytest.approx(H["instruct"], abs=1e-12)
    json.dumps(out, allow_nan=False)


def test_predict_accepts_arrays_stored_dicts_and_forced_laws(fits):
    stored = {k: json.loads(json.dumps(f.to_dict())) for k, f in fits["news"].items()}
    a = predict(fits["news"], [2e5, 6.4e6], [10, 1000], base_entropy=H["news"])
    b = predict(stored, [2e5, 6.4e6], [10, 1000], base_entropy=H["news"])
    assert a == b
    assert len(a["ft_loss"]["value"]) == 2
    assert a["ft_loss"]["extrapolated"] == [False, True]
    forced = predict(fits["news"], 2e5, 10, laws={"forget_ce": "additive:forget_ce"})
    assert forced["forget_ce"]["law"] == "additive:forget_ce"
    with pytest.raises(ValueError, match="not a fitted"):
        predict(fits["news"], 2e5, 10, laws={"forget_ce": "linear"})


# ---------------------------------------------------------------------------- plan

def test_plan_respects_the_budget_and_minimises_ft_loss(fits):
    f = fits["instruct"]
    steps = [4, 8, 16, 32, 64, 128, 256]
    budget = 2.3
    best = plan(f, budget, P_PER_RANK, ranks=RANKS, steps=steps, base_entropy=H["instruct"])
    assert best["bound"] == "upper"
    assert best["forget_ce"]["hi"] <= budget
    # brute force over the same grid through predict: nothing feasible learns more
    R, S = np.meshgrid(RANKS, steps, indexing="ij")
    laws = best["laws"]
    grid = predict(f, (R * P_PER_RANK).ravel(), S.ravel(), base_entropy=H["instruct"])
    assert {t: grid[t]["law"][0] if isinstance(grid[t]["law"], list) else grid[t]["law"] for t in laws} == laws
    hi = np.array(grid["forget_ce"]["hi"])
    loss = np.array(grid["ft_loss"]["value"])
    assert best["ft_loss"]["value"] == pytest.approx(loss[hi <= budget].min())
    # the trade-off: per rank, the longest run within budget; one step more would break it
    for entry in best["tradeoff"]:
        if entry["steps"] is None:
            continue
        assert entry["forget_ce"]["hi"] <= budget
        i = steps.index(entry["steps"])
        if i + 1 < len(steps):
            nxt = predict(f, entry["P"], steps[i + 1], base_entropy=H["instruct"])
            assert nxt["forget_ce"]["hi"] > budget
    assert [e["rank"] for e in best["tradeoff"]] == list(RANKS)


def test_plan_upper_bound_is_more_conservative_than_mean(fits):
    f = fits["instruct"]
    upper = plan(f, 2.3, P_PER_RANK, ranks=RANKS, base_entropy=H["instruct"])
    mean = plan(f, 2.3, P_PER_RANK, ranks=RANKS, bound="mean", base_entropy=H["instruct"])
    assert mean["ft_loss"]["value"] <= upper["ft_loss"]["value"]
    assert mean["forget_ce"]["value"] <= 2.3


def test_infeasible_budget_raises_with_the_least_forgetting(fits):
    with pytest.raises(PlanError, match="the least on the grid is"):
        plan(fits["instruct"], 0.5, P_PER_RANK, ranks=RANKS, base_entropy=H["instruct"])


def test_no_reliable_law_is_said_not_predicted(fits):
    # every law fails the 10% rule when its held-out splits are broken: a non-finite
    # prediction counts against the law (it is not skipped), so is a split without a number
    broken = {}
    for k, f in fits["news"].items():
        held = {key: dict(h, nonfinite=list(f.targets)) for key, h in f.heldout.items()}
        broken[k] = replace(f, heldout=held)
    out = predict(broken, 2e5, 10, base_entropy=H["news"])
    for q in ("ft_loss", "forget_ce", "forget_kl"):
        assert out[q]["value"] is None and "no reliable law" in out[q]["reason"], q
        assert "non-finite" in out[q]["reason"]
    json.dumps(out, allow_nan=False)
    p = plan(broken, 2.3, P_PER_RANK, ranks=RANKS, base_entropy=H["news"])
    assert p["rank"] is None and "no reliable law" in p["reason"]
    table = comparison_table({"news": broken})
    assert all(r["heldout_error_of_change"] is None and r["reliable"] is False for r in table)


def test_comparison_rows_carry_the_error_of_change_and_its_parts(fits):
    for r in comparison_table(fits):
        if r["law"] == "linear":
            continue
        parts = [r["heldout_P_error_of_change"], r["heldout_N_error_of_change"]]
        assert r["heldout_error_of_change"] == max(parts)
        assert r["reliable"] == (r["state"] == "reliable")
        if r["reliable"]:
            assert r["heldout_error_of_change"] <= RELIABLE_ERROR
        assert r["coverage"] is not None and r["units"] == len(RANKS)
    # the generating law itself predicts its held-out runs within 10% of the change
    paper = [r for r in comparison_table(fits) if r["law"] == "paper"]
    assert all(r["reliable"] for r in paper), [(r["dataset"], r["target"], r["reliability"]) for r in paper]


# ---------------------------------------------------------------------------- reliability states

def test_stored_fits_have_one_reliable_flag(fits):
    d = fits["news"]["paper"].to_dict()
    assert "reliable" not in d and "fit_clean" in d  # warnings-based cleanliness is not reliability
    assert all(r["state"] in ("reliable", "unreliable", "undecided") for r in comparison_table(fits))


# ---------------------------------------------------------------------------- intervals

def test_intervals_say_what_they_are(fits):
    out = predict(fits["instruct"], 4e5, 50.0, base_entropy=H["instruct"])
    for q in ("ft_loss", "forget_ce", "forget_kl"):
        d = out[q]
        assert d["level"] == 0.95 and d["units"] == len(RANKS) and d["coverage"] is not None
        assert d["supported_level"] == pytest.approx(len(RANKS) / (len(RANKS) + 1))
        assert d["state"] == "reliable"
        for shared in ("forgetting corpus", "held-out fine-tuning examples", "one data order"):
            assert shared in d["conditional_on"], (shared, d["conditional_on"])
        assert "left out in turn" in d["coverage_check"]
    # one run per rank (4 runs): too few to model how run spread changes with P, and it says so
    assert "assumed equal" in out["forget_kl"]["run_variance"]
    f = fits["instruct"]["kl_power"]
    assert f.inference["units"] == len(RANKS) and f.inference["redrawn"] == 0
    assert all(df >= 1 for df in f.inference["df"].values())


def test_forgetting_intervals_never_give_negative_kl(fits):
    # a forget_ce law's interval lives on log(forget_ce - H): at the smallest rank and step KL is tiny
    f = fits["instruct"]
    out = predict(f, 1e5, 2.0, laws={"forget_ce": "additive:forget_ce"}, base_entropy=H["instruct"])
    assert out["forget_kl"]["lo"] >= 0 and out["forget_ce"]["lo"] >= H["instruct"]
    assert out["forget_kl"]["lo"] <= out["forget_kl"]["value"] <= out["forget_kl"]["hi"]
    assert f["additive:forget_ce"].calibration["scale"]["forget_ce"] == "log(y - offset)"


def test_intervals_grow_beyond_the_data(fits):
    f = fits["news"]
    inside = predict(f, 8e5, 64.0, base_entropy=H["news"])["ft_loss"]
    far = predict(f, 8e5 * 64, 64.0 * 16, base_entropy=H["news"])["ft_loss"]
    assert not inside["extrapolated"] and far["extrapolated"] and far["distance"] > 3
    assert (far["hi"] - far["lo"]) / far["value"] > 1.5 * (inside["hi"] - inside["lo"]) / inside["value"]


def test_law_choice_is_carried_or_said(fits):
    out = predict(fits["news"], 8e5, 64.0, base_entropy=H["news"])
    for q in ("ft_loss", "forget_ce"):
        d = out[q]
        assert isinstance(d["widened_for"], list) and d["law_choice"]
        for other in d["widened_for"]:  # a rival as good within the noise: its prediction is inside
            label, _, t = other.partition("@")
            v = predict(fits["news"], 8e5, 64.0, laws={t or q: label}, base_entropy=H["news"])[q]["value"]
            assert d["lo"] <= v <= d["hi"]
    assert out["line_gap"] is not None  # distance of the predicted pair from the linear law


# ---------------------------------------------------------------------------- plan extrapolation

def test_plan_stays_within_the_studied_ranks_unless_asked(fits):
    f = fits["instruct"]
    kept = plan(f, 3.0, P_PER_RANK, base_entropy=H["instruct"], bound="mean")
    assert max(e["rank"] for e in kept["tradeoff"]) == max(RANKS) and not kept["extrapolated"]
    assert kept["extrapolate"] is False and kept["intervals"]["ft_loss"]["units"] == len(RANKS)
    assert kept["ft_loss"]["lo"] <= kept["ft_loss"]["value"] <= kept["ft_loss"]["hi"]
    wide = plan(f, 3.0, P_PER_RANK, base_entropy=H["instruct"], bound="mean", extrapolate=True)
    assert max(e["rank"] for e in wide["tradeoff"]) == 256
    assert any(e.get("extrapolated") for e in wide["tradeoff"] if e["steps"] is not None)
    # explicit ranks beyond the study are predicted, but not chosen, without extrapolate
    only_big = plan(f, 3.0, P_PER_RANK, ranks=[16, 32, 64, 128], base_entropy=H["instruct"], bound="mean")
    assert only_big["rank"] <= max(RANKS)
