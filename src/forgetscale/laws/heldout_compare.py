"""Two models compared by how well they predict runs they did not see: F1, F2/F3 and F6 share this.

A finding that says "this law describes the runs" or "this predictor beats that one" is judged here by
the error of predicting a run left out, never by in-sample fit (R² rewards fitting the same runs and
says nothing of a new one). The machinery:

- **leave one run out** (:func:`heldout_errors`): for each run, both models are fitted by least squares
  to the other runs and predict the left-out run's points; the run's error is their root mean square.
  Runs are the independent units. A model is a :data:`Design`: a function that places its knots from
  the training rows and returns its columns at any rows, so a spline's knots never see the run it
  predicts;
- **a paired statistic over runs** (:func:`margin_test`): ``d = factor x e_ref - e_new`` per run, with
  ``factor`` carrying a relative margin stated in advance (``1 - m`` when the new model must beat the
  reference by m; ``1 + m`` when it must be no worse than the reference by more than m). Its mean gets
  a t interval on G - 1 degrees of freedom over the G runs, with the variance of Nadeau and Bengio (2003)
  for cross-validated errors, ``(1/G + n_test/n_train) s^2`` instead of ``s^2 / G``: the folds share
  G - 2 of their training runs and runs share data orders, so the runs' errors are positively
  correlated and ``s^2 / G`` is too small (F6 measured the plain t test at 13% where it claims 5%).
  ``n_test/n_train`` is the folds' mean of held-out over training points (``1/(G - 1)`` for equal runs).
  The df are Satterthwaite's for runs of unequal variance (:func:`unequal_runs_df`), not G - 1: a run's
  statistic is a difference of RMS errors over its n points, and an RMS error's sd is about ``e / sqrt(2n)``,
  so its variance scales as ``(factor^2 e_ref^2 + e_new^2) / n``. Runs whose errors differ in size (F6's top
  rank: 2-3x the sd of the middle ranks') leave ``s^2`` resting on fewer effective runs, and the t on G - 1 df
  had tails too heavy: at F6's margin it said supported in 5.9% of 4000 studies with one data order and 5.8%
  with two although the variance was large enough on average; on these df 4.9% and 4.75%. Equal errors give
  G - 1 df, and never more;
- **clustered on data orders** (``orders`` given, for a comparison whose flexible model can follow what
  the runs of one order share): runs of one data order see the same batches, so they share step shocks,
  a path over the evaluation steps. A model flexible *in N* learns that path from the left-out run's
  order-mates, and its held-out error falls (or rises) for every run of the order together: the per-run
  statistics of one order are correlated, beyond the fold overlap that Nadeau-Bengio models, and with 2
  orders that correlation cannot be estimated (one between-order contrast). The mean's variance is then
  taken over orders, as a cluster-robust (CR1) variance of a mean, ``k/(k-1) sum_o (sum_{i in o}
  (d_i - mean d))^2 / G^2`` over the k orders, plus the fold-overlap term ``(n_test/n_train) s_w^2`` on
  the within-order variance ``s_w^2``, and the t interval has ``k - 1`` df: for equal orders it is the t
  interval of the k orders' mean statistics, exact for normal order means whatever the runs of an order
  share. With one run per order it is the Nadeau-Bengio interval; with one order, nothing varies between
  orders, and the interval is the Nadeau-Bengio one (F6's size at its margin with one order is measured over
  studies, each with its own order's shocks: ``tests/sim/test_sim_margins.py``). Measured on F3's form test
  (two orders, truth at its margin, 400 simulated studies, before the df above): Nadeau-Bengio said adequate
  in 21%; a variance from the runs' within- and between-order mean squares (the design
  effect ``1 + (m - 1) rho``, rho from pairs of runs sharing an order, clipped at 0) in 9% with
  Satterthwaite's df and 7% even on k - 1 df: with 2 orders, rho's estimate has 1 df and misses the
  shared part whenever the two orders happen to agree. Clustering on orders: 0.75%;
- **two one-sided 5% tests**: the 90% interval of the mean ``d`` above 0 rejects "mean d <= 0", below 0
  rejects "mean d >= 0" (:func:`side`).

Example: a line predicts held-out runs of a linear truth better than a spline does.

    >>> rng = np.random.default_rng(0)
    >>> runs = np.repeat([f"r{i}" for i in range(8)], 5); x = np.tile(np.linspace(1, 2, 5), 8) + 0.1 * (runs == "r3")
    >>> y = 0.3 * x + np.repeat(rng.normal(0, 0.02, 8), 5) + rng.normal(0, 0.01, 40)
    >>> e_lin = heldout_errors(y, runs, linear_in(x)); e_spl = heldout_errors(y, runs, spline_in(x))
    >>> side(margin_test(e_spl, e_lin, 1.1, runs))
    'above'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from forgetscale.laws.wild import natural_spline

LEVEL = 0.95
"""The level of the intervals reported."""
ALPHA = 0.05
"""Each verdict is a one-sided test at this level: the ends of the ``1 - 2 ALPHA`` (90%) interval."""

Design = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``design(train, rows)``: the model's columns at ``rows`` (a boolean mask), knots placed from the ``train`` rows."""


