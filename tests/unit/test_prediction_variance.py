"""The prediction interval's width: a normal averaged over the run variance's REML likelihood
(``variance.Components.half_width``).

Its coverage under simulated studies is in ``tests/sim/test_sim_laws.py``; here, that the likelihood on the
grid is the one REML maximises, that plentiful runs give back the normal interval, that a fixed extra
variance can only widen it, and that a store's copy gives the same interval as the fit that wrote it.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from forgetscale.laws.intervals import _components_dict, components_from
from forgetscale.laws.variance import GRID_GAMMA0, GRID_GAMMA1, reml

LEVELS, STEPS = (1.0, 4.0, 16.0, 64.0), (8.0, 16.0, 24.0, 32.0)


def _residuals(seed: int, runs_per_level: int, run_sd_power: float = 0.0):
    """Log residuals of a (scale, P exponent, N exponent) law: a run effect of sd 0.05 (times
    ``(P/8)^run_sd_power``) and point noise of sd 0.02; no shared step shocks."""
    rng = np.random.default_rng(seed)
    P, N, run, e = [], [], [], []
    for lv in LEVELS:
        for k in range(runs_per_level):
            u = rng.normal(0, 0.05 * (lv / 8) ** run_sd_power)
            for n in STEPS:
                P.append(lv)
                N.append(n)
                run.append(f"{lv}:{k}")
                e.append(u + rng.normal(0, 0.02))
    P, N = np.array(P), np.array(N)
    jac = np.column_stack([np.ones_like(P), np.log(P), np.log(N)])
    return jac, np.array(e), np.array(run), P


def test_the_likelihood_on_the_grid_peaks_where_reml_does():
    """The grid's likelihood (Woodbury and the determinant lemma on ``M``, ``b``) against REML's own optimiser:
    its most likely point lies within one grid step of the REML estimates."""
    jac, e, run, P = _residuals(1, 2, run_sd_power=0.4)
    c = reml(jac, e, run, None, P)
    assert c.slope_fitted and c.lik is not None
    g0, g1, w = c.grid.T
    best = np.argmax(w)
    assert abs(g0[best] - c.get("gamma0")) <= GRID_GAMMA0[1] - GRID_GAMMA0[0] + 1e-9
    assert abs(g1[best] - c.get("gamma1")) <= GRID_GAMMA1[1] - GRID_GAMMA1[0] + 1e-9
    assert w.sum() == pytest.approx(1.0)


def test_plentiful_runs_give_back_the_normal_interval():
    """With 16 runs per level (64, the most the grid takes) the averaged interval at the centre level is the
    normal's at the estimates within 3%: log τ² there has sd about sqrt(2/60) = 0.18, a spread that widens a
    normal's 97.5% quantile by about 1% (measured 1.3%; with 2 runs per level, 11%)."""
    jac, e, run, P = _residuals(2, 16)
    c = reml(jac, e, run, None, P)
    assert c.grid is not None
    half = c.half_width(8.0)[0]
    normal = stats.norm.ppf(0.975) * float(np.sqrt(c.total(8.0)))
    assert half == pytest.approx(normal, rel=0.03)
    assert half >= normal  # averaging over a variance's uncertainty never narrows the interval


def test_an_extra_variance_never_narrows_the_interval():
    """The fitted mean's variance and the misfit enter as fixed variance: the interval grows with them, at
    every level, in and beyond the studied ones (a t on Satterthwaite's df, holding them known, did not)."""
    jac, e, run, P = _residuals(3, 2, run_sd_power=0.4)
    c = reml(jac, e, run, None, P)
    levels = np.array([1.0, 8.0, 64.0, 256.0])
    extras = [0.0, 1e-4, 1e-3, 1e-2]
    widths = np.array([c.half_width(levels, x) for x in extras])
    assert np.all(np.diff(widths, axis=0) > 0)
    assert np.all(np.isinf(c.half_width(levels, np.inf)))


def test_a_store_gives_the_interval_of_the_fit_that_wrote_it():
    jac, e, run, P = _residuals(4, 2, run_sd_power=0.4)
    c = reml(jac, e, run, None, P)
    back = components_from(_components_dict(c, "P"))
    levels = np.array([1.0, 16.0, 256.0])
    assert np.allclose(back.half_width(levels, 1e-3), c.half_width(levels, 1e-3), rtol=1e-9)
    assert "average" in _components_dict(c, "P")["model"]


def test_a_store_written_before_keeps_its_t_interval():
    """Without the likelihood's terms (an older fits.json) the interval is the t on Satterthwaite's df."""
    jac, e, run, P = _residuals(5, 2)
    c = reml(jac, e, run, None, P)
    d = _components_dict(c, "P")
    d.pop("likelihood")
    old = components_from(d)
    assert old.lik is None and old.grid is None
    t = stats.t.ppf(0.975, old.df(256.0, 1e-3)) * np.sqrt(old.total(256.0, 1e-3))
    assert old.half_width(256.0, 1e-3) == pytest.approx(t)
    assert c.half_width(256.0, 1e-3) != pytest.approx(t)  # the fit itself averages


def test_runs_that_the_law_absorbs_leave_the_estimate_alone():
    """One run per level and a law with as many run-level directions as runs: no run-level df, a likelihood
    flat in the run variance, and no average over it (it would be set by the grid's ends)."""
    jac, e, run, P = _residuals(6, 1)
    lp = np.log(P)
    law = np.column_stack([jac, lp**2, lp**3])  # 4 run-level directions for 4 runs
    c = reml(law, e, run, None, P)
    assert c.df_run == 0 and c.lik is None and c.grid is None
    assert reml(jac, e, run, None, P).lik is not None  # 2 run-level df: averaged
