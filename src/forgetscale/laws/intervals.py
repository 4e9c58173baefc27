"""Prediction intervals for a new run, calibrated on leave-one-run-out errors.

The bootstrap over runs gives the uncertainty of the fitted *mean* curve. A new
run also differs from that curve by its own noise (seed, data order) and by the
law's misfit, so its interval must be wider (DESIGN.md section 8; STYLE.md 13).

Method (a jackknife+/conformal calibration over runs):

1. Scale. At a point with prediction ``m``, the interval's scale is
   ``s = sqrt(sd_boot² + (σ·m)²)``: ``sd_boot`` is the bootstrap spread of the
   fitted mean there (it grows where the law extrapolates), ``σ`` the RMS of the
   full fit's log-residuals (the scatter of single points about the law).
2. Errors a new run makes. Each run is left out in turn and the law refitted on
   the others (warm-started at the full fit); so is the longest N of every run.
   Each left-out point gives ``z = (y - m₋) / s``, with ``m₋`` the refit's
   prediction: an honest error, since the point was not fitted.
3. Width. The half-width is ``k·s`` with ``k`` the ``ceil((n+1)·0.95)``-th
   smallest ``|z|`` (the conformal quantile of ``n`` errors). With fewer than
   19 errors that rank does not exist: ``k`` is the largest ``|z|``, and the
   calibration says so (``note``).
4. Coverage check. For each run, ``k`` is recomputed without that run's errors
   and the run's points are checked against it: the fraction covered is the
   cross-validated coverage, reported beside the interval.

Errors of one run are correlated, so the effective number of errors lies
between the number of runs and the number of points; the coverage check,
done run by run, is the honest number to read.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from forgetscale.laws.forms import FitError, LawForm
from forgetscale.laws.optimize import _BOOT_MAXITER, _Best, _fit_point

Array = np.ndarray
LEVEL = 0.95
METHOD = ("95% prediction interval for a new run: (bootstrap spread of the fitted mean ⊕ residual scale) x k, "
          "k calibrated on leave-one-run-out and leave-longest-N-out errors")


def conformal_k(z: Array, level: float = LEVEL) -> tuple[float, bool]:
    """The ``ceil((n+1) level)``-th smallest ``|z|``, and whether that rank exists.

    Example:
        >>> conformal_k(np.arange(1.0, 40.0))
        (38.0, True)
        >>> conformal_k(np.array([0.5, -2.0]))
        (2.0, False)
    """
    a = np.sort(np.abs(np.asarray(z, dtype=float)))
    if a.size == 0:
        return math.nan, False
    rank = math.ceil((a.size + 1) * level)
    return (float(a[rank - 1]), True) if rank <= a.size else (float(a[-1]), False)


def _sd(form: LawForm, samples: Array, x: Array) -> Array:
    """Bootstrap spread of the fitted mean at ``x``: ``(n_out, n)``, 0 without samples."""
    if len(samples) < 2:
        return np.zeros((len(form.outputs), x.shape[1]))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(form.predict(samples, x), axis=0)
    return np.where(np.isfinite(sd), sd, np.inf)


def _scale(form: LawForm, samples: Array, x: Array, mean: Array, sigma: Array) -> Array:
    return np.sqrt(_sd(form, samples, x) ** 2 + (np.abs(mean) * sigma[:, None]) ** 2)


def calibrate(
    form: LawForm, x: Array, y: Array, gid: Array, best: _Best, samples: Array, delta: float,
    targets: tuple[str, ...],
) -> dict[str, Any]:
    """Calibrate the prediction interval of a fit (see the module docstring).

    Args:
        x, y, gid: the fitted data and its run ids (``gid`` integer labels).
        best: the full fit (its ``theta`` in the fitting gauge).
        samples: bootstrap parameter vectors (may be empty).
        targets: names of the rows of ``y``.

    Returns:
        ``{"method", "level", "sigma_log", "k", "coverage", "n_errors", "n_runs", "note"}``,
        ``k``/``coverage`` per target (None where nothing could be calibrated).
    """
    pred = form.predict(best.theta, x)
    with np.errstate(all="ignore"):
        r = np.log(pred) - np.log(y)
    sigma = np.sqrt(np.nanmean(np.where(np.isfinite(r), r, np.nan) ** 2, axis=-1))
    zs: list[Array] = []  # (n_out, n_left_out) per refit
    owners: list[Array] = []  # the run of each left-out point
    splits = [gid == g for g in np.unique(gid)]
    n_last = x.shape[1]
    if len(np.unique(x[-1])) > 1:  # the longest N of every run: extrapolation in N
        last = np.zeros(n_last, dtype=bool)
        for g in np.unique(gid):
            m = gid == g
            last[m] = x[-1][m] == x[-1][m].max()
        if not last.all():
            splits.append(last)
    n_runs_used = 0
    for test in splits:
        train = ~test
        if not train.any():
            continue
        try:
            form.check(x[:, train], y[:, train])
            b = _fit_point(form, x[:, train], y[:, train], delta, "varpro", 1, warm=best, maxiter=_BOOT_MAXITER)
        except FitError:
            continue
        m = form.predict(b.theta, x[:, test])
        s = _scale(form, samples, x[:, test], m, sigma)
        with np.errstate(all="ignore"):
            z = (y[:, test] - m) / s
        zs.append(np.where(np.isfinite(z), z, np.inf))
        owners.append(gid[test])
        n_runs_used += 1
    out: dict[str, Any] = {
        "method": METHOD, "level": LEVEL, "sigma_log": {t: float(sigma[i]) for i, t in enumerate(targets)},
        "k": dict.fromkeys(targets), "coverage": dict.fromkeys(targets), "n_errors": 0, "n_runs": 0, "note": None,
    }
    if not zs:
        out["note"] = "no leave-one-out refit succeeded: no prediction interval"
        return out
    z_all, own = np.concatenate(zs, axis=1), np.concatenate(owners)
    out["n_errors"], out["n_runs"] = int(z_all.shape[1]), int(len(np.unique(own)))
    for i, t in enumerate(targets):
        k, exact = conformal_k(z_all[i])
        out["k"][t] = k if math.isfinite(k) else None
        if not exact:
            out["note"] = (f"only {z_all.shape[1]} leave-one-out errors (19 are needed for a 95% rank): "
                           "k is the largest, and the level is not assured")
        covered = []
        for g in np.unique(own):
            k_g, _ = conformal_k(z_all[i][own != g])
            covered.extend(np.abs(z_all[i][own == g]) <= k_g)
        out["coverage"][t] = float(np.mean(covered)) if len(np.unique(own)) > 1 else None
    return out


def prediction_band(
    form: LawForm, theta: Array, samples: Array, x: Array, calibration: dict[str, Any], targets: tuple[str, ...],
) -> tuple[Array, Array, Array]:
    """Point prediction and the calibrated 95% prediction interval at ``x``: ``(mean, lo, hi)``.

    NaN bounds for a target without a calibrated ``k``.
    """
    mean = form.predict(theta, x)
    sigma = np.array([(calibration.get("sigma_log") or {}).get(t) or 0.0 for t in targets])
    k = np.array([np.nan if (calibration.get("k") or {}).get(t) is None else calibration["k"][t] for t in targets])
    half = k[:, None] * _scale(form, samples, x, mean, sigma)
    return mean, mean - half, mean + half
