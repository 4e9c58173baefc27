"""Methods compared at equal fine-tuning loss (laws/methods.py): the verdicts' logic on constructed points.
Their size, coverage and power are the simulation tier's (tests/sim/test_sim_methods.py)."""

from __future__ import annotations

import numpy as np
import pytest

from forgetscale.laws.methods import compare_method, f7, method_rows

BASE = 2.0


def _points(shift: float, runs: str, x: np.ndarray, sd: float = 0.005, seed: int = 0, c: float = 0.5) -> dict:
    """Points on forget_ce = 3.0 - c * ft_loss + shift, per run a small run effect and point noise."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(list(runs), x.size)
    ft = np.tile(x, len(runs))
    effect = np.repeat(rng.normal(0, sd, len(runs)), x.size)
    ce = 3.0 - c * ft + shift + effect + rng.normal(0, sd / 2, ft.size)
    return {"ft_loss": ft, "forget_ce": ce, "run_id": ids, "step": np.tile(np.arange(4, 4 * x.size + 1, 4), len(runs))}


X = np.array([1.4, 1.6, 1.8, 2.0])  # forgetting at the line: 3 - 0.5 x - 2 = 0.0 .. 0.3 nats -> margin ~0.03


def test_a_method_on_the_reference_line_is_the_same_and_a_shifted_one_is_not():
    ref = _points(0.0, "abcd", X)
    assert compare_method(ref, _points(0.0, "mn", X, seed=1), BASE)["verdict"] == "same"
    more = compare_method(ref, _points(0.2, "mn", X, seed=2), BASE)
    less = compare_method(ref, _points(-0.2, "mn", X, seed=3), BASE)
    assert (more["verdict"], less["verdict"]) == ("forgets_more", "forgets_less")
    assert more["lo"] < more["difference"] < more["hi"] and more["difference"] == pytest.approx(0.2, abs=0.02)
    assert more["margin"] == pytest.approx(0.2 * (3.0 - 0.5 * 1.7 - BASE), rel=0.05)


def test_only_the_common_range_of_fine_tuning_loss_is_compared():
    ref = _points(0.0, "abcd", X)
    later = _points(0.0, "mn", X + 0.4)  # a curve that overlaps the reference's on [1.8, 2.0] only
    out = compare_method(ref, later, BASE)
    assert out["range"] == pytest.approx([1.8, 2.0]) and out["n_points"] == 4  # 2 points of each of 2 runs
    apart = compare_method(ref, _points(0.0, "mn", X + 5.0), BASE)
    assert apart["verdict"] == "undecided" and "do not overlap" in apart["reason"]


def test_too_few_runs_leave_it_undecided_with_a_reason():
    two_ref = compare_method(_points(0.0, "ab", X), _points(0.2, "mn", X), BASE)
    assert two_ref["verdict"] == "undecided" and "reference runs" in two_ref["reason"]
    one_run = compare_method(_points(0.0, "abcd", X), _points(0.2, "m", X), BASE)
    assert one_run["verdict"] == "undecided" and one_run["lo"] is None


def _row(method: str, verdict: str, difference: float, se: float, margin: float = 0.05) -> dict:
    return {"method": method, "verdict": verdict, "difference": difference, "se": se, "df": 10.0, "margin": margin,
            "lo": difference - 2 * se, "hi": difference + 2 * se, "reason": None if verdict != "undecided" else "x"}


def test_f7_needs_every_method_equivalent_and_one_material_difference_refutes_it():
    same = [_row("dora", "same", 0.0, 0.005), _row("ia3", "same", 0.01, 0.005)]
    assert f7("news", same, "lora")["verdict"] == "supported"
    open_ = [*same[:1], _row("ia3", "undecided", 0.03, 0.03)]
    assert f7("news", open_, "lora")["verdict"] == "undecided"
    # forgets more, but within the margin at the Bonferroni level: not a material difference
    small = [*same[:1], _row("ia3", "forgets_more", 0.04, 0.01)]
    assert f7("news", small, "lora")["verdict"] == "undecided"
    material = [*same[:1], _row("ia3", "forgets_more", 0.3, 0.01)]
    out = f7("news", material, "lora")
    assert out["verdict"] == "not_supported" and "ia3" in out["evidence"]["reason"]


def test_method_rows_compare_each_dataset_s_methods_with_lora_and_carry_p_lr_and_cost():
    rows = []
    for method, shift, runs in (("lora", 0.0, "abcd"), ("dora", 0.2, "mn")):
        p = _points(shift, runs, X)
        cols = zip(p["run_id"], p["step"], p["ft_loss"], p["forget_ce"], strict=True)
        rows += [{"data": "news", "dataset": "news", "method": method, "run_id": r, "step": int(s), "ft_loss": f,
                  "forget_ce": c} for r, s, f, c in cols]
    rows += [{"data": "news", "dataset": "news", "method": "lora", "run_id": "a", "step": 0, "ft_loss": 2.5,
              "forget_ce": BASE}]
    info = {r: {"P": 100, "lr": 4e-3, "seconds_per_step": 1.0} for r in "abcd"}
    info |= {r: {"P": 120, "lr": 2e-3, "seconds_per_step": 2.0 + (r == "n")} for r in "mn"}
    out = method_rows(rows, info, min_step=4)
    assert len(out) == 1 and out[0]["method"] == "dora" and out[0]["verdict"] == "forgets_more"
    assert (out[0]["P"], out[0]["lr"], out[0]["seconds_per_step"]) == ([120], [2e-3], 2.5)
    assert method_rows([r for r in rows if r["method"] == "lora"], info, min_step=4) == []
