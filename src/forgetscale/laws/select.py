"""Which law to trust: held-out errors, reliability with its bounds, the comparison table, the choice.

Reliability. A law is judged for one target by its held-out error of change
(``validate.py``): the larger of the two splits' errors (largest P left out;
longest N left out), relative to the change since step 0. The limit is
:data:`RELIABLE_ERROR`, 15% of that change, the standard the checks of unseen
runs use. One split is one draw: its error mixes the law's bias with the noise
of the points it left out. So each split's error gets bounds (``validate.noise_floor``
simulates that noise from the fit's own variance components, with the forecasts
biased by each candidate amount; :func:`error_bounds` inverts it): a one-sided
95% upper bound and a 97.5% lower bound of the split's true error. The rules,
in order:

1. ``unreliable`` when a split has no number (the refit was impossible or the
   change since step 0 is unknown), predicted a non-finite value, or did not
   converge; when the fit's optimiser did not converge; or when the prediction
   interval is uncalibrated (fewer than 3 runs, or no finite leave-one-run-out
   errors): such a law cannot say how far to trust it.
2. ``reliable`` when the upper bound of both splits' errors is at most the limit.
   The size, stated: a law whose forecasts are biased by exactly the limit in a
   split is called reliable in at most 5% of studies (an intersection-union test:
   each split must pass on its own), under the fit's variance model.
3. ``unreliable`` when either split's lower bound exceeds the limit: a law whose
   forecasts are biased by no more than the limit is called unreliable in at
   most 5% of studies (2.5% per split).
4. ``undecided`` otherwise: the data cannot tell the error from the limit. Such a
   law still predicts (``choose_law`` takes it when no law is reliable), and says
   it is undecided.

The noise floor (the error noise alone gives a correct law, 90th percentile)
is reported beside the bounds. Every state carries a reason. In-sample R² plays no part; fit warnings (a
parameter on a bound, wide intervals) are ``FitResult.fit_clean``, reported
beside it. The one ``reliable`` flag of ``fit``, ``predict``, ``plan`` and the
report is ``reliability(fit, target).state == "reliable"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from forgetscale.laws.fit import FitResult
from forgetscale.laws.rows import FORGETTING

RELIABLE_ERROR = 0.15
"""Limit on the held-out error of change (a fraction of the change since step 0) of a reliable law."""
State = Literal["reliable", "unreliable", "undecided"]


@dataclass(frozen=True)
class Reliability:
    """Whether a law predicts unseen runs of a target, and why (rules in the module docstring).

    Attributes:
        state: ``reliable``, ``unreliable`` or ``undecided``.
        reason: one line a user can act on.
        error: held-out error of change (the larger split), None when a split has none.
        noise_floor: the error noise alone gives a correct law (90th percentile), None if unknown.
        limit: the limit on the error.
        upper: one-sided 95% upper bound of the true error (the larger split), None if unknown.
        lower: 97.5% lower bound of the true error (the larger split), None if unknown.

    Example:
        >>> r = Reliability("undecided", "within the noise", 0.2, 0.1)
        >>> bool(r), r.limit
        (False, 0.15)
    """

    state: State
    reason: str
    error: float | None = None
    noise_floor: float | None = None
    limit: float = RELIABLE_ERROR
    upper: float | None = None
    lower: float | None = None

    def __bool__(self) -> bool:
        return self.state == "reliable"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "error": self.error, "noise_floor": self.noise_floor,
                "limit": self.limit, "upper": _finite(self.upper), "lower": _finite(self.lower)}


def _finite(v: float | None) -> float | None:
    """``v`` for JSON: None when unknown or unbounded."""
    return v if v is not None and math.isfinite(v) else None


def as_fits(fits: Mapping[str, FitResult | Mapping[str, Any]]) -> dict[str, FitResult]:
    """Fits as :class:`FitResult` (stored ``to_dict()`` forms are rebuilt)."""
    return {k: v if isinstance(v, FitResult) else FitResult.from_dict(v) for k, v in fits.items()}


def heldout_errors(fit: FitResult | Mapping[str, Any], target: str) -> dict[str, float | None]:
    """The held-out error of change of each split (``P``, ``N``): a number, ``inf`` or None.

    ``inf``: the split predicted a non-finite value; None: it has no number (the
    refit was impossible, or the change since step 0 is unknown).
    """
    held = fit.heldout if isinstance(fit, FitResult) else fit["heldout"]
    out: dict[str, float | None] = {}
    for key in ("P", "N"):
        h = held.get(key) or {}
        v = (h.get("error_of_change") or {}).get(target)
        if target in (h.get("nonfinite") or []):
            out[key] = math.inf
        else:
            out[key] = float(v) if v is not None and math.isfinite(float(v)) else None
    return out


def heldout_error(fit: FitResult | Mapping[str, Any], target: str) -> float:
    """``heldout_error_of_change``: the larger of the two splits' errors, ``inf`` if either has none.

    A non-finite or missing split counts against the law (it is never skipped).
    """
    errs = heldout_errors(fit, target).values()
    return math.inf if any(e is None or not math.isfinite(e) for e in errs) else max(errs)  # type: ignore[type-var]


def error_bounds(fit: FitResult, target: str) -> dict[str, tuple[float, float]] | None:
    """``{split: (lower, upper)}`` of each split's true held-out error of change, or None when not stored.

    ``upper``: the bias whose simulated 5% quantile reaches the observed error (inf past the grid), and never
    below that error; ``lower``: the bias whose 97.5% quantile reaches it (0 when the error is within the
    noise of a correct law), never above it. Linear between the stored grid points.
    """
    stored = (fit.calibration.get("error_bound") or {}).get(target)
    errs = heldout_errors(fit, target)
    if not stored or any(k not in stored for k in errs):
        return None
    grid = np.asarray(stored["bias"], float)
    out = {}
    for key, e in errs.items():
        if e is None or not math.isfinite(e):
            return None
        lo_q, hi_q = (np.asarray(stored[key][q], float) for q in ("lo", "hi"))
        # never a bound on the wrong side of the error observed: the noise inflates a mean absolute error, so
        # the inversion alone could put the upper bound below it
        out[key] = (min(_invert(grid, hi_q, e, 0.0), e), max(_invert(grid, lo_q, e, math.inf), e))
    return out


def _invert(grid: np.ndarray, q: np.ndarray, e: float, beyond: float) -> float:
    """The bias at which the non-decreasing quantile curve ``q`` reaches ``e``: 0 below it, ``beyond`` past it."""
    ok = np.isfinite(q)
    grid, q = grid[ok], q[ok]
    if not q.size or e > q[-1]:
        return beyond if q.size else math.nan
    if e <= q[0]:
        return 0.0
    i = int(np.searchsorted(q, e))  # q[i-1] < e <= q[i]
    return float(grid[i - 1] + (grid[i] - grid[i - 1]) * (e - q[i - 1]) / max(q[i] - q[i - 1], 1e-12))


def reliability(fit: FitResult, target: str, limit: float = RELIABLE_ERROR) -> Reliability:
    """Whether ``fit`` is reliable for ``target``, under the rules in the module docstring."""
    parts = heldout_errors(fit, target)
    floor = (fit.calibration.get("noise_floor") or {}).get(target)
    for key, what in (("P", "largest P"), ("N", "longest N")):
        e = parts[key]
        h = fit.heldout.get(key) or {}
        if e is None:
            why = h.get("error", "change since step 0 unknown")
            return Reliability("unreliable", f"no held-out error with the {what} left out ({why})", None, floor, limit)
        if not math.isfinite(e):
            return Reliability("unreliable", f"non-finite prediction with the {what} left out", None, floor, limit)
        if h.get("converged") is False:
            return Reliability("unreliable", f"the refit with the {what} left out did not converge", e, floor, limit)
    err = max(parts.values())  # type: ignore[type-var]
    if "optimiser did not converge" in fit.warnings:
        return Reliability("unreliable", "the optimiser did not converge", err, floor, limit)
    if (fit.calibration.get("t") or {}).get(target) is None:
        why = fit.calibration.get("note") or "no calibration stored"
        return Reliability("unreliable", f"uncalibrated prediction interval ({why})", err, floor, limit)
    said = f"held-out error {err:.1%} of the change since step 0"
    bounds = error_bounds(fit, target)
    if bounds is None:
        return Reliability("undecided", f"{said}, but the fit stores no bounds of it (fitted before they were "
                           "computed): refit to judge it", err, floor, limit)  # fmt: skip
    upper = max(u for _, u in bounds.values())
    lower = max(lo for lo, _ in bounds.values())
    up = "inf" if not math.isfinite(upper) else f"{upper:.1%}"
    said += f" (95% upper bound {up}, lower bound {lower:.1%}"
    said += f", noise floor {floor:.1%})" if floor is not None else ")"
    if upper <= limit:
        return Reliability("reliable", f"{said}: upper bound <= {limit:.0%}", err, floor, limit, upper, lower)
    if lower > limit:
        worse = max(bounds, key=lambda k: bounds[k][0])
        return Reliability("unreliable", f"{said}: the {'largest P' if worse == 'P' else 'longest N'} split's lower "
                           f"bound exceeds {limit:.0%}", err, floor, limit, upper, lower)  # fmt: skip
    return Reliability("undecided", f"{said}: the bounds straddle {limit:.0%}, the data cannot decide", err, floor,
                       limit, upper, lower)


def comparison_table(fits: Mapping[str, Mapping[str, FitResult]]) -> list[dict[str, Any]]:
    """One row per dataset, law and target, the smallest held-out error first within a target.

    Args:
        fits: the output of ``rows.fit_study``.

    Returns:
        Dicts with dataset, law, target, r2, rmse, ``heldout_error_of_change``
        (the larger of the two splits; None when either has no finite number)
        with its parts ``heldout_P_error_of_change`` and ``heldout_N_error_of_change``,
        the splits' RMSE and mean relative error, ``state``, ``reliable`` (state is
        reliable), ``reliability`` (the reason), ``noise_floor``, ``limit``, ``error_upper`` and
        ``error_lower`` (the bounds of the error), ``fit_clean``,
        ``fit_warnings``, the prediction interval's leave-one-run-out ``coverage``, ``units``
        and n_points; sorted by dataset, target, then held-out error (missing last).
    """
    table = []
    for ds, by_label in fits.items():
        for label, fit in by_label.items():
            for t in fit.targets:
                row: dict[str, Any] = {"dataset": ds, "law": label, "target": t,
                                       "r2": fit.r2[t], "rmse": fit.rmse[t]}
                err = heldout_error(fit, t)
                row["heldout_error_of_change"] = err if math.isfinite(err) else None
                for key, e in heldout_errors(fit, t).items():
                    row[f"heldout_{key}_error_of_change"] = e if e is not None and math.isfinite(e) else None
                for key in ("P", "N"):
                    h = fit.heldout.get(key, {})
                    row[f"heldout_{key}_rmse"] = h.get("rmse", {}).get(t)
                    row[f"heldout_{key}_mre"] = h.get("mre", {}).get(t)
                rel = reliability(fit, t)
                row.update(state=rel.state, reliable=bool(rel), reliability=rel.reason, noise_floor=rel.noise_floor,
                           limit=rel.limit, error_upper=_finite(rel.upper), error_lower=_finite(rel.lower),
                           fit_clean=fit.fit_clean, fit_warnings=list(fit.warnings))
                row["coverage"] = (fit.calibration.get("coverage") or {}).get(t)
                row["units"] = fit.n_groups
                row["n_points"] = fit.n_points
                table.append(row)
    return sorted(table, key=lambda r: (r["dataset"], r["target"], r["heldout_error_of_change"] is None,
                                        r["heldout_error_of_change"] or 0.0, r["law"]))


def candidates(fits: Mapping[str, FitResult], targets: Sequence[str]) -> list[tuple[str, str]]:
    """(label, target) of every fitted (P, N) law for one of ``targets``."""
    return [(k, t) for k, f in fits.items() if f.inputs == ("P", "N") for t in targets if t in f.targets]


RANK = {"reliable": 0, "undecided": 1, "unreliable": 2}
"""The order in which laws are preferred: reliable, then undecided (it predicts and says so); never unreliable."""


def usable(fit: FitResult, target: str) -> bool:
    """Whether a law may predict ``target``: reliable, or undecided (the data cannot tell it from the limit)."""
    return reliability(fit, target).state != "unreliable"


def choose_law(fits: Mapping[str, FitResult], target: str, law: str | None = None,
               reliable_only: bool = True) -> str | None:
    """The label of the (P, N) law for ``target``: reliable before undecided, then the smallest held-out error.

    An ``undecided`` law is chosen only when no law is reliable; its state goes with every prediction.

    Args:
        law: force this label (it must model ``target`` from P and N; whatever its state).
        reliable_only: False to fall back to unreliable laws too (for drawing, never predicting).

    Returns:
        A label, or None when no law qualifies.
    """
    cands = {k: fits[k] for k, _ in candidates(fits, [target])}
    if law is not None:
        if law not in cands:
            raise ValueError(f"{law!r} is not a fitted (P, N) law for {target}; have {sorted(cands)}")
        return law
    ok = {k: f for k, f in cands.items() if usable(f, target) or not reliable_only}
    if not ok:
        return None
    return min(ok, key=lambda k: (RANK[reliability(ok[k], target).state], heldout_error(ok[k], target), k))


def choose_forgetting(fits: Mapping[str, FitResult], law: str | None = None) -> tuple[str, str] | None:
    """(label, target) of the forgetting law: forget_ce and forget_kl laws compete on state, then error.

    Args:
        law: force ``label`` or ``label@target``.
    """
    if law is not None:
        label, _, t = law.partition("@")
        targets = [t] if t else [x for x in FORGETTING if x in fits[label].targets] if label in fits else []
        if not targets or (label, targets[0]) not in candidates(fits, targets):
            raise ValueError(f"{law!r} is not a fitted (P, N) forgetting law; have "
                             f"{sorted(k for k, _ in candidates(fits, FORGETTING))}")
        return label, targets[0]
    ok = [(k, t) for k, t in candidates(fits, FORGETTING) if usable(fits[k], t)]
    return min(ok, key=lambda kt: (RANK[reliability(fits[kt[0]], kt[1]).state], heldout_error(fits[kt[0]], kt[1]),
                                   kt[0], kt[1])) if ok else None


def no_law_reason(fits: Mapping[str, FitResult], targets: Sequence[str]) -> str:
    """Why no law predicts ``targets``: each candidate's state and reason."""
    cands = candidates(fits, targets)
    if not cands:
        return f"no reliable law: no fitted (P, N) law models {' or '.join(targets)}"
    why = "; ".join(f"{k}: {reliability(fits[k], t).state}, {reliability(fits[k], t).reason}" for k, t in cands)
    return f"no reliable law, and none undecided (held-out error of change against {RELIABLE_ERROR:.0%}): {why}"
