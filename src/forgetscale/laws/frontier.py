"""The frontier test: does a mitigation forget less than plain LoRA's line predicts?

Early stopping and smaller adapters only slide along plain LoRA's line between
fine-tuning loss and forgetting (Eq. 4, ``linear``). A mitigation is worth
something only if, at equal fine-tuning loss, it forgets less than that line:
its *residual* ``forget_ce - (s_fft - c_fft * ft_loss)`` is negative.

The unit is the run: a run's points share its run effect, so a level (kind,
strength) is summarised by the mean over its runs of each run's mean residual.

- **Trained kinds** (``replay``, ``kl``): the level is compared with a
  *prediction* interval for the same number of new plain runs at the same
  fine-tuning loss and the same P. Each plain run is left out in turn, the line
  refitted without it and the run's mean residual taken (``e_g``): the spread of
  a new plain run's mean residual, the run-level spread and the line's error
  together. Run-to-run spread may grow with P (the default study's largest rank
  is its least stable), so ``e_g`` is not pooled: ``log s²(P)`` is fitted linear
  in ``log P`` to them (:func:`run_variance`, when 4 or more plain runs sit at 3
  or more P; equal for all otherwise, and the row's ``variance`` says which), and
  the level gets ``s²`` at its own runs' P. The line's error at the level's
  fine-tuning loss, ``v``, is the jackknife variance over the same refits.
  Interval: ``mean ± t(df) · sqrt(mean s²(P_run)/k + v)`` for k mitigated runs,
  ``df`` Satterthwaite's from the variance model's information. Under the null a
  plain level posing as a mitigation falls outside it at most about 5% of the
  time, whether run spread is equal or grows with rank (``tests/sim``). The
  mitigation's own runs are assumed to spread as plain runs at the same P do;
  each row reports their own spread (``own_run_sd``) beside the model's
  (``model_run_sd``). Without a P (or rank) column run spread is taken as equal.
- **Post-hoc kinds** (:data:`POST_HOC`: ``rescale``, ``intruders``, measured on the plain
  runs' own adapters): each point is paired with the same run's own point at the
  same step; the run's contrast is the mean residual difference, and the level
  the mean over its runs with a ``t(k-1)`` interval over runs (the line's
  jackknife variance added, though the slope is all that enters).

Verdicts: ``beats_line`` (interval below 0), ``worse`` (above), ``on_line``
(contains 0), and ``undecided`` with a reason when a level has one run, the
plain runs are too few (< 3) to calibrate, or a post-hoc method changed no
run's adapter (intruders with none found). Points whose fine-tuning loss lies
outside the plain points' range are counted: there the line is extrapolated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import optimize, stats

from forgetscale.schema import POST_HOC_METHODS

Array = np.ndarray
LEVEL = 0.95
MIN_PLAIN_RUNS, MIN_LEVEL_RUNS = 3, 2
CONDITIONAL_ON = ("the study's one forgetting corpus and one set of held-out fine-tuning examples, shared by "
                  "every run; its data orders, which draw from the same training examples")
POST_HOC = set(POST_HOC_METHODS)
"""Kinds measured on plain runs' own adapters after training (no retraining: ``rescale``,
``intruders``): judged by the paired within-run contrast with the run's own points."""


def fit_line(ft_loss: Array, forget_ce: Array, runs: Array | None = None) -> dict[str, Any]:
    """Plain LoRA's line ``forget_ce = -c_fft * ft_loss + s_fft`` by least squares.

    Returns:
        ``{"c_fft", "s_fft", "r2", "ft_loss_range", "n_points", "n_runs"}``.

    Raises:
        ValueError: fewer than 2 distinct fine-tuning losses.

    Example:
        >>> line = fit_line(np.array([1.0, 2.0, 3.0]), np.array([4.0, 3.0, 2.0]))
        >>> round(line["c_fft"], 6), round(line["s_fft"], 6), line["r2"]
        (1.0, 5.0, 1.0)
    """
    x, y = np.asarray(ft_loss, float), np.asarray(forget_ce, float)
    if len(np.unique(x)) < 2:
        raise ValueError("plain LoRA's line needs at least 2 distinct fine-tuning losses")
    slope, icpt = np.polyfit(x, y, 1)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - icpt - slope * x) ** 2)) / ss if ss > 0 else 1.0
    return {"c_fft": float(-slope), "s_fft": float(icpt), "r2": r2, "ft_loss_range": [float(x.min()), float(x.max())],
            "n_points": int(x.size), "n_runs": len(np.unique(runs)) if runs is not None else None}  # fmt: skip


