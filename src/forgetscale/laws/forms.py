"""Law forms: the functional shapes that tie forgetting to fine-tuning loss, parameters and steps.

A :class:`LawForm` is pure data plus a vectorised function: parameter names (as
in docs/inference.md), bounds, optimiser starts (a grid, and ``init``: starts
computed from the data), which parameters are fitted in log space, which ones
the data cannot identify (``pin``), and what data it needs (``check``).
``theta`` is in natural units, ordered as ``params``, and may carry leading
batch axes (bootstrap replicates are evaluated at once). Fitting is ``fit.py``.

This module holds the machinery and Eq. 4 (``linear``); the other forms live
one family per module and register on import: ``paper.py`` (Eq. 5 + 6, and why
it pins two parameters) and ``power.py`` (``kl_power``, ``additive``).
Every declared bound holds for every reported parameter: log parameters are
boxed in log space, and term scales (``term_scales``) are clamped to their
bounds when decoded, so a fit can sit *on* a bound (and is flagged) but never
beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

Array = np.ndarray
LawFn = Callable[[Array, Array], Array]  # (theta (..., k), x (n_in, n)) -> (..., n_out, n)
InitFn = Callable[[Array, Array, Mapping[str, float]], list[Array]]  # (x, y, pinned) -> starts
PinFn = Callable[[Array, Array], dict[str, float]]  # (x, y) -> gauge values
GaugeFn = Callable[[Array], Array]  # theta -> the same law in the reporting gauge

HUGE = 1e200  # magnitude bound for scale parameters that may legitimately be tiny or huge
_TERM_BOUND = 50.0  # |log| of a power term at the data's centre: e^50 is beyond any sane law
EXP_BOUNDS = (1e-4, 5.0)  # exponents of power terms: positive (a term that shrinks), at most 5


class FitError(ValueError):
    """The data cannot support the requested fit (too few points, one distinct P, ...)."""


@dataclass(frozen=True)
class LawForm:
    """One functional form of a scaling law.

    Attributes:
        name: registry key.
        inputs: names of the rows of ``x``.
        outputs: names of the rows the law predicts.
        params: parameter names, in the order of ``theta``.
        fn: ``fn(theta, x)``, vectorised over points and over leading axes of ``theta``.
        bounds: natural-unit ``(lo, hi)`` per parameter. For a parameter in
            ``log_params`` with ``lo < 0 < hi`` either sign is allowed: the sign
            is taken from the start and the magnitude fitted in log space.
        grid: start values per parameter for the cartesian grid search.
        log_params: parameters fitted as ``sign * exp(z)`` (positive scales:
            better conditioned when they span orders of magnitude).
        pin: computes, from the data, values of parameters the data cannot
            identify (a gauge); they are held fixed during the fit.
        canonical: maps a fitted ``theta`` to the gauge parameters are reported
            in, leaving every prediction unchanged (the fit may use a gauge
            that is better conditioned).
        init: data-driven starting points (variable projection, closed forms).
        positive_inputs: whether inputs enter through logarithms and must be > 0.
        min_distinct: fewest distinct values of an input the law can be fitted
            on: 2 for a pure power law, 3 where the input also has a scale beside
            other terms (two levels cannot separate ``A`` from ``alpha``).
        term_scales: ``a -> (alpha, input)`` for a log parameter entering as
            ``(a/input)^alpha``: the fitter uses ``alpha * (log a - mean log
            input)``, the term at the data's centre, which the data pin down and
            which is nearly uncorrelated with ``alpha`` (``log a`` is not).
        description: one line for listings.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: tuple[str, ...]
    fn: LawFn
    bounds: Mapping[str, tuple[float, float]]
    grid: Mapping[str, tuple[float, ...]]
    log_params: frozenset[str] = frozenset()
    pin: PinFn | None = None
    canonical: GaugeFn | None = None
    init: InitFn | None = None
    positive_inputs: bool = True
    min_distinct: Mapping[str, int] = field(default_factory=dict)
    term_scales: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        missing = [p for p in self.params if p not in self.bounds]
        if missing:
            raise ValueError(f"law {self.name!r}: no bounds for {missing}")
        if bad := [p for p in self.log_params if self.bounds[p][1] <= 0]:
            raise ValueError(f"law {self.name!r}: log parameters {bad} need hi > 0")
        if bad := [i for i in self.min_distinct if i not in self.inputs]:
            raise ValueError(f"law {self.name!r}: min_distinct names unknown inputs {bad}")
        for a, (alpha, inp) in self.term_scales.items():
            if a not in self.log_params or alpha in self.log_params or inp not in self.inputs:
                raise ValueError(
                    f"law {self.name!r}: term scale {a!r} must be a log parameter with a linear "
                    f"exponent and a known input; got ({alpha!r}, {inp!r})"
                )
        for name in ("bounds", "grid", "min_distinct", "term_scales"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def n_params(self) -> int:
        return len(self.params)

    def theta(self, values: Mapping[str, float]) -> Array:
        """Parameter vector from a name -> value mapping (every parameter required).

        Example:
            >>> LAWS["linear"].theta({"s_fft": 2.0, "c_fft": 1.5})
            array([1.5, 2. ])
        """
        unknown = set(values) - set(self.params)
        missing = [p for p in self.params if p not in values]
        if unknown or missing:
            raise ValueError(
                f"law {self.name!r} takes parameters {list(self.params)}; "
                f"missing {missing}, unknown {sorted(unknown)}"
            )
        return np.array([float(values[p]) for p in self.params])

    def predict(self, theta: Array | Mapping[str, float], x: Array) -> Array:
        """Evaluate the law.

        Args:
            theta: parameters, shape ``(..., n_params)``, or a name -> value mapping.
            x: inputs, shape ``(n_inputs, n)`` (a 1-D array is taken as one input).

        Returns:
            Array of shape ``(..., n_outputs, n)``. Overflow gives ``inf``, not a
            warning: the fitter treats non-finite predictions as invalid.

        Example:
            >>> law = LAWS["additive"]
            >>> th = law.theta({"E": 1.0, "A": 4.0, "B": 9.0, "alpha": 0.5, "beta": 0.5})
            >>> law.predict(th, np.array([[4.0], [9.0]]))
            array([[6.]])
        """
        if isinstance(theta, Mapping):
            theta = self.theta(theta)
        theta = np.asarray(theta, dtype=float)
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        if theta.shape[-1] != self.n_params or x.shape[0] != len(self.inputs):
            raise ValueError(
                f"law {self.name!r}: theta needs {self.n_params} values and x {len(self.inputs)} "
                f"rows ({', '.join(self.inputs)}); got {theta.shape} and {x.shape}"
            )
        with np.errstate(all="ignore"):
            return self.fn(theta, x)

    def check(self, x: Array, y: Array, inputs: tuple[str, ...] | None = None,
              targets: tuple[str, ...] | None = None) -> None:
        """Raise :class:`FitError`, naming the column, if ``x, y`` cannot support a fit.

        Refused: non-finite values, targets <= 0 (the fit is on log-residuals),
        a constant target, inputs <= 0 where the law takes their log, fewer
        distinct values of an input than ``min_distinct``, fewer points than
        free parameters + 1. ``inputs``/``targets`` name the rows in messages.
        """
        inputs, targets = inputs or self.inputs, targets or self.outputs
        for names, arr in ((inputs, x), (targets, y)):
            for name, row in zip(names, arr, strict=True):
                if bad := int(np.sum(~np.isfinite(row))):
                    raise FitError(f"{name}: {bad} non-finite value(s); drop or fix those points")
        for name, row in zip(targets, y, strict=True):
            if np.any(row <= 0):
                raise FitError(f"{name}: {int(np.sum(row <= 0))} value(s) <= 0; the fit is on "
                               "log-residuals")
            if np.ptp(row) <= 1e-12 * np.abs(row).max():
                raise FitError(f"{name} is constant ({row[0]:g}): nothing to fit")
        for name, row in zip(inputs, x, strict=True):
            if self.positive_inputs and np.any(row <= 0):
                raise FitError(f"{name}: values must be > 0 (the law takes their logarithm)")
        for inp, k in self.min_distinct.items():
            row, name = x[self.inputs.index(inp)], inputs[self.inputs.index(inp)]
            if (have := len(np.unique(row))) < k:
                raise FitError(
                    f"law {self.name!r} needs at least {k} distinct {name} values; got {have} "
                    f"({', '.join(f'{v:g}' for v in np.unique(row)[:5])}) — sweep more values "
                    f"of {name}"
                )
        n_free = self.n_params - len(self.pin(x, y) if self.pin else {})
        if x.shape[1] < n_free + 1:
            raise FitError(f"law {self.name!r} has {n_free} free parameters and needs at least "
                           f"{n_free + 1} points; got {x.shape[1]}")


# ---------------------------------------------------------------------------- coordinates

@dataclass(frozen=True)
class Coords:
    """Map between an optimiser's free coordinates ``z`` and natural parameters.

    Kinds: ``lin`` (as is); ``log`` (``sign * exp(z)``, the sign fixed by the
    start); ``term`` (``alpha * (log a - centre)`` for ``LawForm.term_scales``).
    Pinned parameters are constants, not coordinates.
    """

    form: LawForm
    pinned: dict[str, float]
    signs: Array  # (n_params,), +-1
    centres: dict[str, float]  # mean log input per term-scale parameter

    @classmethod
    def at(cls, form: LawForm, pinned: dict[str, float], signs: Array, x: Array) -> Coords:
        """Coordinates centred on the data ``x``."""
        centres = {a: float(np.mean(np.log(x[form.inputs.index(inp)])))
                   for a, (_, inp) in form.term_scales.items()}
        return cls(form, pinned, signs, centres)

    @property
    def free(self) -> list[int]:
        return [i for i, p in enumerate(self.form.params) if p not in self.pinned]

    def kind(self, i: int) -> str:
        name = self.form.params[i]
        if name in self.centres and self.form.term_scales[name][0] not in self.pinned:
            return "term"
        return "log" if name in self.form.log_params else "lin"

    def _exponent(self, theta: Array, i: int) -> Array:
        return theta[..., self.form.params.index(self.form.term_scales[self.form.params[i]][0])]

    def encode(self, theta: Array) -> Array:
        theta, cols = np.asarray(theta, dtype=float), []
        with np.errstate(all="ignore"):  # a scale that underflowed to 0 encodes as -inf
            for i in self.free:
                kind, v = self.kind(i), theta[..., i]
                if kind == "term":
                    v = self._exponent(theta, i) * (np.log(v) - self.centres[self.form.params[i]])
                cols.append(np.log(np.abs(v)) if kind == "log" else v)
        return np.stack(cols, axis=-1)

    def decode(self, z: Array) -> Array:
        z = np.asarray(z, dtype=float)
        theta = np.empty(z.shape[:-1] + (self.form.n_params,))
        for p, v in self.pinned.items():
            theta[..., self.form.params.index(p)] = v
        kinds = [self.kind(i) for i in self.free]
        with np.errstate(all="ignore"):
            for kind_first in ("lin", "log", "term"):  # term scales need their exponent first
                for j, (i, kind) in enumerate(zip(self.free, kinds, strict=True)):
                    if kind != kind_first:
                        continue
                    v = z[..., j]
                    if kind == "log":
                        v = self.signs[i] * np.exp(v)
                    elif kind == "term":
                        # log a = centre + term / alpha: as alpha -> 0 it runs off to +-inf, so it is
                        # clamped to the declared bounds (a fit there is flagged as on its bound)
                        lo, hi = self.form.bounds[self.form.params[i]]
                        log_a = v / self._exponent(theta, i) + self.centres[self.form.params[i]]
                        # (clipped again after exp: exp(log lo) may round to just below lo)
                        v = np.clip(np.exp(np.clip(log_a, math.log(max(lo, 1e-300)), math.log(hi))), lo, hi)
                    theta[..., i] = v
        return theta

    def bounds(self) -> list[tuple[float, float]]:
        out = []
        for i in self.free:
            lo, hi = self.form.bounds[self.form.params[i]]
            if self.kind(i) == "term":
                lo, hi = -_TERM_BOUND, _TERM_BOUND
            elif self.kind(i) == "log":
                positive = self.signs[i] > 0 and lo > 0
                lo, hi = math.log(max(lo, 1e-300) if positive else 1e-300), math.log(max(-lo, hi))
            out.append((lo, hi))
        return out


# ---------------------------------------------------------------------------- registry

LAWS: dict[str, LawForm] = {}


def register_law(form: LawForm, *, replace: bool = False) -> LawForm:
    """Add a law form to :data:`LAWS` (the open set of forms the study fits).

    Args:
        form: the form; its ``name`` is the key.
        replace: allow overwriting an existing form of the same name.

    Returns:
        The form, so this can be used at module level: ``MY = register_law(LawForm(...))``.
    """
    if form.name in LAWS and not replace:
        raise ValueError(f"a law named {form.name!r} is already registered")
    LAWS[form.name] = form
    return form


def get_law(name: str | LawForm) -> LawForm:
    """Look a form up by name, with the known names in the error."""
    if isinstance(name, LawForm):
        return name
    try:
        return LAWS[name]
    except KeyError:
        raise KeyError(f"unknown law {name!r}; known: {', '.join(sorted(LAWS))}") from None


# ---------------------------------------------------------------------------- helpers

def col(theta: Array, i: int) -> Array:
    # parameter i as (..., 1) so it broadcasts against points (n,)
    return theta[..., i, None]


def wls(design: Array, y: Array) -> tuple[Array, Array]:
    """Weighted least squares ``y ≈ design @ coef`` for ``m`` candidate designs at once.

    ``design`` is ``(m, n, k)``, ``y`` is ``(n,)``. Weights are ``1/y`` (relative
    residuals: a linear stand-in for the objective's log-residuals). Returns
    ``(coef (m, k), pred (m, n))``, NaN for ill-conditioned candidates.
    """
    dw = design / y[:, None]
    gram = np.einsum("mni,mnj->mij", dw, dw)
    rhs = np.einsum("mni,n->mi", dw, np.ones_like(y))
    coef = np.full(rhs.shape, np.nan)
    with np.errstate(all="ignore"):
        ok = np.linalg.cond(gram) < 1e14
        coef[ok] = np.linalg.solve(gram[ok], rhs[ok][..., None])[..., 0]
        return coef, np.einsum("mni,mi->mn", design, coef)


def rel_rss(pred: Array, y: Array) -> Array:
    with np.errstate(all="ignore"):
        rss = (((pred - y) / y) ** 2).sum(-1)
    return np.where(np.isfinite(rss), rss, np.inf)


# ---------------------------------------------------------------------------- linear (Eq. 4)

def _linear(theta: Array, x: Array) -> Array:
    c, s = col(theta, 0), col(theta, 1)
    return (-c * x[0] + s)[..., None, :]


def _linear_init(x: Array, y: Array, pinned: Mapping[str, float]) -> list[Array]:
    coef, _ = wls(np.stack([-x[0], np.ones_like(x[0])], axis=-1)[None], y[0])
    return [coef[0]] if np.all(np.isfinite(coef)) else []


register_law(LawForm(
    name="linear",
    inputs=("ft_loss",),
    outputs=("forget_ce",),
    params=("c_fft", "s_fft"),
    fn=_linear,
    bounds={"c_fft": (-1e6, 1e6), "s_fft": (-1e6, 1e6)},
    grid={"c_fft": (-1.0, 0.0, 1.0, 2.0), "s_fft": (0.5, 2.0, 5.0)},
    init=_linear_init,
    positive_inputs=False,
    description="Eq. 4: forget_ce = -c_fft * ft_loss + s_fft",
))


# The other families (paper.py, power.py) register themselves when they are imported, which
# forgetscale/laws/__init__.py does before any laws module is used: importing them here would make a cycle.
