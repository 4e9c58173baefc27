"""The paper's Eq. 5 + 6: shifted power laws in P and N for ft_loss and forget_ce, fitted jointly.

Identifiability (why ``paper`` pins two parameters):
``c_ft * [(a_ft/P)^α_ft + (b_ft/N)^β_ft]^ρ`` is unchanged when
``a_ft^α_ft, b_ft^β_ft`` (and, through the shared ``c_ft``, ``a_f^α_f,
b_f^β_f``) are multiplied by ``k`` and ``c_ft`` by ``k^-ρ``; and in Eq. 6
``c_fft`` trades off against the scale of ``a_f, b_f`` in the same way. Only
two gauges are free, so the fit pins ``c_fft`` to the Eq. 4 slope of the
same data (as the paper does, fitting Eq. 4 first) and ``b_ft`` to the
geometric mean of the fitted N. Parameters are *reported in that gauge*: every
prediction and every exponent is gauge-invariant, and :func:`paper_gauge`
moves a parameter set to another gauge (``b_ft = 1``, say) to compare with the
paper's table. (Reporting in the ``b_ft = 1`` gauge multiplied every scale by
``b_ft^(β_ft/α)``: with α near 0 that overflowed, e.g. a_f = 3.5e307.)

Bounds. A scale ``a`` enters as ``(a/P)^α``; the fitter moves the term at the
data's centre, ``α (log a - mean log P)``, which the data pin down. As α → 0
(the limit where the power law becomes a logarithm) the same term needs an
ever larger ``log a``: decoding clamps ``a`` to its declared bounds
(``[1e-100, 1e100]``), so a reported scale is always inside them, and a fit
that ends on a bound is flagged (``fit.py``), never silently reported.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from forgetscale.laws.forms import (
    EXP_BOUNDS,
    LAWS,  # noqa: F401 - the doctest looks the form up
    Array,
    LawForm,
    col,
    register_law,
    rel_rss,
    wls,
)

_SCALE_BOUNDS = (1e-100, 1e100)  # a, b of (a/P)^alpha, (b/N)^beta: wide, and finite in any arithmetic

_PAPER = ("c_fft", "s_fft", "a_f", "a_ft", "b_f", "b_ft", "c_ft", "s_ft",
          "alpha_f", "alpha_ft", "beta_f", "beta_ft", "rho")


def _paper(theta: Array, x: Array) -> Array:
    c_fft, s_fft, a_f, a_ft, b_f, b_ft, c_ft, s_ft, al_f, al_ft, be_f, be_ft, rho = (
        col(theta, i) for i in range(13)
    )
    lp, ln = np.log(x[0]), np.log(x[1])
    # (a/P)^α as exp(α (log a - log P)): no overflow for the huge/tiny a the gauge allows
    u_ft = np.exp(al_ft * (np.log(a_ft) - lp)) + np.exp(be_ft * (np.log(b_ft) - ln))
    u_f = np.exp(al_f * (np.log(a_f) - lp)) + np.exp(be_f * (np.log(b_f) - ln))
    ft = c_ft * np.exp(rho * np.log(u_ft)) + s_ft
    forget = -c_fft * (c_ft * np.exp(rho * np.log(u_f)) + s_ft) + s_fft
    return np.stack([ft, forget], axis=-2)


def _paper_pin(x: Array, y: Array) -> dict[str, float]:
    # The Eq. 4 slope of the same data fixes the Eq. 6 gauge and keeps c_fft meaning what
    # it means in `linear`. b_ft fixes the Eq. 5 gauge: at the geometric mean of N the
    # N-term is 1 at the data's centre whatever beta_ft is, so beta_ft does not move the
    # scale c_ft multiplies (it would with b_ft = 1). Fits are reported in this gauge.
    ft, forget = y
    slope = np.polyfit(ft, forget, 1)[0] if np.ptp(ft) > 0 else np.nan
    return {"b_ft": float(np.exp(np.mean(np.log(x[1])))), "c_fft": float(-slope)}


def paper_gauge(theta: Array, b_ft: float = 1.0) -> Array:
    """The same Eq. 5/6 law moved to the gauge with the given ``b_ft``: every power term
    times ``k = (b_ft / b_ft_old)^β_ft``, ``c_ft`` times ``k^-ρ``. Predictions are unchanged;
    scales may leave their bounds (``b_ft = 1`` with a tiny exponent overflows), which is
    why fits are reported in the fitting gauge.

    Example:
        >>> law = LAWS["paper"]
        >>> th = law.theta({**dict.fromkeys(law.params, 0.5), "b_ft": 3.0, "a_f": 2.0})
        >>> x = np.array([[1e5, 1e6], [10.0, 100.0]])
        >>> moved = paper_gauge(th)
        >>> float(moved[law.params.index("b_ft")]), bool(np.allclose(law.predict(moved, x), law.predict(th, x)))
        (1.0, True)
    """
    i = {p: k for k, p in enumerate(_PAPER)}
    out = np.array(theta, dtype=float, copy=True)
    with np.errstate(all="ignore"):  # a scale may under/overflow in the new gauge
        log_k = out[..., i["beta_ft"]] * (np.log(b_ft) - np.log(out[..., i["b_ft"]]))
        for a, e in (("a_ft", "alpha_ft"), ("a_f", "alpha_f"), ("b_f", "beta_f")):
            out[..., i[a]] = np.exp(np.log(out[..., i[a]]) + log_k / out[..., i[e]])
        out[..., i["b_ft"]] = b_ft
        out[..., i["c_ft"]] *= np.exp(-out[..., i["rho"]] * log_k)
    return out


_RHO_GRID = (0.5, 1.0, 2.0, 4.0, 8.0)
_EXP_GRID = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
_RATIO_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def _shape_candidates(lp: Array, ln: Array, rho: float) -> tuple[Array, Array]:
    """``u^ρ`` for every (α, β, r) on the grid, ``u = r (P0/P)^α + (N0/N)^β``: ``(g, meta)``.

    ``(P0, N0)`` is the data's geometric centre, so ``r`` is the P-term over the
    N-term there, whatever the units. ``g`` is ``(m, n)``; ``meta`` rows are
    ``(α, β, log r)``.
    """
    lp0, ln0 = lp.mean(), ln.mean()
    al, be, r = (a.ravel() for a in np.meshgrid(_EXP_GRID, _EXP_GRID, _RATIO_GRID, indexing="ij"))
    with np.errstate(all="ignore"):
        u = r[:, None] * np.exp(al[:, None] * (lp0 - lp)) + np.exp(be[:, None] * (ln0 - ln))
        g = np.exp(rho * np.log(u))
    return g, np.stack([al, be, np.log(r)], axis=1)


def _paper_init(x: Array, y: Array, pinned: Mapping[str, float]) -> list[Array]:
    """Starts for Eq. 5/6 by variable projection.

    For fixed ``(ρ, α, β, r)`` each equation is linear in two numbers (Eq. 5
    in ``c_ft, s_ft``; Eq. 6 in its scale and offset), solved in closed form
    for every grid point at once; the best shape per equation and ρ is mapped
    back to the paper's parameters in the pinned gauge (``b_ft`` = N0).
    """
    lp, ln = np.log(x[0]), np.log(x[1])
    lp0, ln0 = lp.mean(), ln.mean()
    c_fft, cands = pinned["c_fft"], []
    for rho in _RHO_GRID:
        g, meta = _shape_candidates(lp, ln, rho)
        design = np.stack([g, np.ones_like(g)], axis=-1)
        coef_ft, pred = wls(design, y[0])
        c_ft, s_ft = coef_ft.T
        rss_ft = np.where(c_ft > 0, rel_rss(pred, y[0]), np.inf)
        k_ft = int(np.argmin(rss_ft))
        # forget = off + coef * w^ρ with u_f = s * w and coef = -c_fft * c_ft * s^ρ
        coef_f, pred_f = wls(design, y[1])
        scale = -coef_f[:, 0] / (c_fft * c_ft[k_ft])
        rss_f = np.where(scale > 0, rel_rss(pred_f, y[1]), np.inf)
        k_f = int(np.argmin(rss_f))
        if not (np.isfinite(rss_ft[k_ft]) and np.isfinite(rss_f[k_f])):
            continue
        (al_ft, be_ft, log_r_ft), (al_f, be_f, log_r_f) = meta[k_ft], meta[k_f]
        log_s = np.log(scale[k_f]) / rho
        th = {
            "c_fft": c_fft, "s_fft": coef_f[k_f, 1] + c_fft * s_ft[k_ft],
            "a_f": np.exp(lp0 + (log_s + log_r_f) / al_f), "a_ft": np.exp(lp0 + log_r_ft / al_ft),
            "b_f": np.exp(ln0 + log_s / be_f), "b_ft": np.exp(ln0), "c_ft": c_ft[k_ft],
            "s_ft": s_ft[k_ft], "alpha_f": al_f, "alpha_ft": al_ft, "beta_f": be_f,
            "beta_ft": be_ft, "rho": rho,
        }
        vec = np.array([th[p] for p in _PAPER], dtype=float)
        if np.all(np.isfinite(vec)):
            cands.append((rss_ft[k_ft] + rss_f[k_f], vec))
    return [v for _, v in sorted(cands, key=lambda t: t[0])]


register_law(LawForm(
    name="paper",
    inputs=("P", "N"),
    outputs=("ft_loss", "forget_ce"),
    params=_PAPER,
    fn=_paper,
    bounds={**dict.fromkeys(("c_fft", "s_fft", "s_ft"), (-1e6, 1e6)),
            **dict.fromkeys(("a_f", "a_ft", "b_f", "b_ft"), _SCALE_BOUNDS),
            "c_ft": (1e-200, 1e200),
            **dict.fromkeys(("alpha_f", "alpha_ft", "beta_f", "beta_ft"), EXP_BOUNDS),
            "rho": (1e-2, 50.0)},
    grid={
        "s_fft": (2.0,), "a_f": (1e-3, 1.0), "a_ft": (1e-3, 1.0), "b_f": (1.0,), "c_ft": (0.1,),
        "s_ft": (0.5,), "alpha_f": (0.05, 0.3), "alpha_ft": (0.05, 0.3), "beta_f": (0.1, 0.4),
        "beta_ft": (0.1, 0.4), "rho": (1.0, 4.0, 8.0),
    },
    log_params=frozenset({"a_f", "a_ft", "b_f", "b_ft", "c_ft"}),
    pin=_paper_pin,
    init=_paper_init,
    min_distinct={"P": 3, "N": 3},
    term_scales={"a_f": ("alpha_f", "P"), "a_ft": ("alpha_ft", "P"), "b_f": ("beta_f", "N"),
                 "b_ft": ("beta_ft", "N")},
    description="Eq. 5 + 6: shifted power laws in P and N for ft_loss and forget_ce",
))
