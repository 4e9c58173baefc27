"""Robust fitting of law forms: Huber on log-residuals, intervals over runs, held-out checks.

Practice follows Besiroglu et al. (2024), the careful replication of Chinchilla's
fits: a Huber loss on ``log(pred) - log(y)``, L-BFGS-B, unrounded parameters,
and a law judged by its error on held-out points with the largest P or the
longest N. Uncertainty is at the level of the independent units, runs and the
data orders they share (``intervals.py``).

Huber's δ. ``delta="auto"`` (what a study uses) first fits with δ = 1e-3, then
refits with δ = 1.345 x the robust sd of the log residuals (1.4826 x their
MAD): Huber's usual tuning, which keeps ~95% efficiency under Gaussian noise
and still bounds an outlier's pull. A fixed small δ (1e-3, the default here
and Epoch's choice for Chinchilla) makes the loss effectively L1 on residuals
of ~1e-2; its intervals are then those of the least-squares linearisation,
a slight understatement.

Modules: ``optimize.py`` (the objective and L-BFGS-B search), ``intervals.py``
(parameter and prediction intervals), ``validate.py`` (held-out splits and the
noise floor of their error). This module assembles a :class:`FitResult`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from forgetscale.laws.forms import FitError, LawForm, get_law
from forgetscale.laws.intervals import (
    LEVEL,
    PARAM_METHOD,
    calibrate,
    clip_draws,
    clip_intervals,
    design,
    param_covariance,
    param_draws,
    param_intervals,
    prediction_band,
)
from forgetscale.laws.optimize import Search, blas_single_thread, fit_point
from forgetscale.laws.validate import extrapolation_kappa, heldout_split, noise_floor

__all__ = ["FitError", "FitResult", "fit_law"]

Array = np.ndarray

_FOLD_LIMIT = 100.0  # a log-scale parameter whose 95% interval spans more than this is unreliable
_REL_LIMIT = 2.0  # ... or a linear one whose interval is wider than twice its value


@dataclass(frozen=True)
class FitResult:
    """A fitted law with its uncertainty and validation.

    Attributes:
        law: name of the law form.
        inputs: names of the input columns the law was fitted on (e.g. ``("P", "N")``).
        targets: names of the modelled outputs (e.g. ``("forget_ce",)``).
        params: every parameter by its name in the law's form (docs/inference.md), unrounded.
        intervals: 95% interval per parameter (``intervals.py``; NaN when pinned, on a bound or
            without an interval), never beyond the parameter's declared bounds: a side cut there is
            named in ``warnings`` and ``inference["cut_at_bounds"]``.
        r2: in-sample R² per target, on the original scale.
        rmse: in-sample RMSE per target, on the original scale.
        n_points: points fitted.
        n_groups: independent runs.
        fit_clean: False when a warning below casts doubt on the numbers (a bound, an interval
            spanning orders of magnitude, a failed optimiser). Whether the law predicts unseen runs
            is another question, answered by ``select.reliability``.
        warnings: why a fit is not clean, or caveats.
        heldout: per split key (e.g. ``"P"``): the held-out value, count, distance, convergence,
            RMSE and errors per target — or ``{"error": ...}``.
        pinned: parameters set by the gauge (not fitted; see ``forms``).
        domain: ``(min, max)`` of every input in the data: predictions outside extrapolate.
        objective: final Huber objective (mean, in units of ``delta``).
        settings: delta (and its rule), search, n_boot, seed.
        samples: parameter draws from the intervals' t distribution, ``(n_boot, n_params)``, each
            clipped to the declared bounds (the share of draws clipped: ``inference["draws_cut"]``).
        calibration: the prediction interval's variance components, coverage check and noise floor
            per target (``intervals.calibrate``, ``validate.noise_floor``).
        inference: how the parameter intervals were made: method, level, free parameters, their
            covariance and df, units, what they are conditional on.
    """

    law: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    r2: dict[str, float]
    rmse: dict[str, float]
    n_points: int
    n_groups: int
    fit_clean: bool
    warnings: tuple[str, ...]
    heldout: dict[str, Any]
    pinned: tuple[str, ...] = ()
    domain: dict[str, tuple[float, float]] = field(default_factory=dict)
    objective: float = math.nan
    settings: dict[str, Any] = field(default_factory=dict)
    samples: Array = field(default_factory=lambda: np.zeros((0, 0)), compare=False, repr=False)
    calibration: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)

    @property
    def form(self) -> LawForm:
        return get_law(self.law)

    @property
    def label(self) -> str:
        """``law``, or ``law:target`` when the form's generic output was mapped to a target."""
        if self.targets == self.form.outputs:
            return self.law
        return f"{self.law}:{','.join(self.targets)}"

    def covariance(self) -> dict[str, Any]:
        """The free parameters' indices and covariance (interval coordinates, ``intervals.py``)."""
        names = list(self.inference.get("free") or [])
        cov = self.inference.get("cov")
        return {"free": [self.form.params.index(p) for p in names],
                "cov": np.array(cov, dtype=float).reshape(len(names), len(names)) if names and cov else None}

    def predict(self, x: Mapping[str, Any] | Array, band: str = "prediction",
                level: float = LEVEL) -> tuple[Array, Array, Array]:
        """Point prediction and an interval.

        Args:
            x: inputs by name (``{"P": ..., "N": ...}``) or an ``(n_inputs, n)`` array.
            band: ``"prediction"`` (default): the prediction interval for a new run
                (``intervals.py``); ``"mean"``: the band of the fitted mean curve from the
                parameter draws (narrower: it ignores run-to-run noise and misfit).
            level: central probability of the ``"mean"`` band (the prediction interval is 95%).

        Returns:
            ``(mean, lo, hi)``, each of shape ``(n_targets, n)``; ``lo``/``hi`` are
            NaN where there is no interval.
        """
        xa = _as_rows(x, self.inputs, "input")
        theta = self.form.theta(self.params)
        if band == "prediction":
            return prediction_band(self.form, theta, self.covariance(), xa, self.calibration, self.targets,
                                   self.inputs, self.domain)
        if band != "mean":
            raise ValueError(f"band must be 'prediction' or 'mean', not {band!r}")
        mean = self.form.predict(theta, xa)
        if len(self.samples) == 0:
            return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
        q = 50 * (1 - level)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no interval there
            lo, hi = np.nanpercentile(self.form.predict(self.samples, xa), [q, 100 - q], axis=0)
        return mean, lo, hi

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary (NaN becomes None); inverse of :meth:`from_dict`."""
        params = {p: {"value": v, "lo": self.intervals[p][0], "hi": self.intervals[p][1],
                      "pinned": p in self.pinned} for p, v in self.params.items()}
        out = {
            "law": self.law, "label": self.label, "inputs": self.inputs, "targets": self.targets,
            "params": params, "r2": self.r2, "rmse": self.rmse, "n_points": self.n_points,
            "n_groups": self.n_groups, "fit_clean": self.fit_clean, "warnings": self.warnings,
            "heldout": self.heldout, "domain": self.domain, "objective": self.objective,
            "settings": self.settings, "calibration": self.calibration, "inference": self.inference,
        }
        if samples:
            out["samples"] = self.samples.tolist()
        return _jsonable(out)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitResult:
        """Rebuild a result written by :meth:`to_dict` (e.g. from ``fits.json``)."""
        p = d["params"]
        n_params = len(p)
        return cls(
            law=d["law"], inputs=tuple(d["inputs"]), targets=tuple(d["targets"]),
            params={k: _float(v["value"]) for k, v in p.items()},
            intervals={k: (_float(v["lo"]), _float(v["hi"])) for k, v in p.items()},
            r2={k: _float(v) for k, v in d["r2"].items()},
            rmse={k: _float(v) for k, v in d["rmse"].items()},
            n_points=int(d["n_points"]), n_groups=int(d["n_groups"]),
            fit_clean=bool(d.get("fit_clean", d.get("reliable", False))),  # "reliable": its name in older stores
            warnings=tuple(d["warnings"]), heldout=d["heldout"],
            pinned=tuple(k for k, v in p.items() if v.get("pinned")),
            domain={k: (_float(a), _float(b)) for k, (a, b) in d.get("domain", {}).items()},
            objective=_float(d.get("objective")), settings=dict(d.get("settings", {})),
            samples=np.array([[_float(v) for v in row] for row in d.get("samples") or []],
                             dtype=float).reshape(-1, n_params),
            calibration=dict(d.get("calibration") or {}), inference=dict(d.get("inference") or {}),
        )


# ---------------------------------------------------------------------------- public entry

@blas_single_thread()
def fit_law(
    law: str | LawForm,
    x: Mapping[str, Any] | Array,
    y: Mapping[str, Any] | Array,
    *,
    groups: Sequence[Any] | Array | None = None,
    inputs: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    delta: float | Literal["auto"] = 1e-3,
    n_boot: int = 1000,
    seed: int = 0,
    search: Search = "varpro",
    holdout: Mapping[str, Any] | None = None,
    max_starts: int = 4,
    change: Mapping[str, Any] | Array | None = None,
    cells: Sequence[Any] | Array | None = None,
    n_orders: int | None = None,
    offset: Mapping[str, float] | None = None,
) -> FitResult:
    """Fit a law form robustly, with intervals over runs and held-out validation.

    Args:
        law: a registered name or a :class:`LawForm`.
        x: inputs, ``(n_inputs, n)`` array or mapping by name.
        y: targets, ``(n_targets, n)`` (or 1-D for one target) array or mapping by name.
        groups: run id per point: the independent units. None: every point is its own run.
        inputs: names for the rows of ``x`` (default: the form's), e.g. ``("P", "N")``
            for ``additive``'s ``x1, x2``.
        targets: names for the rows of ``y`` (default: the form's outputs).
        delta: Huber threshold on log-residuals, or ``"auto"`` (see the module docstring).
        n_boot: parameter draws kept in ``samples`` (for bands of the mean; 0: none).
        seed: seed of the draws and of the noise-floor simulation; the fit is otherwise deterministic.
        search: ``"varpro"`` (data-driven starts) or ``"grid"`` (the form's grid).
        holdout: split keys, name -> value per point; for each, the points with
            the largest value are held out, the law refitted on the rest and
            scored on them. Default: the law's own inputs.
        max_starts: most data-driven starts polished.
        change: per target, each point's change since step 0 of its run (same
            names/shape as ``y``); held-out splits then report
            ``error_of_change`` (``validate.py``).
        cells: per point, what it shares with other runs' points (its data order and step); None:
            nothing (every point its own cell).
        n_orders: number of data orders among the runs (for the intervals' wording).
        offset: per target, a floor the quantity lives above (the base entropy under ``forget_ce``):
            prediction intervals are built on ``log(y - offset)``.

    Returns:
        A :class:`FitResult`.

    Raises:
        FitError: the data cannot support the fit (see :meth:`LawForm.check`).

    Example:
        >>> P = np.repeat([1e5, 1e6, 1e7], 5); N = np.tile([10., 20., 40., 80., 160.], 3)
        >>> kl = 1e-3 * P ** 0.2 * N ** 0.5
        >>> fit = fit_law("kl_power", {"P": P, "N": N}, kl, groups=np.repeat([0, 1, 2], 5), n_boot=20)
        >>> round(fit.params["a"], 6), round(fit.params["b"], 6)
        (0.2, 0.5)
    """
    form = get_law(law)
    inputs = tuple(inputs or form.inputs)
    targets = tuple(targets or form.outputs)
    if len(inputs) != len(form.inputs) or len(targets) != len(form.outputs):
        raise ValueError(
            f"law {form.name!r} takes {len(form.inputs)} inputs and {len(form.outputs)} outputs; "
            f"got names {inputs} and {targets}"
        )
    xa = _as_rows(x, inputs, "input")
    ya = _as_rows(y, targets, "target")
    if xa.shape[1] != ya.shape[1]:
        raise FitError(f"{xa.shape[1]} input points but {ya.shape[1]} target points")
    n = xa.shape[1]
    gid = _group_ids(groups, n)
    dz = design(gid, cells, n_orders)
    form.check(xa, ya, inputs, targets)
    off = np.array([float((offset or {}).get(t) or 0.0) for t in targets])
    if np.any(off > 0) and not np.all(ya > off[:, None]):
        off = np.where(np.all(ya > off[:, None], axis=1), off, 0.0)  # a point at or below it: its own log scale

    best = fit_point(form, xa, ya, 1e-3 if delta == "auto" else float(delta), search, max_starts)
    rule = f"fixed {delta:g}" if delta != "auto" else "1.345 x 1.4826 x MAD of log residuals"
    if delta == "auto":
        with np.errstate(all="ignore"):
            r = (np.log(form.predict(best.theta, xa)) - np.log(ya)).ravel()
        delta = max(1.345 * 1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-4)
        best = fit_point(form, xa, ya, delta, search, max_starts, also=best)
    delta = float(delta)
    theta = form.canonical(best.theta) if form.canonical else best.theta
    problems = list(best.notes)  # each makes the fit unclean
    caveats = []  # worth saying, but no reason to distrust the numbers
    pred = form.predict(theta, xa)
    r2, rmse = {}, {}
    for i, t in enumerate(targets):
        resid = ya[i] - pred[i]
        rmse[t] = float(np.sqrt(np.mean(resid**2)))
        r2[t] = float(1 - np.sum(resid**2) / np.sum((ya[i] - ya[i].mean()) ** 2))
        if r2[t] < 0:
            problems.append(f"fits {t} worse than a constant (R² = {r2[t]:.3g})")

    pc = param_covariance(form, best, xa, ya, dz, delta)
    intervals = param_intervals(form, best, best.theta, pc)
    if form.canonical:  # intervals are in the fitting gauge; a canonical gauge would mix them
        caveats.append("parameter intervals are in the fitting gauge")
    unidentified = [form.params[i] for i in best.on_bound] + _coupled(form, best)
    if unidentified:
        problems.append(f"not identified (on a bound, or coupled to one): {', '.join(unidentified)}")
        intervals.update({p: (math.nan, math.nan) for p in unidentified})
    if not pc["identified"]:
        problems.append("the data do not identify every parameter (singular information): intervals unreliable")
    problems += _interval_warnings(form, intervals, theta)  # on the uncut intervals: their width is the news
    cut = clip_intervals(form, intervals)
    if cut:
        caveats.append("95% interval cut at a declared bound, a side the data do not bound: "
                       + ", ".join(f"{p} ({' and '.join(sides)})" for p, sides in cut.items()))
    n_groups = dz.n_runs
    if n_groups < 3:
        problems.append(f"only {n_groups} groups (runs): intervals are not meaningful")
    samples = param_draws(form, best.theta, pc, n_boot, seed)
    if form.canonical and len(samples):
        samples = form.canonical(samples)
    samples, draws_cut = clip_draws(form, samples)

    keys = holdout if holdout is not None else dict(zip(inputs, xa, strict=True))
    ch = None if change is None else _as_rows(change, targets, "change")
    heldout, nulls = {}, {}
    for k, v in keys.items():
        heldout[k], nulls[k] = heldout_split(form, xa, ya, np.asarray(v, dtype=float), targets, delta, search,
                                             ch, dz, off)
    calibration = calibrate(form, xa, ya, dz, best, delta, targets, off, inputs=inputs)
    calibration["kappa"] = {t: extrapolation_kappa(heldout, inputs, t) for t in targets}
    if ch is not None:
        calibration.update(noise_floor(nulls, ya, ch, dz, calibration, targets, seed))
    if calibration["n_not_converged"]:
        caveats.append(f"{calibration['n_not_converged']} leave-one-run-out refit(s) did not converge")
    inference = {
        "method": PARAM_METHOD, "level": LEVEL, "units": n_groups, "n_orders": dz.n_orders,
        "n_cells": pc["n_cells"], "conditional_on": dz.conditional_on(), "redrawn": 0,
        "cut_at_bounds": cut, "draws_cut": draws_cut,
        "free": [form.params[i] for i in pc["free"]], "cov": pc["cov"].tolist(),
        "df": {form.params[i]: float(pc["df"][j]) for j, i in enumerate(pc["free"])},
    }
    return FitResult(
        law=form.name, inputs=inputs, targets=targets,
        params={p: float(v) for p, v in zip(form.params, theta, strict=True)},
        intervals=intervals, r2=r2, rmse=rmse, n_points=n, n_groups=n_groups,
        fit_clean=not problems, warnings=tuple(problems + caveats), heldout=heldout,
        pinned=tuple(best.pinned), domain={k: (float(v.min()), float(v.max())) for k, v in
                                           zip(inputs, xa, strict=True)},
        objective=best.objective,
        settings={"delta": delta, "delta_rule": rule, "search": search, "n_boot": n_boot, "seed": seed},
        samples=samples, calibration=calibration, inference=inference,
    )


# ---------------------------------------------------------------------------- warnings

def _coupled(form: LawForm, best: Any) -> list[str]:
    """Exponents whose term scale sits on a bound: the data no longer separate the two."""
    out = []
    for i in best.on_bound:
        pair = form.term_scales.get(form.params[i])
        if pair:
            out.append(pair[0])
    return out


def _interval_warnings(form: LawForm, intervals: Mapping[str, tuple[float, float]], theta: Array) -> list[str]:
    out = []
    for i, name in enumerate(form.params):
        lo, hi = intervals[name]
        if not (math.isfinite(lo) or math.isfinite(hi)) or math.isnan(lo):
            continue
        if name in form.log_params:
            with np.errstate(all="ignore"):
                span = (math.log(abs(hi)) - math.log(abs(lo))) / math.log(10) if lo and hi else math.inf
            if span > 300 or not math.isfinite(span):
                out.append(f"{name}: 95% interval spans beyond the float range")
            elif span > math.log10(_FOLD_LIMIT):
                out.append(f"{name}: 95% interval spans {span:.1f} orders of magnitude")
        elif hi - lo > _REL_LIMIT * max(abs(theta[i]), 1e-12):
            out.append(f"{name}: 95% interval [{lo:.3g}, {hi:.3g}] is wider than 2x its value {theta[i]:.3g}")
    return out


# ---------------------------------------------------------------------------- plumbing

def _as_rows(v: Mapping[str, Any] | Array, names: tuple[str, ...], what: str) -> Array:
    if isinstance(v, Mapping):
        if missing := [k for k in names if k not in v]:
            raise ValueError(f"missing {what}(s) {missing}: got {sorted(v)}, expected "
                             f"{list(names)} (name the columns with inputs=/targets=)")
        return np.stack(np.broadcast_arrays(*(np.atleast_1d(np.asarray(v[k], float)) for k in names)))
    a = np.asarray(v, dtype=float)
    a = a[None, :] if a.ndim == 1 and len(names) == 1 else a
    if a.ndim != 2 or a.shape[0] != len(names):
        raise ValueError(f"{what}s need shape ({len(names)}, n) for {list(names)}; got {a.shape}")
    return a


def _group_ids(groups: Sequence[Any] | Array | None, n: int) -> Array:
    g = list(range(n)) if groups is None else list(groups)
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries for {n} points")
    return np.unique(np.array([str(v) for v in g]), return_inverse=True)[1]


def _num(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float | np.floating):
        return _num(v)
    if isinstance(v, np.integer):
        return int(v)
    return v
