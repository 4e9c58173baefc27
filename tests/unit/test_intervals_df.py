"""The P exponent's interval: a run-level t for directions only runs identify (``intervals.run_level_variance``).

Its coverage under the simulated noise is in ``tests/sim/test_sim_laws.py``; here, that the rule is the
classical one where the classical one is exact: a balanced design, equal run variance, no shared shocks.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from forgetscale.laws import fit_law
from forgetscale.laws.variance import between_run

RANKS, STEPS, P_PER_RANK = (1, 4, 16, 64), (8, 12, 16, 20, 24, 32), 305_000.0


def _study(seed: int, runs_per_rank: int = 2, run_sd: float = 0.05, point_sd: float = 0.02):
    """kl_power data (A 0.02, a 0.08, b 0.8 on rank units) with a run effect and point noise, no step shocks."""
    rng = np.random.default_rng(seed)
    P, N, run = [], [], []
    y = []
    for r in RANKS:
        for k in range(runs_per_rank):
            u = rng.normal(0, run_sd)
            for n in STEPS:
                P.append(r * P_PER_RANK)
                N.append(float(n))
                run.append(f"{r}:{k}")
                y.append(0.02 * r**0.08 * n**0.8 * np.exp(u + rng.normal(0, point_sd)))
    return np.array(P), np.array(N), np.array(run), np.array(y)


def test_only_the_p_exponent_and_the_scale_are_identified_between_runs():
    P, N, run, _ = _study(0)
    jac = np.column_stack([np.ones_like(P), np.log(P), np.log(N)])  # d log KL / d(log A, a, b)
    assert between_run(jac, run).tolist() == [True, True, False]


def test_the_p_exponent_gets_the_t_of_a_regression_on_run_means():
    """Under equal run variance the REML variance of a run mean is the residual variance of the run means
    about their line in log P, so the P exponent's interval is the textbook slope interval on 8 run means:
    variance ``s² / Sxx``, ``G - 2 = 6`` df. The N exponent, read within runs, keeps the sandwich."""
    P, N, run, y = _study(3)
    fit = fit_law("kl_power", {"P": P, "N": N}, y, groups=run, inputs=("P", "N"), targets=("forget_kl",),
                  delta="auto", n_boot=0)  # fmt: skip
    inf = fit.inference
    assert inf["df"]["a"] == 6.0 and inf["df"]["b"] != 6.0
    keys = sorted(set(run))
    means = np.array([np.log(y[run == g]).mean() for g in keys])
    lp = np.array([np.log(P[run == g][0]) for g in keys])
    slope, icpt = np.polyfit(lp, means, 1)
    s2 = float(np.sum((means - icpt - slope * lp) ** 2) / (len(keys) - 2))
    sxx = float(np.sum((lp - lp.mean()) ** 2))
    j = inf["free"].index("a")
    assert abs(inf["cov"][j][j] / (s2 / sxx) - 1) < 0.05, (inf["cov"][j][j], s2 / sxx)
    # and the interval is that t interval around the fitted exponent
    lo, hi = fit.intervals["a"]
    half = stats.t.ppf(0.975, 6) * np.sqrt(inf["cov"][j][j])
    assert np.isclose(hi - lo, 2 * half, rtol=1e-9)


def test_one_run_per_rank_leaves_two_df():
    P, N, run, y = _study(5, runs_per_rank=1)
    fit = fit_law("kl_power", {"P": P, "N": N}, y, groups=run, inputs=("P", "N"), targets=("forget_kl",),
                  delta="auto", n_boot=0)  # fmt: skip
    assert fit.inference["df"]["a"] == 2.0
