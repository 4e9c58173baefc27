"""Monte Carlo runs of the laws' intervals on synthetic studies (``synth.py``), shared by the law tests.

Each study is fitted once with ``kl_power`` (the true law) as ``fit_study`` fits it, without the
held-out noise floor (a reliability question, not an interval one). A new run with its own data order
is then drawn at rank 8 (inside the studied ranks) and rank 256 (4x beyond them), and its points are
checked against the prediction interval.

Monte Carlo error. A study contributes the share of its new run's points that fall inside; that share
lies in [0, 1] with mean p, so its variance is at most p(1 - p), and the mean over S studies has sd at
most sqrt(p(1 - p) / S): the two-sided 95% band :func:`band` is conservative for point coverage and
exact for a per-study event (an exponent covered, a verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from scipy import stats

from forgetscale.laws.fit import fit_law
from tests.sim.synth import synthetic_study

NOISE = {"run_sd": 0.05, "step_sd": 0.05, "point_sd": 0.02}
"""Log-KL sds: run effect, step shock shared by a data order (half the default study's ~10% jumps)
and point noise; ``run_sd`` is the run sd at rank 8 when it grows with rank."""
NEW_RANKS = (8, 256)


def band(p: float, n: int) -> float:
    """Half-width of the two-sided 95% Monte Carlo band of a rate ``p`` over ``n`` studies."""
    return 1.96 * math.sqrt(p * (1 - p) / n)


@dataclass
class Tally:
    n: int = 0
    cover_a: list[bool] = field(default_factory=list)
    cover_b: list[bool] = field(default_factory=list)
    cover_a_exact: list[bool] = field(default_factory=list)
    cover_new: dict[int, list[float]] = field(default_factory=lambda: {r: [] for r in NEW_RANKS})
    check: list[float] = field(default_factory=list)
    slope_fitted: list[bool] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    conditional_on: str = ""

    def rate(self, what: str, rank: int | None = None) -> float:
        v = self.cover_new[rank] if rank is not None else getattr(self, what)
        return float(np.mean([x for x in v if x is not None and np.isfinite(x)]))


def fit_kl_power(rows: list[dict[str, Any]]) -> Any:
    """``kl_power`` fitted to a synthetic study's rows after step 0, as ``rows.fit_study`` does."""
    pts = [r for r in rows if r["step"] > 0]
    P = np.array([r["P"] for r in pts])
    N = np.array([r["step"] for r in pts], float)
    return fit_law("kl_power", {"P": P, "N": N}, np.array([r["forget_kl"] for r in pts]),
                   groups=[r["run_id"] for r in pts], inputs=("P", "N"), targets=("forget_kl",), delta="auto",
                   n_boot=0, cells=[f"{r['seed']}|{r['step']}" for r in pts],
                   n_orders=len({r["seed"] for r in pts}), holdout={"P": P, "N": N})  # fmt: skip


def exact_a_covered(rows: list[dict[str, Any]], a: float, b: float) -> bool:
    """Does the textbook 95% t interval for the P exponent cover ``a``, with the N exponent known: least squares
    of the runs' mean ``log KL - b log N`` on log P, its residual df? Exact when run effects are independent
    and step shocks are common to every run (one data order), whatever the shocks do over steps."""
    pts = [r for r in rows if r["step"] > 0]
    runs = sorted({r["run_id"] for r in pts})
    lp = np.array([math.log(next(r["P"] for r in pts if r["run_id"] == g)) for g in runs])
    ym = np.array([np.mean([math.log(r["forget_kl"]) - b * math.log(r["step"]) for r in pts if r["run_id"] == g])
                   for g in runs])  # fmt: skip
    x = np.column_stack([np.ones(lp.size), lp])
    beta, rss, *_ = np.linalg.lstsq(x, ym, rcond=None)
    df = lp.size - 2
    se = math.sqrt(float(rss[0]) / df * np.linalg.inv(x.T @ x)[1, 1])
    return bool(abs(beta[1] - a) <= stats.t.ppf(0.975, df) * se)


@cache
def simulate(n: int, seed0: int, **design: Any) -> Tally:
    """``n`` studies of ``design`` (``synthetic_study`` keywords over :data:`NOISE`), seeds from ``seed0``."""
    out = Tally(n=n)
    kw = {**NOISE, **design}
    new_kw = {k: v for k, v in kw.items() if k != "seeds_per_rank"}
    for s in range(n):
        rng = np.random.default_rng(seed0 + s)
        rows, truth = synthetic_study(rng, **kw)
        fit = fit_kl_power(rows)
        (la, ha), (lb, hb) = fit.intervals["a"], fit.intervals["b"]
        out.cover_a.append(bool(la <= truth.exponents["a"] <= ha))
        out.cover_b.append(bool(lb <= truth.exponents["b"] <= hb))
        out.cover_a_exact.append(exact_a_covered(rows, truth.exponents["a"], truth.exponents["b"]))
        cal = fit.calibration
        c = cal["coverage"]["forget_kl"]
        out.check.append(math.nan if c is None else c)
        rv = cal["run_variance"]["forget_kl"]
        out.slope_fitted.append(bool(rv["slope_fitted"]))
        out.models.append(rv["model"])
        out.conditional_on = cal["conditional_on"]
        for rank in NEW_RANKS:  # a new run with its own data order: new run effect, new step shocks
            new, _ = synthetic_study(rng, ranks=(rank,), **new_kw)
            pts = [r for r in new if r["step"] > 0]
            P = np.array([r["P"] for r in pts])
            N = np.array([r["step"] for r in pts], dtype=float)
            kl = np.array([r["forget_kl"] for r in pts])
            _, lo, hi = fit.predict({"P": P, "N": N})
            out.cover_new[rank].append(float(np.mean((lo[0] <= kl) & (kl <= hi[0]))))
    return out
