"""Variance components of a new run's log error, by REML on the linearised fit.

A point's log error is ``u_run + v_cell + e``: a run effect, a step shock shared by the runs of one
data order at one step (only when runs share orders) and point noise. The run effect's variance may
change with the run's level ``L`` (its P: the default study's largest rank is its least stable): it
is modelled as ``log τ²(L) = γ0 + γ1 (log L - mean log L)``.

Estimation. Restricted maximum likelihood (Patterson and Thompson 1971) on the residuals of the
linearised fit: the residuals are projected on the complement of the fitted law's columns, so that
what the law absorbs (a level and a slope across runs) is not read as variance. With ``G`` runs and
``k_run`` law directions that vary across runs, the runs leave ``G - k_run`` degrees of freedom for
their variance. The slope ``γ1`` is estimated when they are at least :data:`MIN_SLOPE_DF` (two per
run-variance parameter) and the runs sit at 3 or more levels; otherwise run variance is taken as
equal across levels, and the output says that it is an assumption. Whether the slope is needed is a
likelihood-ratio test (χ² with 1 df), reported either way; the slope is used whenever it can be
estimated, since choosing it only when a 4-to-8-run test detects it would leave a growing variance
unmodelled in most studies.

Uncertainty. A prediction interval averages the normal of a new run's log error over the run
variance's parameters ``(γ0, γ1)``, weighted by their REML likelihood with the step-shock and point
variances at their estimates (a flat prior on the log variance's intercept and slope:
:meth:`Components.half_width`). Why not a t on Satterthwaite's df, ``2 V² / Var(V̂)`` with ``Var(V̂)``
from the REML information (:meth:`Components.df`, still used for a store written before): a few runs
read their variance's slope poorly, and worse than the information says. With about one df per level,
a level's log variance has the skewed sampling law of a ``log χ²₁`` (sd 2.2 where the curvature of its
likelihood gives 1.4), so eight runs give a slope whose sampling sd is about twice its information se.
A slope read below 0 then makes the variance extrapolated 4x beyond the largest level many times too
small, and its absolute delta-method variance small too, so the df stays high exactly where the interval
is too narrow. The likelihood itself keeps the long upper tail that a few runs leave, and averaging over
it is, for one level and a flat prior on log τ², what gives the t interval its width. A component that
is held fixed (the fitted mean's variance, the misfit) can only widen the average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy import optimize, special, stats

Array = np.ndarray
MIN_SLOPE_DF = 4
MIN_LEVELS = 3
_FLOOR = -25.0  # log-variance floor: a component at e^-25 is absent
GRID_GAMMA0 = np.arange(-8.0, 8.0 + 1e-9, 0.2)
"""Offsets of the log run variance at the centre from its REML estimate, over which intervals average. With ν run
df the likelihood at +8 is about e^(-3.5 ν) of its peak (e^-21 with 6 df); with 2 df the flat prior leaves a few
1e-4 of the mass beyond it, too little to move a 95% quantile. Below -8 the run variance is negligible."""
GRID_GAMMA1 = np.arange(-6.0, 6.0 + 1e-9, 0.1)
"""Slopes of the log run variance in log level over which intervals average: REML's own bounds."""
_BIN = 0.05  # log-variance resolution of the averaged interval (5% in variance)
MAX_GRID_RUNS = 64
"""More runs and intervals use Satterthwaite's t (:meth:`Components.df`): with 16 or more runs per level a
level's log variance is near normal and the information reads its sd well, and a grid of ``G x G``
likelihoods would cost ``G³`` per point."""


