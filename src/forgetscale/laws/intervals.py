"""Intervals at the level of independent units: parameters, and prediction intervals for a new run.

Units. Points of one run share its offset (seed, adapter init), so runs are
resampled or clustered, never points. Runs that share a data order share its
batches: every run's point at step N in that order carries the same *step
shock*. A :class:`Design` names, per point, its run and its *cell* (data
order, step); with one data order for all runs (the default study) the cells
are the steps, and they are the only replication of what all runs share.

Parameters. The fit is linearised at its optimum on the fitting scale (log
residuals, least squares: exact for ``delta="auto"`` up to the few points
Huber down-weights, an approximation for a near-L1 small δ) in coordinates ``w`` (``log|θ|`` for scale parameters, ``θ``
otherwise; pinned parameters and parameters on a bound are held fixed). The
covariance is a two-way cluster-robust sandwich, by run and by cell
(Cameron, Gelbach and Miller 2011: ``V = V_run + V_cell - V_point``), each part
the leave-one-cluster-out jackknife (CR3: residuals corrected for the
cluster's leverage, so that four runs are not read as forty points). A
parameter's interval is ``w ± t_{0.975, df}·se`` with ``df`` from
Satterthwaite's rule over the two parts (``G_run - 2`` when only runs vary it,
a level and a slope being estimated across runs; ``G_cell - 3`` when only steps
do, a margin measured by the simulation tier). No resample is drawn, so none is redrawn.

Prediction intervals for a new run, on the scale where the quantity lives
(log of the target; for a ``forget_ce`` law with a known base entropy ``H``,
log of ``forget_ce - H``, so KL is never negative). Each run is left out in
turn and the law refitted on the others; its log errors give the run-level
variance ``τ²`` (mean squared run-mean error) and the within-run variance
``σ²_w``; the step-shock variance ``σ²_step`` comes from the full fit's
residuals by cell (0 when no two runs share a cell). At ``x`` the half-width
is ``t_{0.975, G-1}·sqrt(τ² + σ²_w + σ²_step + growth(x) + extra(x))``:
``growth`` is how much the fitted mean's variance at ``x`` exceeds its
average over the data (it grows beyond the studied P and N), and ``extra`` the
misfit outside the data, ``(κ_k·d_k)²`` summed over the held-out inputs ``k``:
``d_k`` is how far ``x`` lies beyond the studied range in ``log k`` and ``κ_k``
the held-out split's RMS log error per unit of log distance it extrapolated.
The interval is a normal random-effects interval: its 95% rests on that model.
Without it, ``G`` runs can vouch for a level of ``G/(G+1)`` at most
(``supported_level``); a leave-one-run-out check of the interval is reported
as ``coverage``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from forgetscale.laws.forms import FitError, LawForm
from forgetscale.laws.optimize import BOOT_MAXITER, Best, fit_point

Array = np.ndarray
LEVEL = 0.95
MIN_RUNS = 3  # fewer runs than this and no run-level variance can be estimated
MAX_REFITS = 12  # more runs than this: leave-one-run-out errors from the linearised fit (fast, near exact)
PARAM_METHOD = ("t interval on a two-way (run, data-order step) cluster-robust jackknife variance of the "
                "linearised fit, Satterthwaite df")
PI_METHOD = ("95% prediction interval for a new run: t_{G-1} x sqrt(run + within-run + step-shock variance "
             "+ growth of the mean's variance + misfit per unit log distance beyond the data)")


@dataclass(frozen=True)
class Design:
    """What the points of a fit share: ``run`` and ``cell`` (data order x step) labels, as integers."""

    run: Array
    cell: Array
    n_orders: int

    @property
    def n_runs(self) -> int:
        return len(np.unique(self.run))

    @property
    def shared(self) -> bool:
        """Whether two runs share a cell (a data order): their step shocks are common."""
        return len(np.unique(self.cell)) < self.cell.size

    def conditional_on(self) -> str:
        if not self.shared:
            return "the studied runs, each with its own data order"
        if self.n_orders == 1:
            return ("this batch order: all runs share one data order, whose step shocks are treated as "
                    "independent across steps")
        return f"{self.n_orders} data orders, step shocks independent across steps"


def design(runs: Any, cells: Any | None = None, n_orders: int | None = None) -> Design:
    """Integer labels of runs and cells; ``cells=None``: every point is its own cell.

    Example:
        >>> d = design(["a", "a", "b", "b"], ["s8", "s16", "s8", "s16"], n_orders=1)
        >>> d.n_runs, d.shared, d.cell.tolist()
        (2, True, [1, 0, 1, 0])
    """
    run = np.unique(np.asarray(runs).astype(str), return_inverse=True)[1]
    cell = (np.arange(run.size) if cells is None
            else np.unique(np.asarray(cells).astype(str), return_inverse=True)[1])  # fmt: skip
    if cell.size != run.size:
        raise ValueError(f"{cell.size} cell labels for {run.size} points")
    return Design(run, cell, 1 if n_orders is None else int(n_orders))


# ---------------------------------------------------------------------------- coordinates

def free_params(form: LawForm, best: Best) -> list[int]:
    """Indices of the parameters the interval treats as estimated: not pinned, not on a bound."""
    return [i for i in best.coords.free if i not in best.on_bound]


def to_w(form: LawForm, theta: Array, free: list[int]) -> Array:
    """Interval coordinates: ``log|θ|`` for scale parameters, ``θ`` otherwise."""
    th = np.asarray(theta, float)
    cols = [np.log(np.abs(th[..., i])) if form.params[i] in form.log_params else th[..., i] for i in free]
    return np.stack(cols, axis=-1) if cols else np.zeros(th.shape[:-1] + (0,))


def from_w(form: LawForm, theta: Array, free: list[int], w: Array) -> Array:
    """``theta`` with its free entries set from ``w`` (leading axes of ``w`` broadcast)."""
    w = np.asarray(w, float)
    out = np.broadcast_to(np.asarray(theta, float), w.shape[:-1] + (form.n_params,)).copy()
    with np.errstate(over="ignore"):  # a draw far out on an unidentified scale overflows to inf: invalid, not a warning
        for j, i in enumerate(free):
            out[..., i] = np.sign(theta[i]) * np.exp(w[..., j]) if form.params[i] in form.log_params else w[..., j]
    return out


def log_gradient(form: LawForm, theta: Array, free: list[int], x: Array, offset: Array | None = None) -> Array:
    """``∂ log(pred - offset) / ∂w`` by central differences: ``(n_out, n, k)``."""
    k = len(free)
    if k == 0:
        return np.zeros((len(form.outputs), x.shape[1], 0))
    w0 = to_w(form, theta, free)
    h = 1e-5 * np.maximum(1.0, np.abs(w0))
    ws = np.concatenate([w0 + np.diag(h), w0 - np.diag(h)])
    pred = form.predict(from_w(form, theta, free, ws), x)  # (2k, n_out, n)
    off = 0.0 if offset is None else offset[:, None]
    with np.errstate(all="ignore"):
        lp = np.log(pred - off)
        g = (lp[:k] - lp[k:]) / (2 * h[:, None, None])
    return np.moveaxis(g, 0, -1)


# ---------------------------------------------------------------------------- parameter covariance

def jackknife_cov(jac: Array, r: Array, omega: Array, labels: Array) -> Array:
    """Leave-one-cluster-out (CR3) covariance of a weighted least-squares fit, from one linearisation.

    Args:
        jac: ``(m, k)`` derivatives of the fitted values; r: ``(m,)`` residuals (observed - fitted);
        omega: ``(m,)`` weights; labels: ``(m,)`` cluster of each row.

    Returns:
        ``(G-1)/G · Σ_g Δ_g Δ_gᵀ``, ``Δ_g`` the exact change of a linear fit when cluster ``g`` is dropped.

    Example:
        >>> x = np.array([[1., 0.], [1., 1.], [1., 2.], [1., 3.]]); y = np.array([0.1, 0.9, 2.1, 2.9])
        >>> beta = np.linalg.lstsq(x, y, rcond=None)[0]
        >>> v = jackknife_cov(x, y - x @ beta, np.ones(4), np.arange(4))
        >>> bool(v[1, 1] > 0)
        True
    """
    bread = np.linalg.pinv((jac * omega[:, None]).T @ jac)
    groups = np.unique(labels)
    meat = np.zeros((jac.shape[1], jac.shape[1]))
    for g in groups:
        m = labels == g
        jg, wg = jac[m], omega[m]
        hgg = jg @ bread @ (jg * wg[:, None]).T
        with np.errstate(all="ignore"):
            try:
                adj = np.linalg.solve(np.eye(m.sum()) - hgg, r[m])
            except np.linalg.LinAlgError:
                adj = np.linalg.lstsq(np.eye(m.sum()) - hgg, r[m], rcond=None)[0]
        d = bread @ (jg * wg[:, None]).T @ adj
        meat += np.outer(d, d)
    n = len(groups)
    return meat * (n - 1) / max(n, 1)


def param_covariance(
    form: LawForm, best: Best, x: Array, y: Array, dz: Design, delta: float,
) -> dict[str, Any]:
    """The two-way cluster-robust covariance of the free parameters (see the module docstring).

    Returns:
        ``{"free": indices, "cov": (k, k), "df": (k,), "n_runs", "n_cells", "identified": bool}``.
    """
    free = free_params(form, best)
    out: dict[str, Any] = {"free": free, "cov": np.zeros((len(free), len(free))), "df": np.full(len(free), np.nan),
                           "n_runs": dz.n_runs, "n_cells": int(len(np.unique(dz.cell))), "identified": True}
    if not free:
        return out
    g = log_gradient(form, best.theta, free, x)  # (n_out, n, k)
    with np.errstate(all="ignore"):
        r = np.log(y) - np.log(form.predict(best.theta, x))
    jac, res = g.reshape(-1, len(free)), r.reshape(-1)
    rows_run = np.tile(dz.run, y.shape[0])
    rows_cell = np.tile(dz.cell, y.shape[0])
    rows_point = np.tile(np.arange(x.shape[1]), y.shape[0])
    if not (np.all(np.isfinite(jac)) and np.all(np.isfinite(res))):
        out["identified"] = False
        out["cov"] = np.full((len(free), len(free)), np.inf)
        return out
    # The least-squares linearisation at the optimum (unit weights). Huber's own weights, min(1, δ/|r|),
    # make a near-L1 fit (δ = 1e-3 on residuals ~0.1) lean on the few points it happens to pass through:
    # measured 5x too small an se for a P exponent over 6 runs. With δ="auto" the fit is nearly least squares.
    omega = np.ones_like(res)
    info = (jac * omega[:, None]).T @ jac
    ev = np.linalg.eigvalsh(info)
    if ev.min() <= 1e-10 * max(ev.max(), 1e-300):
        out["identified"] = False
    v_run = jackknife_cov(jac, res, omega, rows_run)
    v_point = jackknife_cov(jac, res, omega, rows_point)
    excess = np.zeros_like(v_run)
    if dz.shared:
        # what the cells add beyond independent points: the step shocks. Only its positive part is
        # added, so that sampling noise in the difference never shrinks the run-level variance
        lam, vec = np.linalg.eigh(jackknife_cov(jac, res, omega, rows_cell) - v_point)
        excess = (vec * np.maximum(lam, 0)) @ vec.T
    cov = v_run + excess
    # Satterthwaite: run part on G_run - 2 df (a level and a slope are estimated across runs); step
    # part on G_cell - 3: a jackknife over 6 log-spaced steps, dominated by the end steps' leverage,
    # varies more than its nominal df say (tests/sim, one data order: N exponent coverage 77% with
    # G - 1, 87% with G - 2, measured over 150 studies)
    a, b = np.diag(v_run), np.maximum(np.diag(excess), 0)
    g_run, g_cell = max(dz.n_runs - 2, 1), max(out["n_cells"] - 3, 1)
    with np.errstate(all="ignore"):
        df = (a + b) ** 2 / (a**2 / g_run + b**2 / g_cell)
    out["cov"], out["df"] = cov, np.where(np.isfinite(df) & (df > 0), np.minimum(df, 1e6), g_run)
    return out


def param_intervals(form: LawForm, best: Best, theta: Array, pc: Mapping[str, Any],
                    level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """``level`` t intervals per parameter in natural units (NaN: pinned, on a bound, unidentified)."""
    out = {p: (math.nan, math.nan) for p in form.params}
    w = to_w(form, theta, pc["free"])
    for j, i in enumerate(pc["free"]):
        se = math.sqrt(pc["cov"][j, j]) if np.isfinite(pc["cov"][j, j]) else math.inf
        half = float(stats.t.ppf(0.5 + level / 2, pc["df"][j])) * se
        lo, hi = w[j] - half, w[j] + half
        if form.params[i] in form.log_params:
            s = np.sign(theta[i])
            lo, hi = sorted((s * math.exp(min(lo, 700)), s * math.exp(min(hi, 700))))
        out[form.params[i]] = (float(lo), float(hi))
    return out


def param_draws(form: LawForm, theta: Array, pc: Mapping[str, Any], n: int, seed: int) -> Array:
    """``n`` parameter vectors from the t distribution of the free parameters (for bands of the mean)."""
    free = pc["free"]
    if n <= 0 or not free or not np.all(np.isfinite(pc["cov"])):
        return np.zeros((0, form.n_params))
    rng = np.random.default_rng(seed)
    lam, vec = np.linalg.eigh(pc["cov"])
    z = rng.standard_normal((n, len(free))) @ (vec * np.sqrt(np.maximum(lam, 0))).T
    df = float(np.min(pc["df"]))
    z *= np.sqrt(df / rng.chisquare(df, (n, 1)))
    return from_w(form, theta, free, to_w(form, theta, free) + z)


def clip_intervals(form: LawForm, intervals: dict[str, tuple[float, float]]) -> dict[str, list[str]]:
    """Cut each parameter's interval at its declared bounds, in place; return the sides cut per parameter.

    A t interval is symmetric in the interval coordinates and can reach past a bound the law declares
    (an exponent below its floor, a scale beyond ``HUGE``); values there are not the law's, so the
    interval stops at the bound, and that side is one the data do not bound.

    Example:
        >>> from forgetscale.laws.forms import LAWS
        >>> iv = {"c_fft": (-2e6, 1.0), "s_fft": (1.0, 2.0)}
        >>> clip_intervals(LAWS["linear"], iv), iv["c_fft"]
        ({'c_fft': ['lower']}, (-1000000.0, 1.0))
    """
    cut: dict[str, list[str]] = {}
    for name, (lo, hi) in intervals.items():
        b_lo, b_hi = form.bounds[name]
        sides = [side for side, out in (("lower", lo < b_lo), ("upper", hi > b_hi)) if out]  # NaN: neither
        if sides:
            intervals[name] = (max(lo, b_lo), min(hi, b_hi))
            cut[name] = sides
    return cut


def clip_draws(form: LawForm, samples: Array) -> tuple[Array, float]:
    """Parameter draws clipped to the declared bounds, and the share of draws that had a value clipped."""
    if not len(samples):
        return samples, 0.0
    lo, hi = np.array([form.bounds[p] for p in form.params], dtype=float).T
    outside = (samples < lo) | (samples > hi)
    return np.clip(samples, lo, hi), float(np.mean(outside.any(axis=1)))


# ---------------------------------------------------------------------------- prediction intervals

def _pi_scale(pred: Array, offset: Array) -> Array:
    with np.errstate(all="ignore"):
        return np.log(pred - offset[:, None])


def calibrate(
    form: LawForm, x: Array, y: Array, dz: Design, best: Best, delta: float, targets: tuple[str, ...],
    offset: Array, mean_var: Array,
) -> dict[str, Any]:
    """Run-level variance components of a new run's prediction error (see the module docstring).

    Args:
        x, y: the fitted data; dz: its design; best: the full fit.
        offset: ``(n_out,)`` subtracted before the log (the base entropy for ``forget_ce``; else 0).
        mean_var: ``(n_out, n)`` variance of the fitted mean at the data (its average is what
            ``τ²`` already carries; only growth beyond it is added at new points).

    Returns:
        Per target: ``tau2``, ``within2``, ``step2``, ``mean_var_in``, ``df``, ``t``, ``coverage``
        (leave-one-run-out check), ``supported_level`` (``G/(G+1)``), ``units``, ``offset``, ``scale``;
        and ``n_runs``, ``n_not_converged``, ``note``.
    """
    names = dict.fromkeys(targets)
    out: dict[str, Any] = {"method": PI_METHOD, "level": LEVEL, "units": dz.n_runs, "n_orders": dz.n_orders,
                           "conditional_on": dz.conditional_on(), "n_not_converged": 0, "note": None,
                           "offset": {t: float(offset[i]) for i, t in enumerate(targets)},
                           "scale": {t: "log(y - offset)" if offset[i] else "log(y)" for i, t in enumerate(targets)},
                           **{k: dict(names) for k in ("tau2", "within2", "step2", "mean_var_in", "df", "t",
                                                        "coverage", "supported_level")}}  # fmt: skip
    if dz.n_runs < MIN_RUNS:
        out["note"] = f"{dz.n_runs} runs (< {MIN_RUNS}): no run-level variance, no prediction interval"
        return out
    resid = _pi_scale(y, offset) - _pi_scale(form.predict(best.theta, x), offset)
    if dz.n_runs > MAX_REFITS:
        errs = _linear_loo(form, best, x, y, dz, offset, resid)
        out["note"] = f"{dz.n_runs} runs: leave-one-run-out errors from the linearised fit, not refits"
    else:
        errs = np.full(y.shape, np.nan)
        for g in np.unique(dz.run):
            test = dz.run == g
            try:
                form.check(x[:, ~test], y[:, ~test])
                b = fit_point(form, x[:, ~test], y[:, ~test], delta, "varpro", 1, warm=best, maxiter=BOOT_MAXITER)
            except FitError:
                continue
            out["n_not_converged"] += not b.converged
            errs[:, test] = _pi_scale(y[:, test], offset) - _pi_scale(form.predict(b.theta, x[:, test]), offset)
    for i, t in enumerate(targets):
        e = errs[i]
        runs = [g for g in np.unique(dz.run) if np.all(np.isfinite(e[dz.run == g]))]
        if len(runs) < MIN_RUNS or not np.all(np.isfinite(resid[i])):
            out["note"] = (f"{t}: {len(runs)} runs with finite leave-one-run-out errors on the "
                           f"{out['scale'][t]} scale: no prediction interval")
            continue
        means = np.array([e[dz.run == g].mean() for g in runs])
        dev = np.concatenate([e[dz.run == g] - e[dz.run == g].mean() for g in runs])
        dof = sum(int(np.sum(dz.run == g)) - 1 for g in runs)
        within2 = float(np.sum(dev**2) / dof) if dof > 0 else 0.0
        tau2 = float(np.mean(means**2))
        step2 = _step_variance(resid[i], dz, within2)
        df = len(runs) - 1
        tq = float(stats.t.ppf(0.5 + LEVEL / 2, df))
        out["tau2"][t], out["within2"][t], out["step2"][t] = tau2, within2, step2
        out["mean_var_in"][t] = float(np.mean(mean_var[i])) if np.all(np.isfinite(mean_var[i])) else 0.0
        out["df"][t], out["t"][t] = df, tq
        out["supported_level"][t] = len(runs) / (len(runs) + 1)
        # the check: each run against the interval built from the others' run-level errors
        covered = []
        for k, g in enumerate(runs):
            rest = np.delete(means, k)
            tk = float(stats.t.ppf(0.5 + LEVEL / 2, max(len(rest) - 1, 1)))
            half = tk * math.sqrt(np.mean(rest**2) + within2 + step2)
            covered.extend(np.abs(e[dz.run == g]) <= half)
        out["coverage"][t] = float(np.mean(covered))
    return out


def _linear_loo(form: LawForm, best: Best, x: Array, y: Array, dz: Design, offset: Array, resid: Array) -> Array:
    """Leave-one-run-out errors of the linearised fit, ``(I - H_gg)^-1 r_g``: exact for a linear law."""
    free = free_params(form, best)
    g = log_gradient(form, best.theta, free, x, offset).reshape(-1, len(free))
    r = resid.reshape(-1)
    runs = np.tile(dz.run, y.shape[0])
    errs = np.full(r.shape, np.nan)
    if free and np.all(np.isfinite(g)) and np.all(np.isfinite(r)):
        bread = np.linalg.pinv(g.T @ g)
        for k in np.unique(runs):
            m = runs == k
            errs[m] = np.linalg.lstsq(np.eye(m.sum()) - g[m] @ bread @ g[m].T, r[m], rcond=None)[0]
    return errs.reshape(y.shape)


def _step_variance(resid: Array, dz: Design, within2: float) -> float:
    """Variance of the step shock shared within a cell, from residuals net of run means (0 if unshared)."""
    if not dz.shared:
        return 0.0
    d = resid.copy()
    for g in np.unique(dz.run):
        d[dz.run == g] -= d[dz.run == g].mean()
    cells = [c for c in np.unique(dz.cell) if np.sum(dz.cell == c) > 1]
    if len(cells) < 2:
        return 0.0
    means = np.array([d[dz.cell == c].mean() for c in cells])
    sizes = np.array([np.sum(dz.cell == c) for c in cells])
    return float(max(np.mean(means**2) - within2 * np.mean(1.0 / sizes), 0.0))


def extrapolation_kappa(heldout: Mapping[str, Any], inputs: tuple[str, ...], target: str) -> dict[str, float]:
    """``κ_k``: a held-out split's RMS log error per unit of log distance extrapolated, per input ``k``."""
    out = {}
    for k in inputs:
        h = heldout.get(k) or {}
        e, d = (h.get("rmse_log") or {}).get(target), h.get("distance")
        if e is not None and d:
            out[k] = float(e) / float(d)
    return out


