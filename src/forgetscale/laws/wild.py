"""Small-sample inference over a few independent units: the wild-cluster restricted bootstrap.

A study has few independent units (4 runs in the default design), so pairs-cluster percentile
intervals under-cover (too few clusters for their percentiles). The wild-cluster restricted bootstrap
(WCR) imposes the null on the fit, flips each cluster's restricted residuals by one weight per cluster, and compares the
cluster-robust t statistic with its bootstrap distribution. With Webb's 6-point weights it keeps its
size at 4-6 clusters (MacKinnon & Webb 2017; 5.0% measured on simulated studies at G = 4). All 6^G weight
vectors are enumerated when G is small, otherwise :data:`N_DRAWS` are drawn. An interval is the set of
null values the test does not reject (test inversion, by bisection).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

Array = np.ndarray
WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
ENUMERATE_UP_TO = 5
"""Enumerate all 6^G Webb weight vectors for G <= 5 (7,776); draw at random beyond."""
N_DRAWS = 1000
MAX_SE, TOL_SE = 256.0, 0.02
"""An interval ends are searched up to 256 standard errors out, to 2% of a standard error."""


def webb_weights(n_clusters: int, rng: np.random.Generator) -> Array:
    """Webb 6-point weights, ``(D, G)``: every vector when G <= :data:`ENUMERATE_UP_TO`, else 1,000 draws.

    >>> webb_weights(2, np.random.default_rng(0)).shape
    (36, 2)
    """
    if n_clusters <= ENUMERATE_UP_TO:
        return np.array(list(itertools.product(WEBB, repeat=n_clusters)))
    return rng.choice(WEBB, size=(N_DRAWS, n_clusters))


@dataclass(frozen=True)
class WildTest:
    """A WCR test of one coefficient of a least-squares fit.

    Build it with :func:`wild_test`; call :meth:`pvalue` for a null value, :meth:`interval` for a level.
    """

    X: Array
    y: Array
    cluster: Array
    j: int
    weights: Array
    estimate: float
    se: float
    cell: Array | None = None
    """Second clustering (shocks shared across clusters, e.g. by runs of one data order at one step); None: one-way."""
    cell_weights: Array | None = None

    def pvalue(self, b0: float) -> float:
        """Two-sided WCR p-value of ``coefficient j == b0`` (symmetric: ``|t*| >= |t|``)."""
        X, j = self.X, self.j
        y0 = self.y - b0 * X[:, j]
        Xr = np.delete(X, j, axis=1)
        br = np.linalg.lstsq(Xr, y0, rcond=None)[0]
        fitted = Xr @ br
        resid = y0 - fitted
        if self.cell is None:
            ystar = fitted[:, None] + resid[:, None] * self.weights.T[self.cluster]  # (n, D)
        else:  # the cells' mean residual flipped by cell, the rest of each residual by cluster
            shared = (np.bincount(self.cell, resid) / np.bincount(self.cell))[self.cell]
            assert self.cell_weights is not None
            ystar = (fitted[:, None] + shared[:, None] * self.cell_weights.T[self.cell]
                     + (resid - shared)[:, None] * self.weights.T[self.cluster])  # fmt: skip
        t_star = _tstats(X, ystar, self.cluster, j, self.cell)
        t_obs = (self.estimate - b0) / self.se
        # ties within rounding count as reaching |t|: the p-value is never below its exact value
        return float(np.mean(np.abs(t_star) >= abs(t_obs) * (1 - 1e-9)))

    def interval(self, level: float) -> tuple[float | None, float | None]:
        """The ``level`` interval by test inversion: null values with p-value above ``1 - level``.

        With very few clusters the WCR p-value can stay above ``1 - level`` however far the null is moved
        (MacKinnon & Webb 2017): that side of the interval is unbounded and returned as None.
        """
        alpha = 1 - level
        step = self.se if np.isfinite(self.se) and self.se > 0 else 1.0

        def bound(sign: float) -> float | None:
            inside, out = self.estimate, self.estimate + sign * step
            while self.pvalue(out) > alpha:  # walk out, doubling, until rejected
                if abs(out - self.estimate) > MAX_SE * step:
                    return None
                inside, out = out, self.estimate + 2 * (out - self.estimate)
            while abs(out - inside) > TOL_SE * step:
                mid = 0.5 * (inside + out)
                inside, out = (mid, out) if self.pvalue(mid) > alpha else (inside, mid)
            return float(0.5 * (inside + out))

        return bound(-1.0), bound(1.0)


def _tstats(X: Array, Y: Array, cluster: Array, j: int, cell: Array | None = None) -> Array:
    """Cluster-robust (CR1) t statistics of coefficient j for every column of ``Y`` at once.

    With ``cell``, two-way (Cameron, Gelbach & Miller 2011): the variance clustered by ``cluster`` plus
    that clustered by ``cell`` less that of their intersection (here single points), or the larger of
    the two one-way variances where that difference is not positive.
    """
    xtx_inv = np.linalg.pinv(X.T @ X)
    a = (xtx_inv @ X.T)[j]  # coefficient j = a @ y
    beta = a @ Y
    E = Y - X @ (xtx_inv @ (X.T @ Y))
    n, k = X.shape

    def crv(labels: Array) -> Array:
        n_g = int(labels.max()) + 1
        scores = np.zeros((n_g, Y.shape[1]))
        np.add.at(scores, labels, a[:, None] * E)
        return n_g / max(n_g - 1, 1) * (n - 1) / max(n - k, 1) * np.sum(scores**2, axis=0)

    var = crv(cluster)
    if cell is not None:
        by_cell = crv(cell)
        var = np.where(var + by_cell - crv(np.arange(n)) > 0, var + by_cell - crv(np.arange(n)),
                       np.maximum(var, by_cell))  # fmt: skip
    se = np.sqrt(var)
    return beta / np.where(se > 0, se, np.inf)


def wild_test(X: Array, y: Array, cluster: Array, j: int, rng: np.random.Generator,
              cell: Array | None = None) -> WildTest:
    """The WCR test of coefficient ``j`` of ``y ~ X`` with clusters ``cluster``.

    With ``cell`` (a second grouping that cuts across the clusters: the runs of one data order at one
    step share that step's batch shock), the test is two-way. The t statistic uses the two-way
    cluster-robust variance, and each bootstrap draw flips the part of a restricted residual that its
    cell shares (the cell's mean residual) by one Webb weight per cell, and the rest by one weight per
    cluster. Each draw then carries both kinds of dependence, and neither is counted as independent.

    Args:
        X: design ``(n, k)``, full column rank (include the intercept).
        y: response ``(n,)``.
        cluster: cluster label per row (any hashable values): the independent units.
        j: the tested column.
        rng: draws the weights when there are too many clusters to enumerate (and the cells' weights).
        cell: optional second grouping (hashable labels per row), see above; None: one-way.

    Returns:
        A :class:`WildTest` with the OLS estimate and its CR1 standard error.

    Example:
        >>> rng = np.random.default_rng(0); g = np.repeat(np.arange(5), 4); x = np.tile([0.0, 1, 2, 3], 5)
        >>> y = 1 + 0.5 * x + 0.1 * rng.standard_normal(20) + np.repeat(rng.standard_normal(5), 4) * 0.1
        >>> t = wild_test(np.column_stack([np.ones(20), x]), y, g, 1, rng)
        >>> lo, hi = t.interval(0.95); bool(lo < t.estimate < hi), t.pvalue(0.0) < 0.01, round(t.estimate, 3)
        (True, True, 0.536)
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    _, cl = np.unique(np.asarray(cluster), return_inverse=True)
    cells = None if cell is None else np.unique(np.asarray(cell), return_inverse=True)[1]
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    t1 = _tstats(X, y[:, None], cl, j, cells)[0]
    se = float(abs(beta[j] / t1)) if t1 != 0 else float(np.inf)
    weights = webb_weights(int(cl.max()) + 1, rng)
    cell_weights = None if cells is None else rng.choice(WEBB, size=(len(weights), int(cells.max()) + 1))
    return WildTest(X, y, cl, j, weights, float(beta[j]), se, cells, cell_weights)


def natural_spline(x: Array, knots: Array) -> Array:
    """Natural cubic spline basis without intercept: ``len(knots) - 1`` columns, the first is ``x``.

    Linear beyond the boundary knots (ESL, eq. 5.4-5.5).

    >>> natural_spline(np.linspace(0, 1, 5), np.array([0.0, 1/3, 2/3, 1.0])).shape
    (5, 3)
    """
    x, k = np.asarray(x, float), np.asarray(knots, float)

    def d(i: int) -> Array:
        return (np.maximum(x - k[i], 0) ** 3 - np.maximum(x - k[-1], 0) ** 3) / (k[-1] - k[i])

    return np.column_stack([x, *(d(i) - d(len(k) - 2) for i in range(len(k) - 2))])