@dataclass(frozen=True)
class Components:
    """REML estimates. ``phi``: log σ²_w, [log σ²_step], γ0, [γ1]; ``cov``: their covariance."""

    phi: Array
    cov: Array
    names: tuple[str, ...]
    center: float
    slope_fitted: bool
    slope_p: float | None
    df_run: int
    nll: float
    lik: tuple[Array, Array, Array] | None = None
    """``(M, b, ℓ)``: what the REML likelihood of the run variance needs, with the step-shock and point
    variances ``A`` at their estimates: ``M = Zᵀ A⁻¹ Z``, ``b = Zᵀ A⁻¹ r`` and the runs' centred log levels.
    None (a store written before): intervals use Satterthwaite's t (:meth:`df`)."""

    def get(self, name: str, phi: Array | None = None) -> float:
        p = self.phi if phi is None else phi
        return float(p[self.names.index(name)]) if name in self.names else (_FLOOR if name != "gamma1" else 0.0)

    def tau2(self, level: Array | float, phi: Array | None = None) -> Array:
        """Run-effect variance at ``level`` (NaN or non-positive levels: the centre)."""
        ell = np.log(np.asarray(level, float)) - self.center
        ell = np.where(np.isfinite(ell), ell, 0.0)
        return np.exp(self.get("gamma0", phi) + self.get("gamma1", phi) * ell)

    def total(self, level: Array | float, extra: Array | float = 0.0, phi: Array | None = None) -> Array:
        """A new run's log-error variance at ``level``: run + step shock + point noise + ``extra``."""
        return (self.tau2(level, phi) + math.exp(self.get("log_step2", phi)) + math.exp(self.get("log_within2", phi))
                + extra)  # fmt: skip

    def df(self, level: Array | float, extra: Array | float = 0.0) -> Array:
        """Satterthwaite df of :meth:`total`: ``2 V² / (∇Vᵀ C ∇V)`` (``extra`` held fixed)."""
        level = np.atleast_1d(np.asarray(level, float))
        extra = np.broadcast_to(np.asarray(extra, float), level.shape)
        v0 = self.total(level, extra)
        grad = np.empty((self.phi.size, level.size))
        with np.errstate(all="ignore"):  # an infinite extra (no mean variance there): infinite interval
            for j in range(self.phi.size):
                h = 1e-4
                up, dn = self.phi.copy(), self.phi.copy()
                up[j] += h
                dn[j] -= h
                grad[j] = (self.total(level, extra, up) - self.total(level, extra, dn)) / (2 * h)
            var = np.einsum("jn,jk,kn->n", grad, self.cov, grad)
            out = 2 * v0**2 / var
        return np.where(np.isfinite(out) & (out > 0), np.clip(out, 1.0, 1e6), 1e6)

    @cached_property
    def grid(self) -> Array | None:
        """``(K, 3)``: ``γ0``, ``γ1``, weight: the run variance's parameters on a grid, weighted by their REML
        likelihood (a flat prior; ``γ1`` is 0 where the slope is not fitted). None without :attr:`lik`, or
        with more than :data:`MAX_GRID_RUNS` runs."""
        if self.lik is None or self.lik[2].size > MAX_GRID_RUNS:
            return None
        mm, b, ell = (np.ascontiguousarray(v, dtype=float) for v in self.lik)
        # a store's components are rebuilt at every prediction: the grid is cached on what it depends on
        return _grid(mm.tobytes(), b.tobytes(), ell.tobytes(), self.get("gamma0"), self.slope_fitted)

    def half_width(self, level: Array | float, extra: Array | float = 0.0, level_pi: float = 0.95) -> Array:
        """Half-width of the central ``level_pi`` interval of a new run's log error at ``level``, ``extra`` added
        to its variance (the fitted mean's variance, the misfit): the normal of :meth:`total` averaged over
        :attr:`grid` (its quantile by bisection), or ``t_df · sqrt(total)`` without one. NaN where the
        total is negative, infinite where ``extra`` is.

        Example:
            >>> c = Components(np.array([-6.0, -4.0]), np.zeros((2, 2)), ("log_within2", "gamma0"), 0.0, False,
            ...                None, 6, 0.0)
            >>> bool(np.isclose(c.half_width(1.0)[0], stats.t.ppf(0.975, 1e6) * np.sqrt(np.exp(-6) + np.exp(-4))))
            True
        """
        level = np.atleast_1d(np.asarray(level, float))
        extra = np.broadcast_to(np.asarray(extra, float), level.shape)
        if self.grid is None:
            with np.errstate(invalid="ignore"):
                return stats.t.ppf(0.5 + level_pi / 2, self.df(level, extra)) * np.sqrt(self.total(level, extra))
        g0, g1, w = self.grid.T
        ell = np.log(level) - self.center
        ell = np.where(np.isfinite(ell), ell, 0.0)
        fixed = math.exp(self.get("log_step2")) + math.exp(self.get("log_within2")) + extra
        out = np.full(level.shape, np.nan)
        out[np.isinf(extra)] = np.inf
        z = stats.norm.ppf(0.5 + level_pi / 2)
        for e in np.unique(ell):
            # the mixture at one level is over log τ²(ℓ) alone: binned, it has a few hundred components
            at = (ell == e) & np.isfinite(extra)
            key, inv = np.unique(np.round((g0 + g1 * e) / _BIN), return_inverse=True)
            wk = np.bincount(inv, weights=w)
            with np.errstate(invalid="ignore"):
                sd = np.sqrt(np.exp(key[:, None] * _BIN) + fixed[None, at])
            ok = np.all(np.isfinite(sd), axis=0)
            sd = np.where(np.isfinite(sd), sd, 1.0)
            # the mixture's |error| quantile lies between its narrowest and widest component's
            lo, hi = z * sd.min(0), z * sd.max(0)
            for _ in range(50):  # 50 halvings leave ~1e-15 of the bracket, which spans at most ~e^15 sds
                mid = 0.5 * (lo + hi)
                short = wk @ (2 * special.ndtr(mid[None, :] / sd) - 1) < level_pi
                lo, hi = np.where(short, mid, lo), np.where(short, hi, mid)
            out[at] = np.where(ok, 0.5 * (lo + hi), np.nan)
        return out


