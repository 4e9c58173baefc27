"""Held-out splits scored against the change since step 0, and the error that noise alone would give.

Held-out splits (docs/inference.md). For a split key (P, N), the
points where the key is largest are left out, the law refitted on the rest
(from the data-driven starts only: the full fit has seen the held-out points)
and scored on them. Besides the RMSE and the mean relative error, each split
gets its **error of change**: the mean absolute error over the held-out points
divided by the mean absolute change of the target since step 0 at those points
(for ``forget_ce`` that change is ``forget_kl``; for ``ft_loss`` it is
``ft_loss(0) - ft_loss(N)``). A ratio of means, not a mean of ratios: a
point early in a run, where the change is tiny, would otherwise dominate.
A prediction that is not finite makes the error infinite; a split that cannot
be refitted has no number; a refit that did not converge says so. All three
count against the law (``select.py``).

Noise floor. One held-out split is one draw: its error mixes the law's misfit
with the noise of the points it left out. :func:`noise_floor` simulates that
noise for a correctly specified law: each held-out point's log error is the
sum of a run effect (``τ²``, when its run was left out whole), a step shock
(``σ²_step``, when no training point shared its data order and step), point
noise (``σ²_w``) and the refit's own uncertainty there (its sandwich
variance, one draw shared by the split), with the variances from the
prediction-interval calibration (``intervals.py``). The floor is the 90th
percentile of the larger of the splits' simulated errors.

Error bounds. The same draws give each split's error under a law whose forecasts are biased: every
held-out prediction off by a factor ``e^β`` (either sign) chosen so that, without noise, the error of
change would be ``b``. For a grid of ``b`` the split stores the 5% quantile of the simulated error
(the smaller over the two signs) and the 97.5% quantile (the larger). Inverted
(``select.error_bounds``), they give a one-sided 95% upper bound of the split's true error (the
largest ``b`` whose 5% quantile is still below the observed error) and a lower bound at 97.5%
(Bonferroni over the two splits). The variances come from the fit itself, so a law that misfits
has larger ones and wider bounds: that can only make it less often ``reliable``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from forgetscale.laws.forms import FitError, LawForm
from forgetscale.laws.intervals import Design, mean_variance, param_covariance
from forgetscale.laws.optimize import Search, fit_point

Array = np.ndarray
NOISE_QUANTILE = 0.90
NOISE_DRAWS = 2000
BOUND_ALPHA = 0.05
"""One-sided level of the upper bound of the held-out error (``reliable``); each split's lower bound is at
``BOUND_ALPHA / 2`` (``unreliable`` on either of two splits: Bonferroni)."""
BIAS_GRID = tuple(round(0.01 * i, 2) for i in range(0, 101)) + tuple(round(1 + 0.05 * i, 2) for i in range(1, 21))
"""Biases (error of change without noise) at which the bounds' quantiles are stored: 0-1 by 0.01, to 2 by 0.05."""


