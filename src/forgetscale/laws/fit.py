"""Robust fitting of law forms: Huber on log-residuals, bootstrap over runs, held-out checks.

Practice follows Besiroglu et al. (2024), the careful replication of Chinchilla's
fits: the loss is a Huber loss (small ``delta``) on ``log(pred) - log(y)``, the
optimiser is L-BFGS-B, confidence intervals come from a bootstrap that resamples
whole runs (points from one run share its noise, so resampling rows would
understate the uncertainty), parameters are kept unrounded, and a law is judged
by its error on held-out points with the largest P or the longest N.

Modules: ``optimize.py`` (the objective and L-BFGS-B search), ``validate.py``
(bootstrap over runs, held-out splits and their error relative to the change
since step 0), ``intervals.py`` (prediction intervals for a new run,
calibrated on leave-one-run-out errors). This module assembles a
:class:`FitResult` from them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forgetscale.laws.forms import FitError, LawForm, get_law
from forgetscale.laws.intervals import calibrate, prediction_band
from forgetscale.laws.optimize import Search, _Best, _blas_single_thread, _fit_point
from forgetscale.laws.validate import bootstrap, heldout_split

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
        params: every parameter by its DESIGN.md name, unrounded.
        intervals: 95% bootstrap percentile interval per parameter (NaN without bootstrap).
        r2: in-sample R² per target, on the original scale.
        rmse: in-sample RMSE per target, on the original scale.
        n_points: points fitted.
        n_groups: independent groups (runs) the bootstrap resampled.
        reliable: False when any warning below casts doubt on the numbers.
        warnings: why a fit is unreliable, or caveats.
        heldout: per split key (e.g. ``"P"``): the held-out value, count, RMSE and
            mean relative error per target — or ``{"error": ...}``.
        pinned: parameters set by the gauge (not fitted; see ``forms``).
        domain: ``(min, max)`` of every input in the data: predictions outside extrapolate.
        objective: final Huber objective (mean, in units of ``delta``).
        settings: delta, search, n_boot requested, seed.
        samples: bootstrap parameter vectors, shape ``(n_ok, n_params)``.
        calibration: the prediction interval's calibration (``intervals.calibrate``):
            residual scale, ``k`` and cross-validated coverage per target.
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
    reliable: bool
    warnings: tuple[str, ...]
    heldout: dict[str, Any]
    pinned: tuple[str, ...] = ()
    domain: dict[str, tuple[float, float]] = field(default_factory=dict)
    objective: float = math.nan
    settings: dict[str, Any] = field(default_factory=dict)
    samples: Array = field(default_factory=lambda: np.zeros((0, 0)), compare=False, repr=False)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def form(self) -> LawForm:
        return get_law(self.law)

    @property
    def label(self) -> str:
        """``law``, or ``law:target`` when the form's generic output was mapped to a target."""
        if self.targets == self.form.outputs:
            return self.law
        return f"{self.law}:{','.join(self.targets)}"

    def predict(self, x: Mapping[str, Any] | Array, band: str = "prediction",
                level: float = 0.95) -> tuple[Array, Array, Array]:
        """Point prediction and an interval.

        Args:
            x: inputs by name (``{"P": ..., "N": ...}``) or an ``(n_inputs, n)`` array.
            band: ``"prediction"`` (default): the calibrated 95% prediction interval
                for a new run (``intervals.py``); ``"mean"``: the bootstrap
                percentile band of the fitted mean curve (narrower: it ignores
                run-to-run noise and misfit).
            level: central probability of the ``"mean"`` band (the prediction
                interval is calibrated at 95%).

        Returns:
            ``(mean, lo, hi)``, each of shape ``(n_targets, n)``; ``lo``/``hi`` are
            NaN where there is no interval (no calibration, or no bootstrap).
        """
        xa = _as_rows(x, self.inputs, "input")
        theta = self.form.theta(self.params)
        if band == "prediction":
            return prediction_band(self.form, theta, self.samples, xa, self.calibration, self.targets)
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
            "n_groups": self.n_groups, "reliable": self.reliable, "warnings": self.warnings,
            "heldout": self.heldout, "domain": self.domain, "objective": self.objective,
            "settings": self.settings, "calibration": self.calibration,
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
            n_points=int(d["n_points"]), n_groups=int(d["n_groups"]), reliable=bool(d["reliable"]),
            warnings=tuple(d["warnings"]), heldout=d["heldout"],
            pinned=tuple(k for k, v in p.items() if v.get("pinned")),
            domain={k: (_float(a), _float(b)) for k, (a, b) in d.get("domain", {}).items()},
            objective=_float(d.get("objective")), settings=dict(d.get("settings", {})),
            samples=np.array([[_float(v) for v in row] for row in d.get("samples") or []],
                             dtype=float).reshape(-1, n_params),
            calibration=dict(d.get("calibration") or {}),
        )


# ---------------------------------------------------------------------------- public entry

