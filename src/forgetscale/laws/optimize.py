"""The optimiser behind every fit: Huber loss on log-residuals, L-BFGS-B from data-driven starts.

Search. ``search="varpro"`` (default) starts L-BFGS-B from a handful of points
computed from the data (``LawForm.init``: variable projection over the
exponents where the law is linear in its other parameters), screened by a
short polish; ``search="grid"`` polishes every point of the form's cartesian
grid. Measured on the 2-core dev machine (shared, load 5-7), Chinchilla Fig. 4
(240 points), ``additive``; both reach the same optimum (objectives equal to
1e-15; A=477.83, B=2143.4, E=1.8172, alpha=0.34731, beta=0.36717):

    varpro  6 L-BFGS-B runs,        242 evaluations,  0.22 s CPU,  0.37 s wall
    grid    4,556 L-BFGS-B runs, 341,413 evaluations,   193 s CPU,   346 s wall

so varpro is the default.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy
from scipy.optimize import minimize

from forgetscale.laws.forms import Coords, FitError, LawForm

Array = np.ndarray
Search = Literal["varpro", "grid"]

_INVALID = 1e3  # log-residual for a NaN/inf prediction, and the cap on any: finite, never NaN
_FLOOR = 30.0  # log-residual floor for a prediction <= 0, plus its distance below zero
# L-BFGS-B crawls on the near-L1 Huber objective: a looser relative tolerance stops bootstrap
# refits near their warm start and shrinks intervals (measured: 1e-8 cut an exponent's 95%
# interval from [0.17, 0.62] to [0.41, 0.43]; 1e-10 still cut some; 1e-12 and 1e-14 agree).
_FTOL = 1e-12
_MAXITER = 5000
_SCREEN_ITERS = 100  # short polish per data-driven start ...
_KEEP = 2  # ... after which only this many best starts are run to convergence
# Bootstrap refits start at the full fit; one that needs more than this is crawling along
# a direction the resample does not determine, and is counted as not converged.
BOOT_MAXITER = 1000


@functools.lru_cache(maxsize=1)
def _scipy_openblas() -> ctypes.CDLL | None:
    libs = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    for path in sorted(libs.glob("libscipy_openblas*")):
        try:
            lib = ctypes.CDLL(str(path))
            lib.openblas_set_num_threads_local.restype = ctypes.c_int
            return lib
        except (OSError, AttributeError):
            continue
    return None


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run scipy's BLAS on one thread, in this thread only, restoring it afterwards.

    L-BFGS-B calls BLAS on tiny vectors; waking OpenBLAS's worker threads costs
    more than the work (measured on the loaded 2-core dev machine: 3.2 ms per
    L-BFGS-B iteration with 2 threads, 0.2 ms with 1). No-op without scipy's
    bundled OpenBLAS (e.g. macOS Accelerate).
    """
    lib = _scipy_openblas()
    prev = lib.openblas_set_num_threads_local(1) if lib else None
    try:
        yield
    finally:
        if lib:
            lib.openblas_set_num_threads_local(prev)



# ---------------------------------------------------------------------------- objective

def _residuals(form: LawForm, theta: Array, x: Array, y: Array) -> Array:
    """Log-residuals ``log(pred) - log(y)`` for a batch of ``theta``: ``(..., n_out, n)``.

    Invalid predictions get a large finite residual that still improves towards
    validity (a prediction <= 0 is charged ``30 + |pred|/y``), so the optimiser is
    pushed back and never fed NaN.
    """
    pred = form.predict(theta, x)
    with np.errstate(all="ignore"):
        r = np.log(pred) - np.log(y)
        r = np.where(np.isfinite(pred) & (pred <= 0), -_FLOOR + pred / y, r)
    return np.clip(np.where(np.isfinite(r), r, _INVALID), -_INVALID, _INVALID)


def _huber(r: Array, delta: float) -> Array:
    """Huber loss summed over the last two axes, as a mean in units of ``delta``."""
    a = np.abs(r)
    h = np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))
    return h.sum(axis=(-1, -2)) / (delta * r.shape[-1] * r.shape[-2])


@dataclass
class Best:
    """One optimum: parameters (natural units), objective, coordinates, and what to say about it."""

    theta: Array
    objective: float
    coords: Coords
    converged: bool
    pinned: dict[str, float]
    notes: list[str]
    on_bound: tuple[int, ...] = ()  # parameter indices the data push onto a declared bound


