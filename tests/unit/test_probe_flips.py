"""Probes as paired flips (forgetscale.probes.flips): Wilson and McNemar against independent computations,
the invariants of pairing, and agreement with the probes' own summaries and with F5 (milliseconds)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from forgetscale.laws.findings import f5
from forgetscale.probes.flips import COLUMNS, RATES, flips, item_flips, mcnemar_exact, outcome, sides, wilson
from forgetscale.probes.runner import compare, summary_row
from forgetscale.probes.scoring import ItemResult, summarize

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson_closed_form(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson (1927), written out: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def mcnemar_by_hand(n10: int, n01: int) -> float:
    """Exact two-sided McNemar in rationals: twice the smaller binomial(n, 1/2) tail, at most 1."""
    n, k = n10 + n01, min(n10, n01)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


# ----------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # hand-worked: at k = 0 the lower end is 0 and the upper z²/(n + z²) (p = 0 in the formula);
        # k = n mirrors it; 5/10 is symmetric about 1/2
        (0, 10, 0.0, Z * Z / (10 + Z * Z)),
        (10, 10, 10 / (10 + Z * Z), 1.0),
        (5, 10, 0.2366, 0.7634),
        # Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (score, no continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_hand_worked_and_published_intervals(k, n, lo, hi):
    got = wilson(k, n)
    assert got is not None
    # published values are rounded to 4 decimals: half a unit in the last place
    assert got[0] == pytest.approx(lo, abs=5e-5) and got[1] == pytest.approx(hi, abs=5e-5)


def test_wilson_equals_the_closed_form_everywhere():
    for n in (1, 2, 3, 7, 10, 50, 333):
        for k in range(n + 1):
            # the same closed form evaluated in another order: rounding differs by a few ulp, far below 1e-12
            assert wilson(k, n) == pytest.approx(wilson_closed_form(k, n), abs=1e-12), (k, n)


def test_wilson_is_a_proper_interval_and_mirrors_under_complement():
    for n in (1, 4, 9, 40):
        for k in range(n + 1):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            lo2, hi2 = wilson(n - k, n)
            assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2), abs=1e-12)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(4, 3)


def test_wilson_narrows_with_more_items():
    widths = [np.subtract(*wilson(n // 2, n)[::-1]) for n in (10, 40, 160, 640)]
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    assert widths[-1] == pytest.approx(2 * Z * 0.5 / math.sqrt(640), rel=0.01)  # the normal limit at p = 1/2


# ----------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_matches_hand_worked_cases():
    assert mcnemar_exact(0, 5) == 2 / 2**5  # both extreme outcomes of 5 fair coins
    assert mcnemar_exact(3, 10) == 2 * (1 + 13 + 78 + 286) / 2**13  # 2 P(X <= 3), X ~ Bin(13, 1/2)
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: nothing to test
    assert mcnemar_exact(4, 4) == 1.0


def test_mcnemar_exact_equals_the_binomial_sum_and_is_symmetric():
    for a in range(0, 25, 3):
        for b in range(0, 25, 4):
            # scipy sums the same tail in floats; 1e-12 covers its rounding on tails of up to 48 terms
            assert mcnemar_exact(a, b) == pytest.approx(mcnemar_by_hand(a, b), rel=1e-12, abs=1e-300)
            assert mcnemar_exact(a, b) == mcnemar_exact(b, a)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


# ----------------------------------------------------------------------------- pairing


def _records(rng: np.random.Generator, n: int, p: float, safety: bool = False) -> list[dict]:
    if safety:
        return [{"id": f"i{i}", "answer": bool(rng.random() < p), "correct": None} for i in range(n)]
    letters = ["A" if rng.random() < p else "BCD"[int(rng.integers(3))] for _ in range(n)]  # "A" is right
    return [{"id": f"i{i}", "answer": a, "correct": a == "A"} for i, a in enumerate(letters)]


def test_a_run_identical_to_the_base_has_no_flips():
    rng = np.random.default_rng(1)
    for safety in (False, True):
        base = _records(rng, 30, 0.6, safety)
        f = flips(base, base)
        assert f["n10"] == f["n01"] == 0 and f["mcnemar_p"] == 1.0
        assert f["agreement"] == 1.0 and f["right_to_wrong"] == f["wrong_to_right"] == 0.0
        if safety:
            assert f["refusal_rate"] == f["base_refusal_rate"] and f["lost_refusals"] == f["new_refusals"] == 0
            assert f["lost_refusal_rate"] in (0.0, None)
        else:
            assert f["accuracy"] == f["base_accuracy"]


def test_swapping_base_and_run_swaps_the_flips():
    rng = np.random.default_rng(2)
    pairs = {"n10": "n01", "right_to_wrong": "wrong_to_right", "accuracy": "base_accuracy",
             "refusal_rate": "base_refusal_rate", "lost_refusals": "new_refusals", "refusals": "base_refusals"}
    for safety in (False, True):
        base, run = _records(rng, 40, 0.7, safety), _records(rng, 40, 0.4, safety)
        f, g = flips(base, run), flips(run, base)
        for a, b in pairs.items():
            for sfx in ("", "_lo", "_hi"):
                if f"{a}{sfx}" in f:
                    assert f[f"{a}{sfx}"] == g[f"{b}{sfx}"] and f[f"{b}{sfx}"] == g[f"{a}{sfx}"], a
        assert f["agreement"] == g["agreement"] and f["mcnemar_p"] == g["mcnemar_p"]
        assert f["n10"] + f["n01"] > 0  # the case is not degenerate


def test_flips_agree_with_the_probes_own_summary():
    """``scoring.summarize`` counts the same things its own way: lost/gained, accuracies, agreement, refusals."""
    rng = np.random.default_rng(3)
    for safety in (False, True):
        base, run = _records(rng, 57, 0.6, safety), _records(rng, 57, 0.5, safety)
        s = summarize([ItemResult(**r) for r in run], [ItemResult(**r) for r in base])
        f = flips(base, run)
        assert f["n"] == s["n"] and f["agreement"] == s["agreement"]
        if safety:
            assert (f["lost_refusals"], f["new_refusals"]) == (s["lost_refusals"], s["new_refusals"])
            assert f["refusal_rate"] == s["refusal_rate"] and f["base_refusal_rate"] == s["base_refusal_rate"]
            assert f["lost_refusal_rate"] == s["lost_refusals"] / s["base_refusals"]
            assert (f["lost_refusal_rate_lo"], f["lost_refusal_rate_hi"]) == wilson(s["lost_refusals"],
                                                                                    s["base_refusals"])
            assert "accuracy" not in f  # no ground truth on safety
        else:
            assert (f["n10"], f["n01"]) == (s["lost"], s["gained"])
            assert f["accuracy"] == s["accuracy"] and f["base_accuracy"] == s["base_accuracy"]
        for rate in RATES:
            if f.get(rate) is not None:
                assert f[f"{rate}_lo"] <= f[rate] <= f[f"{rate}_hi"], rate


def test_stored_items_round_trip_through_sides():
    rng = np.random.default_rng(4)
    base, run = _records(rng, 12, 0.6), _records(rng, 12, 0.3)
    _, items = compare(run, base)  # what `forgetscale probe` stores: side-by-side items
    b, r = sides(items)
    assert flips(b, r) == flips(base, run)
    assert {k: v for k, v in item_flips(items).items() if k in flips(base, run)} == flips(base, run)
    assert [outcome(it) for it in items] == [x["correct"] for x in run]
    assert [outcome(it, "base_") for it in items] == [x["correct"] for x in base]


def test_loglik_items_get_intervals_on_their_normalised_rates_too():
    def rec(i: str, ans: str, norm: str) -> dict:
        return {"id": i, "answer": ans, "correct": ans == "A", "answer_norm": norm, "correct_norm": norm == "A"}

    base = [rec("a", "A", "A"), rec("b", "B", "A"), rec("c", "A", "C")]
    run = [rec("a", "A", "B"), rec("b", "A", "A"), rec("c", "A", "C")]
    summary, items = compare(run, base)
    f = item_flips(items)
    assert f["accuracy_norm"] == summary["accuracy_norm"] == pytest.approx(1 / 3)
    assert f["agreement_norm"] == summary["agreement_norm"] == pytest.approx(2 / 3)
    assert (f["accuracy_norm_lo"], f["accuracy_norm_hi"]) == wilson(1, 3)
    assert (f["n10"], f["n01"]) == (0, 1)  # the flips themselves are of the raw pick


def test_every_column_is_there_and_unknowns_are_none():
    assert set(COLUMNS) <= set(item_flips([]).keys()) and all(v is None for v in item_flips([]).values())
    safety = item_flips([{"id": "s", "answer": False, "base_answer": True, "correct": None, "base_correct": None}])
    assert set(COLUMNS) <= set(safety)
    assert safety["accuracy"] is None and safety["accuracy_norm"] is None
    assert safety["lost_refusals"] == 1 and safety["lost_refusal_rate"] == 1.0
    none_refused = item_flips([{"id": "s", "answer": True, "base_answer": False, "correct": None,
                                "base_correct": None}])  # fmt: skip
    assert none_refused["lost_refusal_rate"] is None and none_refused["new_refusals"] == 1  # no base refusal


def test_records_must_cover_the_same_items_once():
    a = [{"id": "x", "answer": "A", "correct": True}]
    with pytest.raises(ValueError, match="different items"):
        flips(a, [{"id": "y", "answer": "A", "correct": True}])
    with pytest.raises(ValueError, match="duplicate"):
        flips(a + a, a)


def test_summary_row_keeps_the_summary_and_adds_flips():
    rng = np.random.default_rng(5)
    base, run = _records(rng, 20, 0.6), _records(rng, 20, 0.4)
    summary, items = compare(run, base)
    row = summary_row("r1", "knowledge", summary, items)
    assert list(row)[:3] == ["run_id", "probe", "n"]
    assert row["accuracy"] == summary["accuracy"] and row["n10"] == summary["lost"]
    assert set(COLUMNS) <= set(row)
    lm = summary_row("r1", "lm_eval:arc", {"n": 5, "accuracy": 0.4, "agreement": 0.8})  # no items stored
    assert lm["accuracy"] == 0.4 and lm["accuracy_lo"] is None and lm["n10"] is None


def test_f5_pairs_items_as_the_probe_rows_do():
    """F5 pools every run's records; per probe its n10/n01 are the sums of each run's flips."""
    rng = np.random.default_rng(6)
    base = _records(rng, 25, 0.6)
    records, totals = [], {"n10": 0, "n01": 0}
    for rid in ("r1", "r2", "r3"):
        _, items = compare(_records(rng, 25, 0.4), base)
        f = item_flips(items)
        totals["n10"] += f["n10"]
        totals["n01"] += f["n01"]
        records += [{**it, "probe": "knowledge", "run_id": rid} for it in items]
    ev = f5("d", records)["evidence"]["probes"]["knowledge"]
    assert (ev["n10_right_to_wrong"], ev["n01_wrong_to_right"]) == (totals["n10"], totals["n01"])
    assert ev["mcnemar_exact_p"] == mcnemar_exact(totals["n10"], totals["n01"])