def residuals(line: Mapping[str, Any], ft_loss: Array, forget_ce: Array) -> Array:
    """Observed forgetting minus the line's at the same fine-tuning loss.

    >>> residuals({"c_fft": 1.0, "s_fft": 3.0}, np.array([1.0, 2.0]), np.array([2.5, 1.0]))
    array([0.5, 0. ])
    """
    return np.asarray(forget_ce, float) - (line["s_fft"] - line["c_fft"] * np.asarray(ft_loss, float))


def _run_means(r: Array, runs: Array) -> Array:
    return np.array([r[runs == g].mean() for g in np.unique(runs)])


def frontier(
    plain: Mapping[str, Array],
    points: Mapping[str, Array],
    labels: list[tuple[str, float]],
) -> list[dict[str, Any]]:
    """Judge mitigated points against plain LoRA's line, one result per (kind, strength) level.

    Args:
        plain: the plain runs' points: ``ft_loss``, ``forget_ce``, ``run_id`` and ``step`` arrays, and
            ``P`` (or ``rank``) for run spread at each level's own P.
        points: the mitigated points, the same columns (a post-hoc point's ``run_id`` is a plain run's).
        labels: (kind, strength) per mitigated point.

    Returns:
        One dict per level: ``mitigation``, ``strength``, ``residual`` (mean over runs of the run mean
        residual; for post-hoc kinds the paired difference), ``lo``, ``hi`` (95%; None when undecided for
        want of runs), ``verdict``, ``reason`` (None unless undecided), ``test``, ``n_points``, ``n_runs``,
        ``n_plain_runs`` and ``n_outside`` (points beyond the plain ft_loss range).

    Example:
        >>> x = np.tile([1.0, 2.0, 3.0], 4); runs = np.repeat(["a", "b", "c", "d"], 3)
        >>> y = 5.0 - x + 0.01 * np.repeat([1.0, -1.0, 0.5, -0.5], 3)
        >>> plain = {"ft_loss": x, "forget_ce": y, "run_id": runs, "step": np.tile([8, 16, 32], 4)}
        >>> pts = {"ft_loss": np.array([2.0, 2.5, 2.0, 2.5]), "forget_ce": np.array([2.6, 2.1, 2.62, 2.08]),
        ...        "run_id": np.array(["m", "m", "n", "n"]), "step": np.array([8, 16, 8, 16])}
        >>> out = frontier(plain, pts, [("kl", 1.0)] * 4)
        >>> out[0]["verdict"], round(out[0]["residual"], 3), out[0]["n_runs"]
        ('beats_line', -0.4, 2)
    """
    px, py = np.asarray(plain["ft_loss"], float), np.asarray(plain["forget_ce"], float)
    pruns, psteps = np.asarray(plain["run_id"]).astype(str), np.asarray(plain["step"], float)
    x, y = np.asarray(points["ft_loss"], float), np.asarray(points["forget_ce"], float)
    runs, steps = np.asarray(points["run_id"]).astype(str), np.asarray(points["step"], float)
    line = fit_line(px, py, pruns)
    plain_ids = np.unique(pruns)
    G = len(plain_ids)
    # leave-one-plain-run-out refits: the held-out run's mean residual and the line itself
    loo: list[dict[str, Any]] = []
    e_g = []
    for g in plain_ids:
        keep = pruns != g
        if len(np.unique(px[keep])) < 2:
            continue
        ln = fit_line(px[keep], py[keep])
        loo.append(ln)
        e_g.append(residuals(ln, px[~keep], py[~keep]).mean())
    plain_levels, levels = _levels(plain), _levels(points)
    if levels is None:
        plain_levels = None
    kept = [g for g in plain_ids if len(np.unique(px[pruns != g])) >= 2]
    lv_g = (np.array([plain_levels[pruns == g][0] for g in kept], float) if plain_levels is not None
            else None)  # fmt: skip
    model = run_variance(np.array(e_g), lv_g) if e_g else None
    lo_x, hi_x = line["ft_loss_range"]
    out = []
    for label in sorted(set(labels), key=lambda lab: (lab[0], lab[1])):
        idx = np.flatnonzero([lab == label for lab in labels])
        kind = label[0]
        row: dict[str, Any] = {"mitigation": kind, "strength": float(label[1]), "n_points": int(idx.size),
                               "n_plain_runs": G, "n_outside": int(np.sum((x[idx] < lo_x) | (x[idx] > hi_x))),
                               "conditional_on": CONDITIONAL_ON}
        if kind in POST_HOC:
            row.update(_paired(line, loo, x[idx], y[idx], runs[idx], steps[idx], px, py, pruns, psteps))
        else:
            row.update(_unpaired(line, loo, model, x[idx], y[idx], runs[idx],
                                   None if levels is None else levels[idx]))
        lo, hi = row["lo"], row["hi"]
        if row.get("reason") is None:
            row["verdict"] = "beats_line" if hi < 0 else "worse" if lo > 0 else "on_line"
        else:
            row["verdict"] = "undecided"
        out.append(row)
    return out


