"""Intervals at the level of independent units: parameters, and prediction intervals for a new run.

Units. Points of one run share its offset (seed, adapter init), so runs are
resampled or clustered, never points. Runs that share a data order share its
batches: every run's point at step N in that order carries the same *step
shock*. A :class:`Design` names, per point, its run and its *cell* (data
order, step); with one data order for all runs the cells are the steps, and
they are the only replication of what all runs share.

Parameters. The fit is linearised at its optimum on the fitting scale (log
residuals, least squares: exact for ``delta="auto"`` up to the few points
Huber down-weights) in coordinates ``w`` (``log|θ|`` for scale parameters,
``θ`` otherwise; pinned parameters and parameters on a bound are held fixed).
The covariance is a two-way cluster-robust sandwich, by run and by cell
(Cameron, Gelbach and Miller 2011: ``V = V_run + V_cell - V_point``), each part
CR2 (a cluster's residuals scaled by ``(I - H_gg)^{-1/2}``, so that four runs
are not read as forty points). A parameter's interval is ``w ± t_{0.975, df}·se``,
``df`` Satterthwaite's over the two parts, each part's df Bell and McCaffrey's
(from the design's leverage, :func:`variance.bm_df`); a direction only runs
identify (the P exponent) uses the REML run-level model and the runs' residual
df instead (:func:`variance.run_level_variance`). Step
shocks are taken as independent across steps; a shock that persists (AR(1),
a random walk) moves all steps of an order together, which one order cannot
reveal, and ``docs/inference.md`` gives the coverage measured under it.

Prediction intervals for a new run, on the scale where the quantity lives
(log of the target; for a ``forget_ce`` law with a known base entropy ``H``,
log of ``forget_ce - H``, so KL is never negative). A new run's log error is
its run effect, a step shock of its own data order, point noise, the fitted
mean's error and the law's misfit beyond the data. The three variance
components are estimated by REML on the linearised fit (``variance.py``),
the run variance log-linear in P when the runs allow it (``run_variance``
says which), so that a new run at a large P gets the spread runs show there.
Half-width at ``x``: ``t_{0.975, df}·sqrt(τ²(P) + σ²_step + σ²_w + g V gᵀ +
misfit(x))``, ``V`` the fitted mean's covariance under those components,
``misfit`` ``(κ_k·d_k)²`` summed over the held-out splits ``k`` (``d_k``: how
far ``x`` lies beyond the studied range in ``log k``; ``κ_k``: the split's log
error beyond its noise, per unit of log distance), ``df`` Satterthwaite's. The
interval is a normal random-effects interval: its 95% rests on that model.
Without it, ``G`` runs can vouch for a level of ``G/(G+1)`` at most
(``supported_level``). ``coverage`` is an out-of-sample check: each end P
level is left out in turn, the law refitted and recalibrated without it, and
its points counted inside the rebuilt interval, an extrapolation like the
one a user makes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from forgetscale.laws import variance
from forgetscale.laws.forms import FitError, LawForm
from forgetscale.laws.optimize import BOOT_MAXITER, Best, fit_point
from forgetscale.laws.variance import MIN_LEVELS, MIN_SLOPE_DF, Components, bm_df, jackknife_cov, reml

Array = np.ndarray
LEVEL = 0.95
MIN_RUNS = 3  # fewer runs than this and no run-level variance can be estimated
PARAM_METHOD = ("t interval on a two-way (run, data-order step) cluster-robust (CR2) variance of the "
                "linearised fit, Satterthwaite df over Bell-McCaffrey df per part; for a parameter only runs "
                "identify (the P exponent), the variance of the REML run-level model with the runs' residual df")
PI_METHOD = ("95% prediction interval for a new run: the central 95% of a normal with variance run variance at the "
             "run's own P + step-shock + point variance (REML) + the fitted mean's variance + misfit per unit log "
             "distance beyond the data, averaged over the run variance's intercept and slope in log P weighted by "
             "their REML likelihood")


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
        common = ("the study's one forgetting corpus and its one set of held-out fine-tuning examples (a "
                  "new corpus or held-out set would move every run alike)")
        if not self.shared:
            return f"{common}; the studied runs, each with its own data order"
        orders = ("one data order shared by every run" if self.n_orders == 1
                  else f"{self.n_orders} data orders (drawn from the same training examples)")
        return (f"{common}; {orders}, whose step shocks are taken as independent across steps (a batch "
                "effect that persists over steps is not seen by one order: with one order and simulated AR(1) "
                "shocks, 95% intervals held 89% of a new run's points and covered the N exponent in 89% of "
                "studies)")


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
    # Satterthwaite over the two parts, each part's df Bell and McCaffrey's (2002): the df of a cluster
    # jackknife variance under the component it is there to catch (run effects for the run part, step
    # shocks shared by a cell for the cell part), computed from the design's leverage, which lets a few
    # end steps or end ranks dominate
    a, b = np.diag(v_run), np.maximum(np.diag(excess), 0)
    same_run = (rows_run[:, None] == rows_run[None, :]).astype(float)
    same_cell = (rows_cell[:, None] == rows_cell[None, :]).astype(float)
    nu_run = bm_df(jac, rows_run, same_run)
    nu_cell = bm_df(jac, rows_cell, same_cell) if dz.shared else np.full(len(free), np.inf)
    with np.errstate(all="ignore"):
        df = (a + b) ** 2 / (a**2 / nu_run + b**2 / nu_cell)
    df = np.where(np.isfinite(df) & (df > 0), np.clip(df, 1.0, 1e6), nu_run)
    out["df_parts"], out["between"] = {"run": nu_run.tolist(), "cell": nu_cell.tolist()}, []
    between = variance.between_run(jac, rows_run)
    if between.any() and dz.n_runs >= MIN_RUNS:
        # a contrast of run totals (the P exponent): the jackknife is conservative there (1.5-2 df with 4
        # runs); the run-level model's variance and df, the sandwich's correlations kept (only rescaled)
        lvl = level_input(x, dz)
        mb, mb_df = variance.run_level_variance(g, r, dz.run, dz.cell if dz.shared else None,
                                       x[lvl] if lvl is not None else None)
        with np.errstate(all="ignore"):
            d = np.where(between, np.sqrt(mb / np.diag(cov)), 1.0) if mb is not None else np.full(len(free), np.nan)
        if np.all(np.isfinite(d)):
            cov, df = cov * np.outer(d, d), np.where(between, mb_df, df)
            out["between"] = [form.params[free[j]] for j in np.flatnonzero(between)]
    out["cov"], out["df"] = cov, df
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
    if not df > 0:  # too few runs for any degrees of freedom (two runs, one per rank): no t to draw from
        return np.zeros((0, form.n_params))
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


def level_input(x: Array, dz: Design, inputs: tuple[str, ...] | None = None) -> int | None:
    """The input that is a run's level (constant within each run, varying across runs): P for ``(P, N)``
    laws; None when there is none (a law on ``ft_loss``), and run variance is then equal across runs."""
    order = list(range(x.shape[0]))
    if inputs is not None and "P" in inputs:
        order.sort(key=lambda j: inputs[j] != "P")
    for j in order:
        v = x[j]
        if not np.all(v > 0):
            continue
        if all(np.ptp(v[dz.run == g]) == 0 for g in np.unique(dz.run)) and np.ptp(v) > 0:
            return j
    return None


def _fit_components(form: LawForm, best: Best, x: Array, y: Array, dz: Design, offset: Array,
                    lvl: int | None) -> tuple[list[Components | None], Array, list[int]]:
    """Per target, the REML variance components of the log residuals (``variance.py``); and the covariance
    of the free parameters that those components imply for the least-squares fit, ``B Jᵀ Σ J B``."""
    free = free_params(form, best)
    jac = log_gradient(form, best.theta, free, x, offset)  # (n_out, n, k)
    resid = _pi_scale(y, offset) - _pi_scale(form.predict(best.theta, x), offset)
    comps: list[Components | None] = []
    k = len(free)
    bread, meat = np.zeros((k, k)), np.zeros((k, k))
    cell = dz.cell if dz.shared else None
    level = x[lvl] if lvl is not None else None
    for i in range(y.shape[0]):
        if not (np.all(np.isfinite(jac[i])) and np.all(np.isfinite(resid[i]))):
            comps.append(None)
            continue
        c = reml(jac[i], resid[i], dz.run, cell, level)
        comps.append(c)
        if k:
            sig = _sigma(c, dz, level)
            bread += jac[i].T @ jac[i]
            meat += jac[i].T @ sig @ jac[i]
    b = np.linalg.pinv(bread) if k else bread
    return comps, b @ meat @ b, free


def _sigma(c: Components, dz: Design, level: Array | None) -> Array:
    """The points' covariance under the components: run blocks, shared cells, point noise."""
    n = dz.run.size
    same_run = dz.run[:, None] == dz.run[None, :]
    tau = c.tau2(level if level is not None else np.ones(n))
    s = np.where(same_run, np.sqrt(np.outer(tau, tau)), 0.0) + math.exp(c.get("log_within2")) * np.eye(n)
    if dz.shared:
        s += math.exp(c.get("log_step2")) * (dz.cell[:, None] == dz.cell[None, :])
    return s