@_blas_single_thread()
def fit_law(
    law: str | LawForm,
    x: Mapping[str, Any] | Array,
    y: Mapping[str, Any] | Array,
    *,
    groups: Sequence[Any] | Array | None = None,
    inputs: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    delta: float = 1e-3,
    n_boot: int = 100,
    seed: int = 0,
    search: Search = "varpro",
    holdout: Mapping[str, Any] | None = None,
    max_starts: int = 4,
    change: Mapping[str, Any] | Array | None = None,
) -> FitResult:
    """Fit a law form robustly, with bootstrap intervals and held-out validation.

    Args:
        law: a registered name or a :class:`LawForm`.
        x: inputs, ``(n_inputs, n)`` array or mapping by name.
        y: targets, ``(n_targets, n)`` (or 1-D for one target) array or mapping by name.
        groups: group id per point (e.g. run_id); the bootstrap resamples whole
            groups. None: every point is its own group.
        inputs: names for the rows of ``x`` (default: the form's), e.g. ``("P", "N")``
            for ``additive``'s ``x1, x2``.
        targets: names for the rows of ``y`` (default: the form's outputs).
        delta: Huber threshold on log-residuals.
        n_boot: bootstrap replicates (0: no intervals).
        seed: seed of the bootstrap's generator; the fit is otherwise deterministic.
        search: ``"varpro"`` (data-driven starts) or ``"grid"`` (the form's grid).
        holdout: split keys, name -> value per point; for each, the points with
            the largest value are held out, the law refitted on the rest and
            scored on them. Default: the law's own inputs.
        max_starts: most data-driven starts polished.
        change: per target, each point's change since step 0 of its run (same
            names/shape as ``y``); held-out splits then report
            ``error_of_change`` (``validate.py``).

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
    form.check(xa, ya, inputs, targets)

    best = _fit_point(form, xa, ya, delta, search, max_starts)
    theta = form.canonical(best.theta) if form.canonical else best.theta
    problems = list(best.notes)  # each makes the fit unreliable
    caveats = []  # worth saying, but no reason to distrust the numbers
    pred = form.predict(theta, xa)
    r2, rmse = {}, {}
    for i, t in enumerate(targets):
        resid = ya[i] - pred[i]
        rmse[t] = float(np.sqrt(np.mean(resid**2)))
        r2[t] = float(1 - np.sum(resid**2) / np.sum((ya[i] - ya[i].mean()) ** 2))
        if r2[t] < 0:
            problems.append(f"fits {t} worse than a constant (R² = {r2[t]:.3g})")

    fit_samples, n_failed, n_stalled = bootstrap(form, xa, ya, gid, best, delta, n_boot, seed)
    samples = form.canonical(fit_samples) if form.canonical and len(fit_samples) else fit_samples
    intervals = {p: (math.nan, math.nan) for p in form.params}
    if len(samples):
        with np.errstate(invalid="ignore"):  # inf in a replicate that overflowed a scale
            lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
        intervals = {p: (float(lo[i]), float(hi[i])) for i, p in enumerate(form.params)}
        problems += _interval_warnings(form, best, fit_samples)
    elif n_boot > 0:
        problems.append("every bootstrap refit failed: no intervals")
    else:
        caveats.append("no bootstrap (n_boot=0): no intervals, so reliability is not assessed")
    if n_boot > 0 and n_failed > 0.1 * n_boot:
        problems.append(f"{n_failed} of {n_boot} bootstrap refits failed")
    if n_boot > 0 and n_stalled > 0.1 * n_boot:
        problems.append(f"{n_stalled} of {n_boot} bootstrap refits did not converge")
    n_groups = len(np.unique(gid))
    if n_boot > 0 and n_groups < 3:
        problems.append(f"only {n_groups} groups to resample: intervals are not meaningful")

    keys = holdout if holdout is not None else dict(zip(inputs, xa, strict=True))
    ch = None if change is None else _as_rows(change, targets, "change")
    heldout = {
        k: heldout_split(form, xa, ya, np.asarray(v, dtype=float), targets, delta, search, best, ch)
        for k, v in keys.items()
    }
    calibration = calibrate(form, xa, ya, gid, best, fit_samples, delta, targets)
    return FitResult(
        law=form.name, inputs=inputs, targets=targets,
        params={p: float(v) for p, v in zip(form.params, theta, strict=True)},
        intervals=intervals, r2=r2, rmse=rmse, n_points=n, n_groups=n_groups,
        reliable=not problems, warnings=tuple(problems + caveats), heldout=heldout,
        pinned=tuple(best.pinned), domain={k: (float(v.min()), float(v.max())) for k, v in
                                           zip(inputs, xa, strict=True)},
        objective=best.objective,
        settings={"delta": delta, "search": search, "n_boot": n_boot, "seed": seed},
        samples=samples, calibration=calibration,
    )


# ---------------------------------------------------------------------------- warnings

def _interval_warnings(form: LawForm, best: _Best, samples: Array) -> list[str]:
    out = []
    zs = best.coords.encode(samples)
    z = best.coords.encode(best.theta)
    zs = np.where(np.isfinite(zs), zs, np.copysign(1e300, zs))  # under/overflowed scales
    lo, hi = np.percentile(zs, [2.5, 97.5], axis=0)
    for j, i in enumerate(best.coords.free):
        name = form.params[i]
        if best.coords.kind(i) != "lin":
            span = (hi[j] - lo[j]) / math.log(10)
            if span > 300:
                out.append(f"{name}: 95% interval spans beyond the float range (a bootstrap "
                           "refit drove it to 0 or infinity)")
            elif span > math.log10(_FOLD_LIMIT):
                out.append(f"{name}: 95% interval spans {span:.1f} orders of magnitude")
        elif hi[j] - lo[j] > _REL_LIMIT * max(abs(z[j]), 1e-12):
            out.append(f"{name}: 95% interval [{lo[j]:.3g}, {hi[j]:.3g}] is wider than 2x its "
                       f"value {z[j]:.3g}")
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