def _levels(cols: Mapping[str, Array]) -> Array | None:
    """Each point's level, P (or rank): run variance is modelled on it. None when not given."""
    for key in ("P", "rank"):
        if key in cols and cols[key] is not None:
            v = np.asarray(cols[key], float)
            if v.size and np.all(np.isfinite(v)) and np.all(v > 0):
                return v
    return None


def _line_var(loo: list[dict[str, Any]], delta: Any) -> float:
    """Jackknife variance over leave-one-plain-run-out lines of ``delta(line)``."""
    if len(loo) < 2:
        return 0.0
    v = np.array([delta(ln) for ln in loo])
    return float((len(v) - 1) / len(v) * np.sum((v - v.mean()) ** 2))


def run_variance(e: Array, levels: Array | None) -> dict[str, Any]:
    """Variance of a new plain run's mean residual as a function of its level (P or rank).

    ``e``: the plain runs' leave-one-run-out mean residuals; ``levels``: each run's P (None: unknown).
    Modelled as ``log s²(L) = γ0 + γ1 (log L - mean)`` by maximum likelihood (``e_g ~ N(0, s²(L_g))``)
    when there are 4 or more runs at 3 or more levels; otherwise equal for every run. The estimates'
    covariance is the inverse expected information, ``2 (ZᵀZ)⁻¹``, which does not depend on them.

    Example:
        >>> m = run_variance(np.array([0.1, -0.1, 0.1, -0.1]), None)
        >>> round(float(m["s2"](np.array([1.0]))[0]), 6), m["slope"]
        (0.01, None)
    """
    e = np.asarray(e, float)
    ok = levels is not None and np.all(np.asarray(levels, float) > 0)
    ell = np.log(np.asarray(levels, float)) if ok else np.zeros(e.size)
    center = float(ell.mean())
    slope = bool(ok and e.size >= 4 and len(np.unique(np.round(ell, 9))) >= 3)
    z = np.column_stack([np.ones(e.size), ell - center]) if slope else np.ones((e.size, 1))
    gamma = np.array([math.log(max(float(np.mean(e**2)), 1e-300))] + ([0.0] if slope else []))
    p_slope = None
    if slope:
        def nll(g: Array) -> float:
            lv = z @ g
            return float(0.5 * np.sum(lv + e**2 * np.exp(-lv)))

        res = optimize.minimize(nll, gamma, method="BFGS")
        p_slope = float(stats.chi2.sf(max(2 * (nll(gamma) - res.fun), 0.0), 1))
        gamma = res.x
    cov = 2 * np.linalg.inv(z.T @ z)

    def zrow(lv: Array) -> Array:
        lv = np.atleast_1d(np.asarray(lv, float))
        return (np.column_stack([np.ones(lv.size), np.log(lv) - center]) if slope
                else np.ones((lv.size, 1)))  # fmt: skip

    if not ok:
        model = "equal for every plain run (no rank or P given for the runs)"
    elif slope:
        model = (f"log run variance linear in log P, fitted to {e.size} plain runs (slope {gamma[1]:.3g}; test of "
                 f"equal variance p = {p_slope:.3g}, used either way)")
    else:
        model = f"equal for every plain run: {e.size} runs at too few levels to model how it changes with P"
    return {"s2": lambda lv: np.exp(zrow(lv) @ gamma), "z": zrow, "gamma": gamma, "cov": cov, "slope": p_slope,
            "model": model, "by_level": bool(ok)}