def _components_dict(c: Components, by: str | None) -> dict[str, Any]:
    if by is None:
        model = "equal for every run: no input is constant within runs and varies across them"
    elif c.slope_fitted:
        model = (f"log run variance linear in log {by}, estimated by REML (slope {c.get('gamma1'):.3g}; "
                 f"equal variance rejected at p = {c.slope_p:.3g})" if c.slope_p is not None and c.slope_p < 0.05
                 else f"log run variance linear in log {by}, estimated by REML (slope {c.get('gamma1'):.3g}; "
                      f"test of equal variance p = {c.slope_p:.3g}: used either way)")
    else:
        model = (f"assumed equal at every {by}: {c.df_run} run-level df, too few to estimate how it changes "
                 f"with {by} (needs {MIN_SLOPE_DF} and {MIN_LEVELS} levels)")
    model += f"; intervals average over {'its intercept and slope' if c.slope_fitted else 'it'} by likelihood" \
        if c.lik is not None else ""  # which variance the interval uses: every one the runs allow, or the estimate
    return {"model": model, "by": by, "slope_fitted": c.slope_fitted, "slope_p": c.slope_p, "df_run": c.df_run,
            "names": list(c.names), "phi": c.phi.tolist(), "cov": c.cov.tolist(), "center": c.center,
            "likelihood": None if c.lik is None else [np.asarray(v).tolist() for v in c.lik]}