def distance(x: Array, inputs: tuple[str, ...], domain: Mapping[str, tuple[float, float]]) -> Array:
    """Per input, how far each point lies beyond the studied range, in log units: ``(n_inputs, n)``.

    Example:
        >>> distance(np.array([[4.0, 1.0]]), ("P",), {"P": (1.0, 2.0)}).round(3).tolist()
        [[0.693, 0.0]]
    """
    out = np.zeros(x.shape)
    for i, k in enumerate(inputs):
        lo, hi = domain.get(k, (math.nan, math.nan))
        if lo > 0 and hi > 0 and np.all(x[i] > 0):
            out[i] = np.maximum(0.0, np.maximum(np.log(x[i]) - math.log(hi), math.log(lo) - np.log(x[i])))
    return out


def prediction_band(
    form: LawForm, theta: Array, pc: Mapping[str, Any], x: Array, calibration: Mapping[str, Any],
    targets: tuple[str, ...], inputs: tuple[str, ...], domain: Mapping[str, tuple[float, float]],
) -> tuple[Array, Array, Array]:
    """Point prediction and the prediction interval for a new run at ``x``: ``(mean, lo, hi)``.

    NaN bounds where there is no calibration, or where the law predicts no room above its offset.
    """
    mean = form.predict(theta, x)
    lo, hi = np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    off = np.array([(calibration.get("offset") or {}).get(t) or 0.0 for t in targets])
    mvar = mean_variance(form, theta, pc, x, off)
    dist = distance(x, inputs, domain)
    for i, t in enumerate(targets):
        tq = (calibration.get("t") or {}).get(t)
        if tq is None:
            continue
        kappa = (calibration.get("kappa") or {}).get(t) or {}
        extra = sum((kappa.get(k, 0.0) * dist[j]) ** 2 for j, k in enumerate(inputs))
        growth = np.maximum(mvar[i] - calibration["mean_var_in"][t], 0.0)
        var = calibration["tau2"][t] + calibration["within2"][t] + calibration["step2"][t] + growth + extra
        half = tq * np.sqrt(var)
        with np.errstate(all="ignore"):
            base = mean[i] - off[i]
            ok = base > 0
            lo[i] = np.where(ok, off[i] + base * np.exp(-half), np.nan)
            hi[i] = np.where(ok, off[i] + base * np.exp(half), np.nan)
    return mean, lo, hi


def mean_variance(form: LawForm, theta: Array, pc: Mapping[str, Any], x: Array, offset: Array) -> Array:
    """Variance of the fitted mean on the interval's scale, ``g V gᵀ``: ``(n_out, n)``."""
    free = list(pc.get("free") or [])
    cov = np.asarray(pc.get("cov") if pc.get("cov") is not None else np.zeros((0, 0)), float)
    if not free or cov.size == 0:
        return np.zeros((len(form.outputs), x.shape[1]))
    g = log_gradient(form, theta, free, x, offset)
    with np.errstate(all="ignore"):
        v = np.einsum("onk,kl,onl->on", g, cov, g)
    return np.where(np.isfinite(v), v, np.inf)