def _unpaired(line: dict[str, Any], loo: list[dict[str, Any]], model: dict[str, Any] | None, x: Array, y: Array,
              runs: Array, levels: Array | None) -> dict[str, Any]:
    """A trained level against a prediction interval for as many new plain runs at its ft_loss and P."""
    k, G = len(np.unique(runs)), len(loo)
    est = float(_run_means(residuals(line, x, y), runs).mean())
    test = (f"mean run residual vs a prediction interval for {k} new plain run(s) at the level's own P: "
            "t(df) x sqrt(mean s2(P_run)/k + v), s2(P) the plain runs' leave-one-run-out residual variance "
            "at P, v the line's jackknife variance, df Satterthwaite's")
    res: dict[str, Any] = {"residual": est, "lo": None, "hi": None, "n_runs": k, "test": test, "reason": None,
                           "variance": model["model"] if model else None, "df": None}
    if G < MIN_PLAIN_RUNS:
        res["reason"] = f"{G} plain runs: too few to calibrate a prediction interval (needs {MIN_PLAIN_RUNS})"
    elif k < MIN_LEVEL_RUNS:
        res["reason"] = (f"{k} run at this level: its own run-to-run variation is unknown, so one run cannot be told "
                         "from a plain run's spread (needs 2)")  # fmt: skip
    if res["reason"] or model is None:
        return res
    xbar = float(x.mean())
    v = _line_var(loo, lambda ln: ln["s_fft"] - ln["c_fft"] * xbar)
    ids = np.unique(runs)
    lv = (np.array([levels[runs == g][0] for g in ids], float) if levels is not None and model["by_level"]
          else np.ones(k))  # fmt: skip
    s2 = model["s2"](lv)
    part = float(np.sum(s2)) / k**2
    grad = (model["z"](lv) * s2[:, None]).sum(0) / k**2  # d part / d gamma
    var_part = float(grad @ model["cov"] @ grad)
    var_v = 2 * v**2 / max(G - 1, 1)
    total = part + v
    df = float(np.clip(total**2 / (var_part + var_v), 1.0, 1e6)) if var_part + var_v > 0 else float(G - 1)
    own = _run_means(residuals(line, x, y), runs)
    res.update(df=df, own_run_sd=float(own.std(ddof=1)), model_run_sd=float(np.sqrt(np.mean(s2))))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * math.sqrt(total)
    res.update(lo=est - half, hi=est + half)
    return res


def _paired(line: dict[str, Any], loo: list[dict[str, Any]], x: Array, y: Array, runs: Array, steps: Array,
            px: Array, py: Array, pruns: Array, psteps: Array) -> dict[str, Any]:
    """A post-hoc level: each run's residual difference against its own scale-1 points at the same steps."""
    base = {(r, s): (fx, fy) for r, s, fx, fy in zip(pruns, psteps, px, py, strict=True)}
    pairs = [(i, base[(runs[i], steps[i])]) for i in range(x.size) if (runs[i], steps[i]) in base]
    res: dict[str, Any] = {"residual": None, "lo": None, "hi": None, "n_runs": 0, "reason": None,
                           "test": "paired within-run contrast with the run's scale-1 points at the same steps; mean "
                                   "over runs, t(k-1) interval over runs"}  # fmt: skip
    if not pairs:
        res["reason"] = "no scale-1 point of the same run and step to pair with"
        return res
    i = np.array([p[0] for p in pairs])
    bx, by = np.array([p[1][0] for p in pairs]), np.array([p[1][1] for p in pairs])

    def contrast(ln: dict[str, Any]) -> Array:
        return _run_means(residuals(ln, x[i], y[i]) - residuals(ln, bx, by), runs[i])

    d = contrast(line)
    k = d.size
    res.update(residual=float(d.mean()), n_runs=k)
    if np.array_equal(x[i], bx) and np.array_equal(y[i], by):
        res["reason"] = ("every run's points are its own: the method left each adapter unchanged (for intruders: "
                         "no intruder dimension found), so there is nothing to judge")  # fmt: skip
        return res
    if k < MIN_LEVEL_RUNS:
        res["reason"] = f"{k} run at this level: no spread over runs to judge the contrast by (needs 2)"
        return res
    v = _line_var(loo, lambda ln: contrast(ln).mean())
    half = float(stats.t.ppf(0.5 + LEVEL / 2, k - 1)) * float(np.sqrt(d.var(ddof=1) / k + v))
    res.update(lo=float(d.mean()) - half, hi=float(d.mean()) + half)
    return res