def components_from(d: Mapping[str, Any]) -> Components:
    """Rebuild :class:`Components` from :func:`calibrate`'s ``run_variance`` entry."""
    lik = d.get("likelihood")  # a store written before: None, and Satterthwaite's t
    return Components(np.asarray(d["phi"], float), np.asarray(d["cov"], float), tuple(d["names"]),
                      float(d["center"]), bool(d["slope_fitted"]), d.get("slope_p"), int(d["df_run"]), math.nan,
                      None if lik is None else tuple(np.asarray(v, float) for v in lik))


def calibrate(
    form: LawForm, x: Array, y: Array, dz: Design, best: Best, delta: float, targets: tuple[str, ...],
    offset: Array, inputs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Variance components of a new run's prediction error, and an out-of-sample check of the interval.

    Args:
        x, y: the fitted data; dz: its design; best: the full fit.
        offset: ``(n_out,)`` subtracted before the log (the base entropy for ``forget_ce``; else 0).
        inputs: the inputs' names (to find P, the level a run's variance may depend on).

    Returns:
        Per target: ``tau2`` (run variance averaged over the studied runs), ``within2``, ``step2``,
        ``run_variance`` (the model, its parameters and their covariance), ``coverage`` (the end-level
        check), ``supported_level`` (``G/(G+1)``), ``offset``, ``scale``, ``t`` and ``df`` (Satterthwaite's t
        at the studied runs: what an older store's interval used; this one averages instead); ``mean_cov``
        and ``free`` (the fitted mean's covariance implied by the components); ``coverage_check`` (how the
        check was made); ``n_runs``, ``n_not_converged``, ``note``.
    """
    names = dict.fromkeys(targets)
    out: dict[str, Any] = {"method": PI_METHOD, "level": LEVEL, "units": dz.n_runs, "n_orders": dz.n_orders,
                           "conditional_on": dz.conditional_on(), "n_not_converged": 0, "note": None,
                           "offset": {t: float(offset[i]) for i, t in enumerate(targets)},
                           "scale": {t: "log(y - offset)" if offset[i] else "log(y)" for i, t in enumerate(targets)},
                           "coverage_check": None, "mean_cov": None, "free": None,
                           **{k: dict(names) for k in ("tau2", "within2", "step2", "run_variance", "t", "df",
                                                        "coverage", "supported_level")}}  # fmt: skip
    if dz.n_runs < MIN_RUNS:
        out["note"] = f"{dz.n_runs} runs (< {MIN_RUNS}): no run-level variance, no prediction interval"
        return out
    lvl = level_input(x, dz, inputs)
    by = None if lvl is None else (inputs[lvl] if inputs is not None else f"x{lvl}")
    comps, cov, free = _fit_components(form, best, x, y, dz, offset, lvl)
    out["mean_cov"], out["free"] = cov.tolist(), free
    level = x[lvl] if lvl is not None else np.ones(x.shape[1])
    for i, t in enumerate(targets):
        c = comps[i]
        if c is None:
            out["note"] = f"{t}: residuals not finite on the {out['scale'][t]} scale: no prediction interval"
            continue
        run_levels = np.array([level[dz.run == g][0] for g in np.unique(dz.run)])
        out["tau2"][t] = float(np.mean(c.tau2(run_levels)))
        out["within2"][t] = math.exp(c.get("log_within2"))
        out["step2"][t] = math.exp(c.get("log_step2"))
        out["run_variance"][t] = _components_dict(c, by)
        out["df"][t] = float(np.min(c.df(run_levels)))
        out["t"][t] = float(stats.t.ppf(0.5 + LEVEL / 2, out["df"][t]))
        out["supported_level"][t] = dz.n_runs / (dz.n_runs + 1)
    check = _end_level_check(form, best, x, y, dz, delta, offset, lvl, targets)
    out["n_not_converged"] += check.pop("n_not_converged")
    out["coverage_check"] = check.pop("how")
    out["split_noise"] = {t: ({by: v} if by is not None else {}) for t, v in check.pop("split_noise").items()}
    for t, v in check.items():
        if out["t"][t] is not None:
            out["coverage"][t] = v
    return out


def _end_level_check(form: LawForm, best: Best, x: Array, y: Array, dz: Design, delta: float, offset: Array,
                     lvl: int | None, targets: tuple[str, ...]) -> dict[str, Any]:
    """Leave each end level (smallest and largest P) out in turn, refit and recalibrate on the rest, and
    count the held-out runs' points inside the resulting intervals: the interval's own procedure,
    extrapolating as far as the study's next level, so it fails where extrapolation fails."""
    res: dict[str, Any] = {"n_not_converged": 0, "split_noise": {}, **{t: None for t in targets}}
    if lvl is None:
        res["how"] = "none: no level input to extrapolate in"
        return res
    values = np.unique(x[lvl])
    hits: dict[str, list[bool]] = {t: [] for t in targets}
    used = []
    for v in (values[0], values[-1]):
        test = x[lvl] == v
        sub = Design(dz.run[~test], dz.cell[~test], dz.n_orders)
        if sub.n_runs < MIN_RUNS or len(np.unique(x[lvl][~test])) < 2:
            continue
        try:
            form.check(x[:, ~test], y[:, ~test])
            b = fit_point(form, x[:, ~test], y[:, ~test], delta, "varpro", 1, warm=best, maxiter=BOOT_MAXITER)
        except FitError:
            continue
        res["n_not_converged"] += not b.converged
        comps, cov, free = _fit_components(form, b, x[:, ~test], y[:, ~test], sub, offset, lvl)
        mvar = _mean_var(form, b.theta, free, cov, x[:, test], offset)
        used.append(float(v))
        for i, t in enumerate(targets):
            c = comps[i]
            if c is None:
                continue
            lev = x[lvl][test]
            var = c.total(lev, mvar[i])
            with np.errstate(all="ignore"):
                e = _pi_scale(y[:, test], offset)[i] - _pi_scale(form.predict(b.theta, x[:, test]), offset)[i]
            # a variance the refit's covariance makes slightly negative has a NaN width: the check reads a miss
            hits[t].extend(np.abs(e) <= np.nan_to_num(c.half_width(lev, mvar[i], LEVEL), nan=-1.0))
            if v == values[-1]:  # the held-out split on P: what a correct law's error there would be
                res["split_noise"][t] = float(np.mean(var))
    res["how"] = (f"each end level ({', '.join(f'{u:.4g}' for u in used)}) left out in turn: its runs' points "
                  "against the interval refitted and recalibrated without them (an extrapolation to the "
                  "next studied level, without the misfit term)") if used else "none: too few levels or runs"
    for t in targets:
        res[t] = float(np.mean(hits[t])) if hits[t] else None
    return res


def _mean_var(form: LawForm, theta: Array, free: list[int], cov: Array, x: Array, offset: Array) -> Array:
    if not free:
        return np.zeros((len(form.outputs), x.shape[1]))
    g = log_gradient(form, theta, free, x, offset)
    with np.errstate(all="ignore"):
        v = np.einsum("onk,kl,onl->on", g, cov, g)
    return np.where(np.isfinite(v), v, np.inf)


def misfit_slope(split: Any, noise2: float) -> float:
    """``κ``: a split's log error beyond the noise of the points it held out, per unit of log distance.

    A correct law's held-out error is noise, not misfit, so only the excess of its mean square over
    ``noise2`` (the variance of a held-out point's log error, the refit's own error left in: the excess
    is an upper estimate) is extrapolated. A bare number is an older store's raw ``κ``.

    Example:
        >>> misfit_slope({"rmse_log": 0.5, "distance": 2.0}, 0.09), misfit_slope(0.3, 1.0)
        (0.2, 0.3)
    """
    if not isinstance(split, Mapping):
        return float(split)
    e2, d = split["rmse_log"] ** 2, split["distance"]
    return round(math.sqrt(max(e2 - noise2, 0.0)) / d, 12) if d > 0 else 0.0


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

    A normal of variance ``τ²(P) + σ²_step + σ²_w + g V gᵀ + misfit`` (the run variance at the new run's own
    P, the fitted mean's variance ``V`` implied by the same components, the misfit beyond the data),
    averaged over ``τ²``'s parameters by likelihood (``Components.half_width``). NaN bounds where there
    is no calibration, or where the law predicts no room above its offset.
    """
    mean = form.predict(theta, x)
    lo, hi = np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    off = np.array([(calibration.get("offset") or {}).get(t) or 0.0 for t in targets])
    if calibration.get("mean_cov") is not None:
        free = list(calibration.get("free") or [])
        mvar = _mean_var(form, theta, free, np.asarray(calibration["mean_cov"], float).reshape(len(free), len(free)),
                         x, off)
    else:
        mvar = mean_variance(form, theta, pc, x, off)
    dist = distance(x, inputs, domain)
    for i, t in enumerate(targets):
        rv = (calibration.get("run_variance") or {}).get(t)
        if rv is None:
            lo[i], hi[i] = _pooled_band(calibration, t, mean[i], off[i], mvar[i])
            continue
        comp = components_from(rv)
        by = rv.get("by")
        lev = x[inputs.index(by)] if by in inputs else np.ones(x.shape[1])
        splits = (calibration.get("kappa") or {}).get(t) or {}
        w2, s2 = math.exp(comp.get("log_within2")), math.exp(comp.get("log_step2"))
        # a split on the level input holds out whole runs at its top (their run effect is noise); a
        # split on another input holds out every run's last points (their step shocks are noise)
        noise = {k: float(comp.tau2(domain.get(k, (1.0, 1.0))[1])) + w2 if k == by else w2 + s2 for k in inputs}
        noise.update((calibration.get("split_noise") or {}).get(t) or {})  # with the refit's own error
        extra = mvar[i] + sum((misfit_slope(splits[k], noise[k]) * dist[j]) ** 2
                              for j, k in enumerate(inputs) if k in splits)
        half = comp.half_width(lev, extra, LEVEL)
        with np.errstate(all="ignore"):
            base = mean[i] - off[i]
            ok = base > 0
            lo[i] = np.where(ok, off[i] + base * np.exp(-half), np.nan)
            hi[i] = np.where(ok, off[i] + base * np.exp(half), np.nan)
    return mean, lo, hi


def _pooled_band(cal: Mapping[str, Any], t: str, mean: Array, off: float, mvar: Array) -> tuple[Array, Array]:
    """A fits.json written before run variance was modelled: its one pooled ``τ²``, as it was computed."""
    nan = np.full_like(mean, np.nan)
    tq, tau2 = (cal.get("t") or {}).get(t), (cal.get("tau2") or {}).get(t)
    if tq is None or tau2 is None:
        return nan, nan
    growth = np.maximum(mvar - ((cal.get("mean_var_in") or {}).get(t) or 0.0), 0.0)
    half = tq * np.sqrt(tau2 + cal["within2"][t] + cal["step2"][t] + growth)
    with np.errstate(all="ignore"):
        base = mean - off
        return (np.where(base > 0, off + base * np.exp(-half), np.nan),
                np.where(base > 0, off + base * np.exp(half), np.nan))


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
