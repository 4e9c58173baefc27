"""Power-law forms in (P, N): ``kl_power`` (KL = A P^a N^b) and ``additive`` (Chinchilla's E + A/x1^α + B/x2^β)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from forgetscale.laws.forms import EXP_BOUNDS, HUGE, Array, LawForm, col, register_law, wls


def _kl_power(theta: Array, x: Array) -> Array:
    big_a, a, b = col(theta, 0), col(theta, 1), col(theta, 2)
    return (big_a * np.exp(a * np.log(x[0]) + b * np.log(x[1])))[..., None, :]


def _kl_power_init(x: Array, y: Array, pinned: Mapping[str, float]) -> list[Array]:
    # log KL is linear in (log A, a, b): the least-squares solution is the start
    design = np.stack([np.ones(x.shape[1]), np.log(x[0]), np.log(x[1])], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.log(y[0]), rcond=None)
    return [np.array([np.exp(coef[0]), coef[1], coef[2]])]


register_law(LawForm(
    name="kl_power",
    inputs=("P", "N"),
    outputs=("forget_kl",),
    params=("A", "a", "b"),
    fn=_kl_power,
    bounds={"A": (1 / HUGE, HUGE), "a": (-10.0, 10.0), "b": (-10.0, 10.0)},
    grid={"A": (1e-6, 1e-3, 1.0), "a": (0.0, 0.3, 1.0), "b": (0.0, 0.3, 1.0)},
    log_params=frozenset({"A"}),
    init=_kl_power_init,
    min_distinct={"P": 2, "N": 2},
    description="KL = A * P^a * N^b (no shift: KL is 0 at step 0)",
))


# ---------------------------------------------------------------------------- additive (Chinchilla)

def _additive(theta: Array, x: Array) -> Array:
    e, big_a, big_b, al, be = (col(theta, i) for i in range(5))
    return (e + big_a * np.exp(-al * np.log(x[0])) + big_b * np.exp(-be * np.log(x[1])))[..., None, :]


_VP_EXPONENTS = tuple(np.geomspace(0.02, 2.0, 25))


def additive_varpro(x: Array, y: Array, pinned: Mapping[str, float] | None = None) -> list[Array]:
    """Starts for ``y = E + A/x1^α + B/x2^β`` by variable projection over ``(α, β)``.

    For fixed exponents the law is linear in ``(E, A, B)``: solve that by
    weighted least squares (weights ``1/y``, i.e. relative residuals) on a
    25 x 25 log-spaced grid of exponents in [0.02, 2], all at once, and return
    the best grid points (``E > 0``, prediction positive everywhere), best first.
    ``A`` and ``B`` keep the sign the data give them: a decreasing loss has
    ``A, B > 0``; a forgetting that saturates upwards has ``A, B < 0``.

    Args:
        x: ``(2, n)`` positive inputs; y: ``(1, n)`` positive targets; pinned: unused.

    Returns:
        Up to 8 parameter vectors ``(E, A, B, alpha, beta)``.

    Example:
        >>> x = np.array([np.geomspace(1e6, 1e9, 6).repeat(6), np.tile(np.geomspace(1e8, 1e11, 6), 6)])
        >>> y = 1.5 + 400 * x[0] ** -0.3 + 900 * x[1] ** -0.35
        >>> start = additive_varpro(x, y[None])[0]
        >>> bool(abs(start[3] - 0.3) < 0.05 and abs(start[4] - 0.35) < 0.05)
        True
    """
    al, be = (a.ravel() for a in np.meshgrid(_VP_EXPONENTS, _VP_EXPONENTS, indexing="ij"))
    g1, g2 = np.exp(-al[:, None] * np.log(x[0])), np.exp(-be[:, None] * np.log(x[1]))
    coef, pred = wls(np.stack([np.ones_like(g1), g1, g2], axis=-1), y[0])
    with np.errstate(all="ignore"):
        loss = np.abs(np.log(pred) - np.log(y[0])).mean(-1)  # rank by the L1 of log-residuals
    valid = (coef[:, 0] > 0) & np.all(pred > 0, axis=-1) & np.isfinite(loss)
    order = [i for i in np.argsort(np.where(valid, loss, np.inf)) if valid[i]][:8]
    return [np.array([*coef[i], al[i], be[i]]) for i in order]


register_law(LawForm(
    name="additive",
    inputs=("x1", "x2"),
    outputs=("y",),
    params=("E", "A", "B", "alpha", "beta"),
    fn=_additive,
    bounds={"E": (1e-12, 1e6), "A": (-HUGE, HUGE), "B": (-HUGE, HUGE),
            "alpha": EXP_BOUNDS, "beta": EXP_BOUNDS},
    # Epoch AI's Chinchilla replication grid (4,500 starts; positive A, B only)
    grid={
        "E": tuple(np.exp(np.arange(-1.0, 1.5, 0.5))),
        "A": tuple(np.exp(np.arange(0.0, 30.0, 5.0))),
        "B": tuple(np.exp(np.arange(0.0, 30.0, 5.0))),
        "alpha": tuple(np.arange(0.0, 2.5, 0.5) + 1e-4),
        "beta": tuple(np.arange(0.0, 2.5, 0.5) + 1e-4),
    },
    log_params=frozenset({"E", "A", "B"}),
    init=additive_varpro,
    min_distinct={"x1": 3, "x2": 3},
    description="Chinchilla form: y = E + A/x1^alpha + B/x2^beta",
))