def heldout_split(
    form: LawForm, x: Array, y: Array, key: Array, targets: tuple[str, ...], delta: float,
    search: Search, change: Array | None = None, dz: Design | None = None, offset: Array | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Refit without the points where ``key`` is largest; score the fit on them.

    Args:
        change: ``(n_targets, n)`` change of each target since step 0 of its run
            (None: no ``error_of_change``).
        dz: the points' runs and cells (for the refit's uncertainty at the held-out points).
        offset: ``(n_targets,)`` subtracted before logs (see ``intervals.py``).

    Returns:
        ``(result, null)``. ``result``: ``{"value", "n", "distance", "converged", "rmse", "rmse_log",
        "mre", "error_of_change", "nonfinite"}`` per target, or ``{"value", "n", "error"}`` when the
        refit is impossible; ``distance`` is the log gap from the largest training value to the held-out
        one. ``null``: what :func:`noise_floor` needs (None without a refit).
    """
    if key.shape != (x.shape[1],) or not np.all(np.isfinite(key)):
        raise ValueError("holdout keys need one finite value per point")
    top = key.max()
    test = key == top
    if test.all():
        return {"error": "a single distinct value: nothing to hold out"}, None
    train = ~test
    off = np.zeros(len(targets)) if offset is None else np.asarray(offset, float)
    try:
        form.check(x[:, train], y[:, train])
        b = fit_point(form, x[:, train], y[:, train], delta, search, 1)
    except FitError as e:
        return {"value": float(top), "n": int(test.sum()), "error": str(e)}, None
    pred = form.predict(b.theta, x[:, test])
    err = pred - y[:, test]
    second = key[train].max()
    with np.errstate(all="ignore"):
        log_err = np.log(pred - off[:, None]) - np.log(y[:, test] - off[:, None])
        dist = float(abs(math.log(top / second))) if top > 0 and second > 0 else None
    out: dict[str, Any] = {
        "value": float(top), "n": int(test.sum()), "distance": dist, "converged": bool(b.converged),
        "rmse": {t: float(np.sqrt(np.mean(err[i] ** 2))) for i, t in enumerate(targets)},
        "rmse_log": {t: float(np.sqrt(np.mean(log_err[i] ** 2))) if np.all(np.isfinite(log_err[i])) else None
                     for i, t in enumerate(targets)},
        "mre": {t: float(np.mean(np.abs(err[i]) / np.abs(y[i, test]))) for i, t in enumerate(targets)},
    }
    if change is not None:
        out["error_of_change"] = {t: error_of_change(pred[i], y[i, test], change[i, test])
                                  for i, t in enumerate(targets)}
        out["nonfinite"] = [t for i, t in enumerate(targets) if not np.all(np.isfinite(pred[i]))]
    null = None
    if dz is not None:
        sub = Design(dz.run[train], dz.cell[train], dz.n_orders)
        pc = param_covariance(form, b, x[:, train], y[:, train], sub, delta)
        sd = np.sqrt(mean_variance(form, b.theta, pc, x[:, test], off))
        null = {"test": test, "sd_pred": np.where(np.isfinite(sd), np.minimum(sd, 5.0), 5.0),
                "new_run": ~np.isin(dz.run[test], dz.run[train]), "new_cell": ~np.isin(dz.cell[test], dz.cell[train])}
    return out, null


def noise_floor(
    nulls: Mapping[str, Mapping[str, Any] | None], y: Array, change: Array, dz: Design,
    calibration: Mapping[str, Any], targets: tuple[str, ...], seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """The held-out error of change that noise alone gives a correct law (see the module docstring).

    Returns:
        ``{"noise_floor": {target: 90th percentile}, "noise_median": {target: median}}`` of the larger
        of the splits' simulated errors; None where the calibration has no variances.
    """
    out: dict[str, dict[str, Any]] = {"noise_floor": dict.fromkeys(targets), "noise_median": dict.fromkeys(targets),
                                      "error_bound": dict.fromkeys(targets)}
    rng = np.random.default_rng(seed)
    for i, t in enumerate(targets):
        tau2 = (calibration.get("tau2") or {}).get(t)
        if tau2 is None:
            continue
        w2, s2 = calibration["within2"][t], calibration["step2"][t]
        off = (calibration.get("offset") or {}).get(t) or 0.0
        worst = np.zeros(NOISE_DRAWS)
        for key, null in nulls.items():
            if null is None:
                continue
            test = null["test"]
            level, ch = y[i, test] - off, change[i, test]
            scale = float(np.mean(np.abs(ch)))
            if not (np.all(np.isfinite(ch)) and scale > 0):
                continue
            runs = np.unique(dz.run[test], return_inverse=True)[1]
            cells = np.unique(dz.cell[test], return_inverse=True)[1]
            eps = rng.normal(0.0, math.sqrt(w2), (NOISE_DRAWS, level.size))
            eps += rng.normal(0.0, math.sqrt(tau2), (NOISE_DRAWS, runs.max() + 1))[:, runs] * null["new_run"]
            if dz.shared:
                eps += rng.normal(0.0, math.sqrt(s2), (NOISE_DRAWS, cells.max() + 1))[:, cells] * null["new_cell"]
            eps += rng.standard_normal((NOISE_DRAWS, 1)) * null["sd_pred"][i]
            # a miss by more than e^5 = 148x is as bad as any; the cap keeps the arithmetic finite
            eps = np.clip(eps, -5, 5)
            err = np.mean(np.abs(level * np.expm1(eps)), axis=1) / scale
            worst = np.maximum(worst, err)
            bounds = out["error_bound"][t] or {"bias": list(BIAS_GRID), "alpha": BOUND_ALPHA}
            bounds[key] = biased_quantiles(level, eps, scale)
            out["error_bound"][t] = bounds
        if worst.any():
            out["noise_floor"][t] = float(np.quantile(worst, NOISE_QUANTILE))
            out["noise_median"][t] = float(np.median(worst))
    return out


def biased_quantiles(level: Array, eps: Array, scale: float) -> dict[str, list[float]]:
    """Quantiles of the simulated error of change of forecasts biased by each of :data:`BIAS_GRID`.

    Args:
        level: ``(n,)`` the held-out points' levels (the target less its offset).
        eps: ``(draws, n)`` simulated log errors of a correct law at those points.
        scale: their mean absolute change since step 0.

    Returns:
        ``{"lo": [...], "hi": [...]}``: per bias, the :data:`BOUND_ALPHA` quantile (the smaller of the two
        signs of the bias) and the ``1 - BOUND_ALPHA / 2`` quantile (the larger), each made non-decreasing
        in the bias.

    Example: without noise the error is the bias itself.
        >>> q = biased_quantiles(np.ones(3), np.zeros((10, 3)), 1.0)
        >>> q["lo"][15], q["hi"][15]
        (0.15, 0.15)
    """
    grid = np.asarray(BIAS_GRID)
    mean_level = float(np.mean(np.abs(level)))
    lo = np.full(grid.size, np.inf)
    hi = np.full(grid.size, -np.inf)
    for sign in (1.0, -1.0):
        factor = 1 + sign * grid * scale / mean_level  # e^β: the noise-free error is exactly the bias
        ok = factor > 0
        err = np.mean(np.abs(level * np.expm1(eps[None] + np.log(factor[ok])[:, None, None])), axis=2) / scale
        lo[ok] = np.minimum(lo[ok], np.quantile(err, BOUND_ALPHA, axis=1))
        hi[ok] = np.maximum(hi[ok], np.quantile(err, 1 - BOUND_ALPHA / 2, axis=1))
    return {k: np.round(np.maximum.accumulate(q), 6).tolist() for k, q in (("lo", lo), ("hi", hi))}


def error_of_change(pred: Array, y: Array, change: Array) -> float:
    """Mean absolute error over mean absolute change: 0.1 means 10% of the change since step 0.

    ``inf`` when a prediction is not finite; NaN when the change is unknown or zero.

    Example:
        >>> round(error_of_change(np.array([2.1, 2.3]), np.array([2.0, 2.2]), np.array([0.5, 1.5])), 12)
        0.1
    """
    pred, y, change = (np.asarray(v, dtype=float) for v in (pred, y, change))
    if not np.all(np.isfinite(pred)):
        return math.inf
    scale = float(np.mean(np.abs(change)))
    if not (np.all(np.isfinite(change)) and scale > 0):
        return math.nan
    return float(np.mean(np.abs(pred - y))) / scale


def extrapolation_kappa(heldout: Mapping[str, Any], inputs: tuple[str, ...], target: str) -> dict[str, Any]:
    """Per input ``k``, the held-out split's RMS log error and the log distance it extrapolated."""
    out = {}
    for k in inputs:
        h = heldout.get(k) or {}
        e, d = (h.get("rmse_log") or {}).get(target), h.get("distance")
        if e is not None and d:
            out[k] = {"rmse_log": float(e), "distance": float(d)}
    return out
