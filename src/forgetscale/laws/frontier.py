"""The frontier test: does a mitigation forget less than plain LoRA's line predicts?

Early stopping and smaller adapters only slide along plain LoRA's line between
fine-tuning loss and forgetting (Eq. 4, ``linear``). A mitigation is worth
something only if, at equal fine-tuning loss, it forgets less than that line:
its *residual* ``forget_ce - (s_fft - c_fft * ft_loss)`` is negative.

For each (mitigation, strength): the mean residual over its points; a 95%
bootstrap interval over runs, each replicate pairing a run-bootstrap refit of
the line with a resample of the mitigation's own runs (so both uncertainties are
in it); and a verdict, ``beats_line`` when the interval lies below 0, ``worse``
above, ``on_line`` when it contains 0. Points whose fine-tuning loss lies outside
the plain points' range are counted: there the line is extrapolated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from forgetscale.laws.fit import FitResult, fit_law

Array = np.ndarray
LEVEL = 0.95


def fit_line(ft_loss: Array, forget_ce: Array, runs: Array, n_boot: int = 200, seed: int = 0) -> FitResult:
    """Plain LoRA's line ``forget_ce = -c_fft * ft_loss + s_fft``, with a bootstrap over runs.

    Raises:
        FitError: too few distinct points for a line.
    """
    return fit_law("linear", {"ft_loss": np.asarray(ft_loss, float)}, np.asarray(forget_ce, float),
                   groups=np.asarray(runs), n_boot=n_boot, seed=seed, holdout={})  # fmt: skip


def residuals(line: FitResult | Mapping[str, float], ft_loss: Array, forget_ce: Array) -> Array:
    """Observed forgetting minus the line's at the same fine-tuning loss.

    >>> residuals({"c_fft": 1.0, "s_fft": 3.0}, np.array([1.0, 2.0]), np.array([2.5, 1.0]))
    array([0.5, 0. ])
    """
    p = line.params if isinstance(line, FitResult) else line
    return np.asarray(forget_ce, float) - (p["s_fft"] - p["c_fft"] * np.asarray(ft_loss, float))


def frontier(
    line: FitResult,
    ft_loss: Array,
    forget_ce: Array,
    runs: Array,
    labels: list[tuple[str, float]],
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Judge mitigated points against ``line``, one result per (mitigation, strength) label.

    Args:
        line: :func:`fit_line` on the plain runs (its bootstrap samples carry the line's uncertainty).
        ft_loss, forget_ce, runs: the mitigated points and the run each belongs to.
        labels: (mitigation, strength) per point.
        n_boot: bootstrap replicates of the interval.
        seed: the bootstrap's seed.

    Returns:
        Dicts with ``mitigation``, ``strength``, ``residual`` (mean), ``lo``, ``hi`` (95% interval),
        ``verdict``, ``n_points``, ``n_runs`` and ``n_outside`` (points beyond the line's ft_loss range).

    Example:
        >>> x = np.tile([1.0, 2.0, 3.0], 3); runs = np.repeat(["a", "b", "c"], 3)
        >>> line = fit_line(x, 5.0 - x + 0.01 * np.array([1, -1, 0, 0, 1, -1, -1, 0, 1]), runs, n_boot=50)
        >>> out = frontier(line, np.array([2.0, 2.5, 2.0]), np.array([2.5, 2.2, 2.6]), np.array(["m", "m", "n"]),
        ...                [("kl", 1.0), ("kl", 1.0), ("kl", 1.0)])
        >>> out[0]["verdict"], round(out[0]["residual"], 3), out[0]["n_runs"]
        ('beats_line', -0.4, 2)
    """
    x, y, runs = np.asarray(ft_loss, float), np.asarray(forget_ce, float), np.asarray(runs).astype(str)
    lo_x, hi_x = line.domain["ft_loss"]
    names = list(line.form.params)
    thetas = line.samples if len(line.samples) else np.array([[line.params[p] for p in names]])
    rng = np.random.default_rng(seed)
    out = []
    for label in sorted(set(labels), key=lambda lab: (lab[0], lab[1])):
        idx = np.flatnonzero([lab == label for lab in labels])
        if not idx.size:
            continue
        r = residuals(line, x[idx], y[idx])
        members = [idx[runs[idx] == g] for g in np.unique(runs[idx])]
        boot = np.empty(n_boot)
        for b in range(n_boot):
            theta = dict(zip(names, thetas[rng.integers(len(thetas))], strict=True))
            pick = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
            boot[b] = residuals(theta, x[pick], y[pick]).mean()
        lo, hi = (np.percentile(boot, [50 * (1 - LEVEL), 50 * (1 + LEVEL)]) if n_boot else (np.nan, np.nan))
        verdict = "beats_line" if hi < 0 else "worse" if lo > 0 else "on_line" if n_boot else "undecided"
        outside = int(np.sum((x[idx] < lo_x) | (x[idx] > hi_x)))
        out.append({"mitigation": label[0], "strength": float(label[1]), "residual": float(r.mean()),
                    "lo": float(lo), "hi": float(hi), "verdict": verdict, "n_points": int(idx.size),
                    "n_runs": len(members), "n_outside": outside})  # fmt: skip
    return out
