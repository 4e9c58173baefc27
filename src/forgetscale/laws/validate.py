"""Validation of a fit: bootstrap over runs, and held-out splits scored against the change since step 0.

Held-out splits (DESIGN.md section 8, issue 11). For a split key (P, N), the
points where the key is largest are left out, the law refitted on the rest and
scored on them. Besides the RMSE and the mean relative error, each split gets
its **error of change**: the mean absolute error over the held-out points
divided by the mean absolute change of the target since step 0 at those points
(for ``forget_ce`` that change is ``forget_kl``; for ``ft_loss`` it is
``ft_loss(0) - ft_loss(N)``). A ratio of means, not a mean of ratios: a
point early in a run, where the change is tiny, would otherwise dominate.
A prediction that is not finite makes the error infinite; a split that cannot
be refitted has no number. Both count against the law (``study.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from forgetscale.laws.forms import FitError, LawForm
from forgetscale.laws.optimize import _BOOT_MAXITER, Search, _Best, _fit_point

Array = np.ndarray


def bootstrap(
    form: LawForm, x: Array, y: Array, gid: Array, best: _Best, delta: float, n_boot: int, seed: int,
) -> tuple[Array, int, int]:
    """Refit on ``n_boot`` resamples of whole groups, each warm-started at the full fit.

    A resample that cannot support the fit (e.g. every drawn run has the same
    P) is redrawn, as in any bootstrap conditioned on estimability.

    Returns:
        ``(samples, n_failed, n_not_converged)``; samples in the fit's gauge.
    """
    rng = np.random.default_rng(seed)
    labels = np.unique(gid)
    members = [np.flatnonzero(gid == g) for g in labels]
    out, failed, stalled, draws = [], 0, 0, 0
    while len(out) + failed < n_boot and draws < 20 * n_boot:
        draws += 1
        idx = np.concatenate([members[k] for k in rng.integers(0, len(labels), len(labels))])
        xb, yb = x[:, idx], y[:, idx]
        try:
            form.check(xb, yb)
        except FitError:
            continue
        try:
            b = _fit_point(form, xb, yb, delta, "varpro", 1, warm=best, maxiter=_BOOT_MAXITER)
        except FitError:
            failed += 1
            continue
        out.append(b.theta)
        stalled += not b.converged
    samples = np.array(out) if out else np.zeros((0, form.n_params))
    return samples, n_boot - len(out), stalled


def heldout_split(
    form: LawForm, x: Array, y: Array, key: Array, targets: tuple[str, ...], delta: float,
    search: Search, full: _Best, change: Array | None = None,
) -> dict[str, Any]:
    """Refit without the points where ``key`` is largest; score the fit on them.

    The refit starts from the best data-driven start of the training points and
    from the full fit, and keeps the better optimum of the two.

    Args:
        change: ``(n_targets, n)`` change of each target since step 0 of its run
            (None: no ``error_of_change``).

    Returns:
        ``{"value", "n", "rmse", "mre", "error_of_change"}`` (per target), or
        ``{"value", "n", "error"}`` when the refit is impossible. An
        ``error_of_change`` of ``inf`` (``null`` in JSON) marks a non-finite
        prediction, listed in ``"nonfinite"``.
    """
    if key.shape != (x.shape[1],) or not np.all(np.isfinite(key)):
        raise ValueError("holdout keys need one finite value per point")
    top = key.max()
    test = key == top
    if test.all():
        return {"error": "a single distinct value: nothing to hold out"}
    train = ~test
    try:
        form.check(x[:, train], y[:, train])
        b = _fit_point(form, x[:, train], y[:, train], delta, search, 1, also=full)
    except FitError as e:
        return {"value": float(top), "n": int(test.sum()), "error": str(e)}
    pred = form.predict(b.theta, x[:, test])
    err = pred - y[:, test]
    out: dict[str, Any] = {
        "value": float(top), "n": int(test.sum()),
        "rmse": {t: float(np.sqrt(np.mean(err[i] ** 2))) for i, t in enumerate(targets)},
        "mre": {t: float(np.mean(np.abs(err[i]) / np.abs(y[i, test]))) for i, t in enumerate(targets)},
    }
    if change is not None:
        out["error_of_change"] = {t: error_of_change(pred[i], y[i, test], change[i, test])
                                  for i, t in enumerate(targets)}
        out["nonfinite"] = [t for i, t in enumerate(targets) if not np.all(np.isfinite(pred[i]))]
    return out


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