@lru_cache(maxsize=32)
def _grid(mm_b: bytes, b_b: bytes, ell_b: bytes, gamma0: float, slope: bool) -> Array:
    """:attr:`Components.grid` from the likelihood's terms (as bytes, to be hashable)."""
    ell, b = np.frombuffer(ell_b), np.frombuffer(b_b)
    mm = np.frombuffer(mm_b).reshape(ell.size, ell.size)
    g0, g1 = np.meshgrid(gamma0 + GRID_GAMMA0, GRID_GAMMA1 if slope else np.zeros(1), indexing="ij")
    g0, g1 = g0.ravel(), g1.ravel()
    # Σ = A + Z D Zᵀ, D = diag τ²(ℓ): by the determinant lemma and Woodbury, with S = I + D½ M D½,
    # log|Σ| = log|A| + log|S| and rᵀΣ⁻¹r = rᵀA⁻¹r - cᵀS⁻¹c, c = D½ b (the A terms are constants)
    nll = np.empty(g0.size)
    step = max(1, 2_000_000 // ell.size**2)  # grid points per batch: ~16 MB of matrices
    for i in range(0, g0.size, step):
        dh = np.exp(0.5 * (g0[i:i + step, None] + g1[i:i + step, None] * ell[None, :]))
        ls = np.linalg.cholesky(np.eye(ell.size) + dh[:, :, None] * mm[None] * dh[:, None, :])
        u = np.linalg.solve(ls, (dh * b[None, :])[..., None])[..., 0]
        nll[i:i + step] = np.sum(np.log(np.diagonal(ls, axis1=1, axis2=2)), axis=1) - 0.5 * np.sum(u * u, axis=1)
    w = np.exp(-(nll - nll.min()))
    keep = w > 1e-9 * w.max()
    out = np.column_stack([g0[keep], g1[keep], w[keep] / w[keep].sum()])
    out.flags.writeable = False  # shared by every caller of the cache
    return out


def null_basis(jac: Array, tol: float = 1e-9) -> Array:
    """Orthonormal basis of the residual space: vectors orthogonal to every column of ``jac``."""
    u, s, _ = np.linalg.svd(jac, full_matrices=True)
    rank = int(np.sum(s > tol * max(s.max(initial=0.0), 1e-300)))
    return u[:, rank:]


def run_df(jac: Array, run: Array) -> int:
    """Run-level residual df: runs minus the law directions that vary across runs."""
    groups = np.unique(run)
    means = np.array([jac[run == g].mean(0) for g in groups])
    z = np.column_stack([np.ones(len(groups)), means])
    return len(groups) - int(np.linalg.matrix_rank(z, tol=1e-8 * max(np.abs(z).max(), 1.0)))


def reml(jac: Array, resid: Array, run: Array, cell: Array | None, level: Array | None) -> Components:
    """REML variance components of ``resid`` (one target) with a run variance log-linear in ``level``.

    Args:
        jac: ``(n, k)`` gradient of the fitted log values; resid: ``(n,)`` log residuals.
        run: run label per point; cell: cell label per point (None: no shared step shocks).
        level: per point, its run's level (P); None or constant: no slope.
    """
    k_null = null_basis(jac)
    r = k_null.T @ resid
    groups, run_i = np.unique(run, return_inverse=True)
    zt = k_null.T @ np.eye(len(groups))[run_i]  # (m, G)
    ct = None
    if cell is not None:
        cells, cell_i = np.unique(cell, return_inverse=True)
        if len(cells) < len(cell):
            ct = k_null.T @ np.eye(len(cells))[cell_i]
    lv = None if level is None else np.array([level[run_i == g][0] for g in range(len(groups))], float)
    center = float(np.mean(np.log(lv))) if lv is not None and np.all(lv > 0) else 0.0
    ell = np.log(lv) - center if lv is not None and np.all(lv > 0) else np.zeros(len(groups))
    df_run = run_df(jac, run)
    can_slope = bool(df_run >= MIN_SLOPE_DF and len(np.unique(np.round(ell, 9))) >= MIN_LEVELS)
    names0 = ("log_within2", *(("log_step2",) if ct is not None else ()), "gamma0")
    base = _fit(r, zt, ct, ell, names0)
    if not can_slope:
        # no run-level df: the law absorbs every difference between runs, the likelihood is flat in the
        # run variance and an average over it would be set by the grid's ends; the estimate is kept
        lik = _likelihood_terms(r, zt, ct, ell, dict(zip(names0, base[0], strict=True))) if df_run > 0 else None
        return Components(base[0], base[1], names0, center, False, None, df_run, base[2], lik)
    names1 = (*names0, "gamma1")
    full = _fit(r, zt, ct, ell, names1, start=np.append(base[0], 0.0))

    p = float(stats.chi2.sf(max(2 * (base[2] - full[2]), 0.0), 1))
    return Components(full[0], full[1], names1, center, True, p, df_run, full[2],
                      _likelihood_terms(r, zt, ct, ell, dict(zip(names1, full[0], strict=True))))


def _likelihood_terms(r: Array, zt: Array, ct: Array | None, ell: Array,
                      phi: dict[str, float]) -> tuple[Array, Array, Array]:
    """:attr:`Components.lik`: the step-shock and point variances, read from many cells and points, are
    held at their estimates; only the run variance's few df are averaged over."""
    a = math.exp(phi["log_within2"]) * np.eye(r.size)
    if ct is not None:
        a = a + math.exp(phi["log_step2"]) * (ct @ ct.T)
    lc = np.linalg.cholesky(a)
    a_z, a_r = np.linalg.solve(lc, zt), np.linalg.solve(lc, r)
    return a_z.T @ a_z, a_z.T @ a_r, np.asarray(ell, float)


def _fit(r: Array, zt: Array, ct: Array | None, ell: Array, names: tuple[str, ...],
         start: Array | None = None) -> tuple[Array, Array, float]:
    m = r.size
    eye = np.eye(m)
    cc = ct @ ct.T if ct is not None else None

    def parts(phi: Array) -> list[Array]:
        """``∂Σ/∂φ_j`` for each log-variance parameter: Σ is their sum (γ1's part excepted)."""
        d = dict(zip(names, phi, strict=True))
        tau = np.exp(d["gamma0"] + d.get("gamma1", 0.0) * ell)
        out = {"log_within2": math.exp(d["log_within2"]) * eye, "gamma0": (zt * tau) @ zt.T}
        if cc is not None:
            out["log_step2"] = math.exp(d["log_step2"]) * cc
        if "gamma1" in d:
            out["gamma1"] = (zt * (tau * ell)) @ zt.T
        return [out[n] for n in names]

    def nll(phi: Array) -> tuple[float, Array]:
        """REML criterion and its gradient, ``½ tr(S⁻¹Σ_j) - ½ aᵀΣ_j a`` with ``a = S⁻¹r``."""
        ps = parts(phi)
        s = sum(p for n, p in zip(names, ps, strict=True) if n != "gamma1")
        try:
            lc = np.linalg.cholesky(s)
        except np.linalg.LinAlgError:
            return 1e12, np.zeros(len(names))
        a = np.linalg.solve(lc, r)
        s_inv = np.linalg.solve(lc.T, np.linalg.solve(lc, eye))
        al = s_inv @ r
        grad = np.array([0.5 * float(np.sum(s_inv * p)) - 0.5 * float(al @ p @ al) for p in ps])
        return float(np.sum(np.log(np.diag(lc))) + 0.5 * a @ a), grad

    v = max(float(r @ r) / max(m, 1), 1e-12)
    x0 = start if start is not None else np.array([math.log(v / 3)] * (len(names)))
    bounds = [(-6.0, 6.0) if n == "gamma1" else (_FLOOR, 5.0) for n in names]
    res = optimize.minimize(nll, x0, method="L-BFGS-B", jac=True, bounds=bounds)
    phi = res.x
    # the expected (Fisher) information of REML, ½ tr(S⁻¹ Σ_i S⁻¹ Σ_j): unlike the observed Hessian it
    # does not swing with the residuals the estimates were read from
    ps = parts(phi)
    s_inv = np.linalg.pinv(sum(p for n, p in zip(names, ps, strict=True) if n != "gamma1"))
    q = [s_inv @ p for p in ps]
    info = np.array([[0.5 * float(np.sum(qi * qj.T)) for qj in q] for qi in q])
    free = np.array([not (phi[i] <= lo + 1e-6 or phi[i] >= hi - 1e-6) for i, (lo, hi) in enumerate(bounds)])
    cov = np.zeros((phi.size, phi.size))
    if free.any():
        lam, vec = np.linalg.eigh(info[np.ix_(free, free)])
        cov[np.ix_(free, free)] = (vec / np.maximum(lam, 1e-9)) @ vec.T  # a flat direction: huge variance
    return phi, cov, float(res.fun)


def _inv_sqrt(m: Array) -> Array:
    """``m^{-1/2}`` of a symmetric matrix, its (near-)zero eigenvalues left out."""
    lam, vec = np.linalg.eigh((m + m.T) / 2)
    keep = lam > 1e-10
    return (vec[:, keep] / np.sqrt(lam[keep])) @ vec[:, keep].T


def jackknife_cov(jac: Array, r: Array, omega: Array, labels: Array) -> Array:
    """Cluster-robust (CR2) covariance of a weighted least-squares fit, from one linearisation.

    Each cluster's residuals are scaled by ``(I - H_gg)^{-1/2}``, which undoes the shrinkage its own
    leverage puts on them: the variance is unbiased when errors are independent (Bell and McCaffrey
    2002), so that four runs are not read as forty points.

    Args:
        jac: ``(m, k)`` derivatives of the fitted values; r: ``(m,)`` residuals (observed - fitted);
        omega: ``(m,)`` weights; labels: ``(m,)`` cluster of each row.

    Returns:
        ``Σ_g B J_gᵀ A_g r_g r_gᵀ A_g J_g B``, ``B`` the bread, ``A_g = (I - H_gg)^{-1/2}``.

    Example:
        >>> x = np.array([[1., 0.], [1., 1.], [1., 2.], [1., 3.]]); y = np.array([0.1, 0.9, 2.1, 2.9])
        >>> beta = np.linalg.lstsq(x, y, rcond=None)[0]
        >>> v = jackknife_cov(x, y - x @ beta, np.ones(4), np.arange(4))
        >>> bool(v[1, 1] > 0)
        True
    """
    bread = np.linalg.pinv((jac * omega[:, None]).T @ jac)
    meat = np.zeros((jac.shape[1], jac.shape[1]))
    for g in np.unique(labels):
        m = labels == g
        jg, wg = jac[m], omega[m]
        sw = np.sqrt(wg)
        hgg = (jg * sw[:, None]) @ bread @ (jg * sw[:, None]).T
        adj = _inv_sqrt(np.eye(int(m.sum())) - hgg) @ (sw * r[m])
        d = bread @ (jg * sw[:, None]).T @ adj
        meat += np.outer(d, d)
    return meat


def bm_df(jac: Array, labels: Array, sigma: Array) -> Array:
    """Bell-McCaffrey df of the CR2 variance of each coefficient (:func:`jackknife_cov`), under errors
    of covariance ``sigma``: ``tr(WΣ)² / tr(WΣWΣ)``, ``W`` the quadratic form CR2 puts on the errors.

    Example:
        >>> x = np.column_stack([np.ones(6), np.arange(6.0)])
        >>> bm_df(x, np.arange(6), np.eye(6)).round(2).tolist()
        [1.89, 2.41]
    """
    n, k = jac.shape
    bread = np.linalg.pinv(jac.T @ jac)
    resid = np.eye(n) - jac @ bread @ jac.T
    groups = np.unique(labels)
    m = np.zeros((len(groups), k, n))
    for i, g in enumerate(groups):
        sel = labels == g
        jg = jac[sel]
        m[i] = bread @ jg.T @ _inv_sqrt(np.eye(int(sel.sum())) - jg @ bread @ jg.T) @ resid[sel]
    out = np.empty(k)
    for j in range(k):
        mj = m[:, j, :]  # (G, n)
        ws = (mj.T @ mj) @ sigma
        t1, t2 = float(np.trace(ws)), float(np.sum(ws * ws.T))
        out[j] = t1**2 / t2 if t2 > 0 else np.inf
    return out


def between_run(jac: Array, run: Array) -> Array:
    """Per column of ``jac``, whether it is constant within every run: a direction only runs identify.
    None is when every run is one point (then "within a run" says nothing).

    Example:
        >>> jac = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 2.0], [1.0, 0.0, 3.0], [1.0, 1.0, 3.0]])
        >>> between_run(jac, np.array([0, 0, 1, 1])).tolist(), between_run(jac, np.arange(4)).tolist()
        ([True, False, True], [False, False, False])
    """
    groups = np.unique(run)
    if len(groups) == len(run):
        return np.zeros(jac.shape[1], bool)
    scale = np.maximum(np.abs(jac).max(axis=0), 1e-300)
    spread = np.zeros(jac.shape[1])
    for g in groups:
        spread = np.maximum(spread, np.ptp(jac[run == g], axis=0))
    return spread <= 1e-6 * scale


def run_level_variance(
    jac: Array, resid: Array, run: Array, cell: Array | None, level: Array | None
) -> tuple[Array | None, Array]:
    """Model-based variance of each coefficient of a least-squares fit, and its df, for the directions
    only runs identify (:func:`between_run`).

    The estimate's variance under the REML components (:func:`reml`; run variance at each run's own
    level) is ``V = V_run + V_w + V_step``. A direction constant within runs is a contrast of the run
    totals, whose variance (run effect plus the run's point noise) can only be read from the
    ``G - k_run`` run-level residuals (runs less the law directions that vary across runs): the point
    part gets no df of its own (were it given the within-run df, a run variance estimated near 0 would
    make ``V_w`` dominate and the df large exactly when the variance is most under-estimated). The
    step part, which shocks balanced across levels cancel, has the ``C - k_cell`` cell-level df.
    Satterthwaite: ``df = V² / ((V_run + V_w)² / (G - k_run) + V_step² / (C - k_cell))``; for a
    balanced between-run contrast under equal run variance this is ``G - k_run``, the exact t's df.

    Args:
        jac: ``(n_out, n, k)`` gradients of the fitted log values; resid: ``(n_out, n)`` log residuals.
        run, cell: labels per point (cell None: no shared step shocks); level: per point, its run's level.

    Returns:
        ``(variance (k,), df (k,))``, or ``(None, [])`` when residuals are not finite or no run df is left.
    """
    k = jac.shape[-1]
    n = run.size
    parts: dict[str, Array] = {}
    nu: dict[str, float] = {}
    bread = np.zeros((k, k))
    for ji, ri in zip(jac, resid, strict=True):
        if not (np.all(np.isfinite(ji)) and np.all(np.isfinite(ri))):
            return None, np.zeros(0)
        c = reml(ji, ri, run, cell, level)
        tau = c.tau2(level if level is not None else np.ones(n))
        sig = {"run": np.where(run[:, None] == run[None, :], np.sqrt(np.outer(tau, tau)), 0.0),
               "point": math.exp(c.get("log_within2")) * np.eye(n)}  # fmt: skip
        if cell is not None:
            sig["step"] = math.exp(c.get("log_step2")) * (cell[:, None] == cell[None, :])
            nu["step"] = nu.get("step", 0.0) + run_df(ji, cell)
        for name, s in sig.items():
            parts[name] = parts.get(name, np.zeros((k, k))) + ji.T @ s @ ji
        bread += ji.T @ ji
        nu["run"] = nu.get("run", 0.0) + c.df_run
    if nu.get("run", 0) <= 0:
        return None, np.zeros(0)
    b = np.linalg.pinv(bread)
    runs = np.diag(b @ (parts["run"] + parts["point"]) @ b)
    step = np.diag(b @ parts["step"] @ b) if "step" in parts else np.zeros(k)
    with np.errstate(all="ignore"):
        den = runs**2 / nu["run"] + (step**2 / nu["step"] if nu.get("step", 0) > 0 else 0.0)
        df = (runs + step) ** 2 / den
        if nu.get("step", 1) <= 0:  # no cell-level df: a step part cannot be estimated
            df = np.where(step > 0, 1.0, df)
    return runs + step, np.where(np.isfinite(df) & (df > 0), np.clip(df, 1.0, 1e6), 1.0)