def curve_design(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``[1, spline3(x)]``, or ``[1, x]`` when the knots are not distinct (too few distinct values).

    >>> curve_design(np.linspace(0, 1, 4), np.array([0.0, 1 / 3, 2 / 3, 1.0])).shape
    (4, 4)
    >>> curve_design(np.ones(3), np.ones(4)).shape
    (3, 2)
    """
    if np.all(np.diff(knots) > 0):
        return np.column_stack([np.ones(x.size), natural_spline(x, knots)])
    return np.column_stack([np.ones(x.size), x])


def spline_in(x: np.ndarray) -> Design:
    """F6's flexible curve: ``[1, spline3(x)]``, knots at the training points' quartiles-by-thirds of ``x``."""
    def design(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return curve_design(x[rows], np.quantile(x[train], [0, 1 / 3, 2 / 3, 1]))

    return design


def linear_in(x: np.ndarray) -> Design:
    """``[1, x]``: a line in ``x``."""
    return lambda train, rows: np.column_stack([np.ones(int(np.sum(rows))), x[rows]])


def spline_knots(values: np.ndarray, df: int = 3) -> np.ndarray | None:
    """Knots of a natural spline of up to ``df`` degrees of freedom at the quantiles of the *distinct* values.

    A variable that takes few values (ranks, evaluation steps) gets one knot per value when it has at
    most ``df + 1`` of them (the spline then passes through one level per value: per-rank levels),
    evenly spaced quantiles of them otherwise. None when fewer than 3 distinct values (no curve beyond a line).

    >>> spline_knots(np.array([1.0, 4, 16, 64, 1, 4])).tolist()  # four ranks: a knot at each
    [1.0, 4.0, 16.0, 64.0]
    >>> spline_knots(np.array([8.0, 16, 32])).tolist(), spline_knots(np.array([1.0, 2.0]))
    ([8.0, 16.0, 32.0], None)
    """
    u = np.unique(values)
    if u.size < 3:
        return None
    return np.quantile(u, np.linspace(0, 1, min(df + 1, u.size)))


def partial_spline(x: np.ndarray, others: Sequence[np.ndarray], df: int = 3) -> Design:
    """``[1, spline(x), *others]``: a curve of up to ``df`` df in ``x`` beside linear terms (:func:`spline_knots`).

    Raises ``ValueError`` in a fold whose training rows have fewer than 3 distinct values of ``x``.
    """
    def design(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
        knots = spline_knots(x[train], df)
        if knots is None:
            raise ValueError("fewer than 3 distinct values to fit a curve to")
        return np.column_stack([np.ones(int(np.sum(rows))), natural_spline(x[rows], knots),
                                *(o[rows] for o in others)])  # fmt: skip

    return design


def linear_terms(*xs: np.ndarray) -> Design:
    """``[1, *xs]``: a model linear in each of ``xs``."""
    return lambda train, rows: np.column_stack([np.ones(int(np.sum(rows))), *(x[rows] for x in xs)])


def heldout_errors(y: np.ndarray, runs: np.ndarray, design: Design) -> dict[str, float]:
    """Each run's held-out RMS error when ``y`` is predicted by ``design`` fitted (least squares) to the other runs.

    Below, run b lies 0.3 above the line and c 0.3 below it: left out, each is predicted from a and the
    other, whose mean is 0.15 on the other side, so its error is 0.45.

    >>> runs = np.repeat(["a", "b", "c"], 4); x = np.tile([1.0, 2, 3, 4], 3)
    >>> e = heldout_errors(2 * x + np.repeat([0.0, 0.3, -0.3], 4), runs, linear_in(x))
    >>> {k: round(v, 6) for k, v in e.items()}
    {'a': 0.0, 'b': 0.45, 'c': 0.45}
    """
    out = {}
    for g in np.unique(runs):
        test = runs == g
        train = ~test
        beta = np.linalg.lstsq(design(train, train), y[train], rcond=None)[0]
        out[str(g)] = float(np.sqrt(np.mean((y[test] - design(train, test) @ beta) ** 2)))
    return out


def loro_errors(x: np.ndarray, y: np.ndarray, runs: np.ndarray) -> dict[str, float]:
    """F6's errors: each run's held-out RMS error of ``y`` from F6's spline in ``x`` (:func:`spline_in`).

    >>> runs = np.repeat(["a", "b", "c"], 4); x = np.tile([1.0, 2, 3, 4], 3)
    >>> e = loro_errors(x, 2 * x + np.repeat([0.0, 0.3, -0.3], 4), runs)
    >>> {k: round(v, 6) for k, v in e.items()}
    {'a': 0.0, 'b': 0.45, 'c': 0.45}
    """
    return heldout_errors(y, runs, spline_in(x))


def t_interval(d: np.ndarray, level: float = LEVEL, test_over_train: float = 0.0,
               df: float | None = None) -> dict[str, float]:  # fmt: skip
    """Mean of ``d`` with its ``level`` t interval on ``df`` degrees of freedom (``len(d) - 1`` when None).

    ``test_over_train`` > 0: ``d`` are cross-validated, one per fold, and the variance of the mean is
    Nadeau and Bengio's ``(1/n + test_over_train) s^2`` instead of ``s^2 / n``.

    >>> {k: round(v, 4) for k, v in t_interval(np.array([1.0, 2.0, 3.0])).items()}
    {'value': 2.0, 'lo': -0.4841, 'hi': 4.4841}
    >>> round(t_interval(np.array([1.0, 2.0, 3.0]), test_over_train=0.5)["hi"] - 2, 4)  # 2.4841 sqrt(5/2)
    3.9278
    """
    n = d.size
    se = float(np.std(d, ddof=1) * math.sqrt(1 / n + test_over_train))
    q = float(stats.t.ppf(0.5 + level / 2, n - 1 if df is None else df))
    m = float(np.mean(d))
    return {"value": m, "lo": m - q * se, "hi": m + q * se}


def unequal_runs_df(v: np.ndarray) -> float:
    """Satterthwaite's df of the sample variance of independent values whose variances are proportional to ``v``.

    ``(G-1) s^2`` is then a weighted sum of chi-square(1) variables, with weights the eigenvalues of ``M V``
    (``M`` the centring matrix, ``V = diag(v)``); matching its first two moments gives
    ``tr(MV)^2 / tr((MV)^2) = ((1 - 1/G) sum v)^2 / ((1 - 2/G) sum v^2 + (sum v)^2 / G^2)``: ``G - 1`` for
    equal variances, falling towards 1 as one value's variance dominates (``s^2`` then rests on that value
    alone). Only the ratios of ``v`` matter.

    >>> unequal_runs_df(np.ones(4)), round(unequal_runs_df(np.array([1.0, 1.0, 1.0, 9.0])), 3)
    (3.0, 1.588)
    """
    v = np.asarray(v, float)
    g, tot = v.size, float(np.sum(v))
    return (1 - 1 / g) ** 2 * tot**2 / ((1 - 2 / g) * float(np.sum(v**2)) + tot**2 / g**2)


def cv_ratio(runs: np.ndarray, order: Sequence[str]) -> float:
    """The folds' mean of held-out over training points, Nadeau and Bengio's ``n_test/n_train``.

    >>> cv_ratio(np.repeat(["a", "b", "c", "d"], 3), ["a", "b", "c", "d"])  # 1 / (G - 1)
    0.3333333333333333
    """
    n_pts = np.array([np.sum(runs == g) for g in order], float)
    return float(np.mean(n_pts / (n_pts.sum() - n_pts)))


def order_clustered_variance(d: np.ndarray, orders: np.ndarray, test_over_train: float) -> tuple[float, int]:
    """``(variance of mean d, df)`` with the runs clustered on their data orders (see the module docstring).

    ``k/(k-1) sum_o (sum_{i in o} (d_i - mean d))^2 / G^2 + test_over_train x s_w^2`` on ``k - 1`` df,
    ``s_w^2`` the pooled within-order variance (``s^2`` when no order has 2 runs). Needs 2+ orders.

    Two orders of two runs: order means 1.5 and 3.5, so the CR1 part is 2 x (1 + 1) / 4 = 1, and s_w^2 = 0.5.

    >>> order_clustered_variance(np.array([1.0, 2.0, 3.0, 4.0]), np.array(["x", "x", "y", "y"]), 0.5)
    (1.25, 1)
    >>> v = order_clustered_variance(np.array([1.0, 2.0, 3.0]), np.array(["a", "b", "c"]), 0.5)  # one run each
    >>> round(v[0], 6) == round(float(np.var([1.0, 2, 3], ddof=1)) * (1 / 3 + 0.5), 6), v[1]  # Nadeau-Bengio
    (True, 2)
    """
    labels, idx = np.unique(orders, return_inverse=True)
    k, g = labels.size, d.size
    if k < 2:
        raise ValueError("clustering on data orders needs 2+ orders")
    dev = d - d.mean()
    between = k / (k - 1) * float(np.sum(np.bincount(idx, dev) ** 2)) / g**2
    if g > k:
        means = np.bincount(idx, d) / np.bincount(idx)
        within = float(np.sum((d - means[idx]) ** 2)) / (g - k)
    else:
        within = float(np.var(d, ddof=1))
    return between + test_over_train * within, k - 1


def _interval(m: float, var: float, df: int, level: float) -> dict[str, float]:
    q = float(stats.t.ppf(0.5 + level / 2, df))
    return {"value": m, "lo": m - q * math.sqrt(var), "hi": m + q * math.sqrt(var)}


def margin_test(e_ref: Mapping[str, float], e_new: Mapping[str, float], factor: float,
                runs: np.ndarray, orders: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The paired statistic ``factor x e_ref - e_new`` over runs, with its intervals (see the module docstring).

    Args:
        e_ref, e_new: each run's held-out error under the reference and the new model (same runs).
        factor: ``1 - m`` (the new model must beat the reference by the margin m) or ``1 + m`` (it may be worse
            by up to m).
        runs: each point's run (for the folds' sizes).
        orders: each run's data order: the mean's variance is clustered on them (2+ orders). None: the
            Nadeau-Bengio variance over runs.

    Returns:
        ``statistic`` (mean with 95% ``lo``/``hi`` and 90% ``lo90``/``hi90``), ``error_difference``
        (``e_ref - e_new``, mean and 95% interval, and relative to the reference's mean error), ``variance``
        (its method, df, the Nadeau-Bengio ratio and the inflation of ``s^2/G``) and the per-run arrays
        ``e_ref``, ``e_new``.
    """
    order = list(e_ref)
    a, b = np.array([e_ref[g] for g in order]), np.array([e_new[g] for g in order])
    ratio = cv_ratio(runs, order)
    d = factor * a - b
    labels = np.array([str(orders[g]) for g in order]) if orders is not None else None
    if labels is not None and np.unique(labels).size >= 2:
        (vd, df), (vs, _) = (order_clustered_variance(x, labels, ratio) for x in (a - b, d))
        cases = ((a - b, vd, LEVEL), (d, vs, LEVEL), (d, vs, 1 - 2 * ALPHA))
        diff, stat, one_sided = (_interval(float(np.mean(x)), v, df, lev) for x, v, lev in cases)
        s2 = float(np.var(d, ddof=1))
        variance = {"method": "clustered on data orders", "df": df, "n_orders": df + 1, "test_over_train": ratio,
                    "inflation": vs / (s2 / d.size) if s2 > 0 else None,
                    "why": "runs of one data order share step shocks, which a model flexible in N learns from a "
                           "run's order-mates, so their held-out errors move together: the mean's variance is "
                           "taken over orders (CR1, k - 1 df) plus the folds' overlap (Nadeau-Bengio)"}  # fmt: skip
    else:
        # each run's statistic is a difference of RMS errors over its n points, whose sd is about e/sqrt(2n):
        # its variance scales with the errors' squares (see the module docstring)
        n_pts = np.array([np.sum(runs == g) for g in order], float)
        df_diff, df = (unequal_runs_df((f**2 * a**2 + b**2) / n_pts) for f in (1.0, factor))
        diff = t_interval(a - b, test_over_train=ratio, df=df_diff)
        stat, one_sided = t_interval(d, test_over_train=ratio, df=df), t_interval(d, 1 - 2 * ALPHA, ratio, df)
        variance = {"method": "Nadeau-Bengio", "df": df, "test_over_train": ratio,
                    "inflation": 1 + len(order) * ratio,
                    "why": "the folds share training runs and runs share data orders, so the runs' errors are "
                           "positively correlated and s^2/G is too small; runs whose errors differ in size carry "
                           "unequal variances, so s^2 rests on fewer than G - 1 df (Satterthwaite's)"}  # fmt: skip
    return {"statistic": {**stat, "lo90": one_sided["lo"], "hi90": one_sided["hi"]},
            "error_difference": {**diff, "relative": diff["value"] / float(np.mean(a)) if np.mean(a) > 0 else None},
            "variance": variance, "e_ref": a, "e_new": b}  # fmt: skip


def side(test: Mapping[str, Any]) -> str:
    """``above`` (a one-sided 5% test rejects mean d <= 0), ``below`` (one rejects mean d >= 0) or ``inside``."""
    s = test["statistic"]
    return "above" if s["lo90"] > 0 else "below" if s["hi90"] < 0 else "inside"