def _polish(
    coords: Coords, z0: Array, x: Array, y: Array, delta: float, maxiter: int | None = None,
) -> tuple[Array, float, bool]:
    """L-BFGS-B from ``z0``.

    The gradient is exact in the Huber loss and finite-difference only in the
    smooth model: forward differences of the residuals for all coordinates in
    one batched evaluation (k + 1 parameter vectors). Differencing the
    objective itself instead would straddle the loss's kinks and, centrally,
    cost twice as many evaluations.
    """
    form = coords.form
    n_tot = y.size

    def fg(z: Array) -> tuple[float, Array]:
        h = 1e-7 * np.maximum(1.0, np.abs(z))
        zz = np.concatenate([z[None], z + np.diag(h)])
        r = _residuals(form, coords.decode(zz), x, y)
        r0 = r[0]
        jac = (r[1:] - r0) / h[:, None, None]
        psi = np.clip(r0, -delta, delta)  # derivative of the Huber loss
        return float(_huber(r0, delta)), (jac * psi).sum(axis=(1, 2)) / (delta * n_tot)

    bounds = coords.bounds()
    z0 = np.clip(z0, [b[0] for b in bounds], [b[1] for b in bounds])
    opts = {"maxiter": maxiter or _MAXITER, "ftol": _FTOL, "gtol": 1e-10, "maxcor": 20}
    res = minimize(fg, z0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
    converged = bool(res.success)
    if maxiter is not None:  # a capped run: converged or not, the caller decides
        return np.asarray(res.x), float(res.fun), converged
    if not converged and "ABNORMAL" in str(res.message):
        # A line search that cannot progress at a kink of the Huber loss is a
        # minimum, not a failure, if a restart from there cannot improve either.
        res2 = minimize(fg, res.x, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        converged = res2.fun >= res.fun - 1e-9 * max(abs(res.fun), 1e-12)
        if res2.fun < res.fun:
            res = res2
    return np.asarray(res.x), float(res.fun), converged


def fit_point(
    form: LawForm, x: Array, y: Array, delta: float, search: Search, max_starts: int,
    warm: Best | None = None, also: Best | None = None, maxiter: int | None = None,
) -> Best:
    """Fit once: from ``warm`` only, or from the search's starts (plus ``also``)."""
    pinned = form.pin(x, y) if form.pin else {}
    if any(not math.isfinite(v) for v in pinned.values()):
        raise FitError(f"law {form.name!r}: cannot set its gauge from these data ({pinned})")
    # an earlier fit moves over through its coordinates (so it suits this data's gauge),
    # keeping its signs; other starts take the signs of their own values
    moved = [(_transfer(b, pinned), b.coords.signs) for b in (warm, also) if b is not None]
    if warm is not None:
        starts = []
    elif search == "varpro" and form.init is not None:
        starts = form.init(x, y, pinned)[:max_starts] or _grid(form, pinned)
    elif search in ("varpro", "grid"):
        starts = _grid(form, pinned)
    else:
        raise ValueError(f"search must be 'varpro' or 'grid', not {search!r}")
    # Data-driven starts are screened: a short polish each, then only the best few are
    # run to convergence. On the paper law the starts all reach the same optimum but some
    # crawl for 1,000-2,000 iterations; screening halved a 6-run study fit. The grid
    # search polishes every start fully, as the reference method does.
    pairs = [(np.array(t, dtype=float), None) for t in starts] + moved
    screen = warm is None and search == "varpro" and len(pairs) > _KEEP
    runs = []
    for theta0, signs in pairs:
        for p, v in pinned.items():
            theta0[form.params.index(p)] = v
        s = signs if signs is not None else np.where(theta0 < 0, -1.0, 1.0)
        coords = Coords.at(form, pinned, s, x)
        z0 = coords.encode(np.where(theta0 == 0, 1e-12, theta0))
        runs.append((coords, *_polish(coords, z0, x, y, delta, _SCREEN_ITERS if screen else maxiter)))
    if screen:
        runs.sort(key=lambda r: r[2])
        runs = [(c, *_polish(c, z, x, y, delta)) for c, z, _, _ in runs[:_KEEP]]
    coords, z, f, conv = min(runs, key=lambda r: r[2])
    best = Best(coords.decode(z), f, coords, conv, pinned, [])
    if not best.converged:
        best.notes.append("optimiser did not converge")
    notes, flagged = _bound_warnings(best)
    best.notes += notes
    best.on_bound = tuple(sorted(flagged))
    return best


def _transfer(best: Best, pinned: dict[str, float]) -> Array:
    c = best.coords
    return Coords(c.form, pinned, c.signs, c.centres).decode(c.encode(best.theta))


def _grid(form: LawForm, pinned: Mapping[str, float]) -> list[Array]:
    free = [p for p in form.params if p not in pinned]
    missing = [p for p in free if p not in form.grid]
    if missing:
        raise ValueError(f"law {form.name!r}: no grid values for {missing}")
    out = []
    for combo in itertools.product(*(form.grid[p] for p in free)):
        values = dict(zip(free, combo, strict=True)) | dict(pinned)
        out.append(form.theta(values))
    return out



def _bound_warnings(best: Best) -> tuple[list[str], set[int]]:
    """A parameter on (or, which decoding prevents, beyond) its declared bound, by name.

    Checked twice: in the optimiser's coordinates (a box the search stopped
    against) and in natural units against ``LawForm.bounds`` (a term scale is
    clamped there when its exponent heads to 0: see ``Coords.decode``). Log
    parameters are compared in log space, relative 1e-6 of the bound's size.
    """
    form, coords, out = best.coords.form, best.coords, []
    flagged: set[int] = set()
    z = coords.encode(best.theta)
    for j, (i, (lo, hi)) in enumerate(zip(coords.free, coords.bounds(), strict=True)):
        tol = 1e-6 * max(1.0, abs(lo), abs(hi)) if math.isfinite(hi - lo) else 0.0
        if z[j] <= lo + tol or z[j] >= hi - tol:
            flagged.add(i)
    for i in coords.free:
        name, v = form.params[i], float(best.theta[i])
        lo, hi = form.bounds[name]
        if not (lo <= v <= hi) or not math.isfinite(v):
            out.append(f"{name} = {v:.6g} is outside its bounds [{lo:g}, {hi:g}]")
            continue
        if name in form.log_params and v != 0:
            a, lo_a, hi_a = math.log(abs(v)), math.log(max(abs(lo), 1e-300)), math.log(max(abs(hi), 1e-300))
            near = min(abs(a - lo_a) if v * lo > 0 else math.inf, abs(a - hi_a) if v * hi > 0 else math.inf)
            if near <= 1e-6 * max(1.0, abs(lo_a), abs(hi_a)):
                flagged.add(i)
        elif min(v - lo, hi - v) <= 1e-9 * max(1.0, abs(lo), abs(hi)):
            flagged.add(i)
    out += [f"{form.params[i]} = {best.theta[i]:.6g} is on its bound" for i in sorted(flagged)]
    return out, flagged
