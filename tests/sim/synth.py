"""Synthetic studies of the default design, with a known forgetting law: pure numpy.

The simulation tier (``tests/sim``) checks that verdicts, intervals and flags mean what they say by
running the package's own functions on studies whose truth is known. One generator serves them all.

The truth. A latent *progress* ``g(P, N) = A * (P / p_per_rank)^a * N^b`` (0 at N = 0) drives both
quantities of a run:

- fine-tuning loss ``ft(P, N) = ft0 - g / c_fft`` (it falls as the run learns);
- forgetting ``KL(P, N) = c_fft * s * (g / (c_fft * s))^power * (P / p_per_rank)^escape_P``, with the
  reference drop ``s = 1`` nat of ft_loss; ``forget_ce = H + KL``.

So with ``power = 1`` and ``escape_P = 0`` (``law="kl_power"``) forgetting is exactly linear in ft_loss
(Eq. 4, slope ``c_fft``), a pure power law in P and N (exponents ``a``, ``b``), and F4 holds: at equal
ft_loss forgetting does not depend on P or N. ``law="curved"`` sets ``power = 1.2``: F4 still holds
(forgetting depends on ft_loss alone) but the relation is curved, ``KL ∝ (ft0 - ft)^1.2``, and the KL
exponents are ``1.2 a`` and ``1.2 b``. ``law="escape"`` sets ``escape_P = 0.1``: at equal ft_loss
forgetting grows with P, so F4 is false.

The noise (what the default study shows, docs/default-study.md), on the log scale of KL, which keeps
``KL >= 0`` and ``KL = 0`` exactly at step 0 (so ``forget_ce == base_entropy`` there):

- ``run_sd``: a run effect ``u_run``, one draw per run;
- ``step_sd``: a step shock ``v[seed, step]`` shared by every run with the same data-order seed (the
  batches it saw); runs with different seeds draw independently;
- ``point_sd``: independent point noise;

``KL_obs = KL * exp(u_run + v[seed, step] + e)``: the law is the median of a point, not its mean. The
shocks move forgetting only, never ft_loss: the hardest case for F4, whose regression takes ft_loss
as the measure of learning. ``ft_loss`` is the true value plus independent measurement noise of sd
``ft_sd`` (a held-out set of a few examples), and ``ft_loss_se`` records that sd (None when
``record_ft_se`` is False, the case of a store that lacks it).

Example:
    >>> rows, truth = synthetic_study(np.random.default_rng(0))
    >>> len(rows), rows[0]["step"], rows[0]["forget_ce"] == rows[0]["base_entropy"]
    (28, 0, True)
    >>> round(float(truth.forget_kl(305_000 * 4, 16)), 4) == round(0.02 * 4**0.08 * 16**0.8, 4)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_PARAMS = {"A": 0.02, "a": 0.08, "b": 0.8, "c_fft": 0.29, "ft0": 2.5, "H": 1.9, "power": 1.0,
                  "escape_P": 0.0, "tau": 0.0, "bend_P": 0.0}  # fmt: skip
"""A kl_power (A, a, b) with KL 0.1-0.45 nats over the default grid; c_fft and H as measured. ``tau`` and
``bend_P`` (0: off) bend the progress away from a power law in N and in P (see :meth:`Truth.progress`)."""
LAWS = {"kl_power": {}, "curved": {"power": 1.2}, "escape": {"escape_P": 0.1}, "saturating": {"tau": 12.0},
        "flat_P": {"a": 0.0}, "bent_P": {"bend_P": 0.05}}
"""The truths: ``kl_power`` (every finding true), ``curved`` (F1 false beyond some power), ``escape`` (F4 false),
``saturating`` (F3's power law false: progress saturates in N with time constant ``tau`` steps), ``flat_P``
(F2 false: no P effect) and ``bent_P`` (F2's power law false: log progress quadratic in log P)."""
N_REF, RANK_REF = 16.0, 8.0
"""A saturating progress equals the power law's at step ``N_REF``; a bent one at rank ``RANK_REF``."""
TOP1_PER_KL, DATA_PER_KL = 1.3, 0.5  # the hard-target and data losses rise with KL too (not modelled further)


@dataclass(frozen=True)
class Truth:
    """The noise-free law behind a synthetic study, and the shocks it drew."""

    law: str
    params: Mapping[str, float]
    p_per_rank: float
    step_shocks: np.ndarray = field(repr=False)
    """``(n_seeds, n_steps)`` log-scale shocks, one row per data-order seed, columns as ``steps``."""

    @property
    def f4_true(self) -> bool:
        """Whether forgetting depends on P and N only through ft_loss."""
        return self.params["escape_P"] == 0

    @property
    def exponents(self) -> dict[str, float]:
        """The exponents of KL in P (``a``) and N (``b``): KL is an exact power law in both."""
        p = self.params
        return {"a": p["a"] * p["power"] + p["escape_P"], "b": p["b"] * p["power"]}

    def progress(self, P: Any, N: Any) -> np.ndarray:
        """``A r^a h(N) exp(-bend_P (log r - log 8)^2)``, ``r = P / p_per_rank``; ``h(N) = N^b`` or, with ``tau``
        > 0, ``16^b (1 - exp(-N/tau)) / (1 - exp(-16/tau))``, which saturates (a local exponent falling with N)."""
        p = self.params
        r, n = np.asarray(P, float) / self.p_per_rank, np.asarray(N, float)
        h = n ** p["b"] if not p.get("tau") else N_REF ** p["b"] * -np.expm1(-n / p["tau"]) / -math.expm1(
            -N_REF / p["tau"])  # fmt: skip
        return p["A"] * r ** p["a"] * h * np.exp(-p.get("bend_P", 0.0) * np.log(r / RANK_REF) ** 2)

    def ft_loss(self, P: Any, N: Any) -> np.ndarray:
        """The true fine-tuning loss at (P, N)."""
        return self.params["ft0"] - self.progress(P, N) / self.params["c_fft"]

    def forget_kl(self, P: Any, N: Any) -> np.ndarray:
        """The true (median) KL to the base at (P, N)."""
        p = self.params
        drop = self.progress(P, N) / p["c_fft"]  # ft0 - ft, in nats
        return p["c_fft"] * drop ** p["power"] * (np.asarray(P, float) / self.p_per_rank) ** p["escape_P"]

    def forget_ce(self, P: Any, N: Any) -> np.ndarray:
        """The true (median) soft cross-entropy to the base at (P, N)."""
        return self.params["H"] + self.forget_kl(P, N)

    def value(self, target: str, P: Any, N: Any) -> np.ndarray:
        """``ft_loss``, ``forget_kl`` or ``forget_ce`` at (P, N)."""
        return {"ft_loss": self.ft_loss, "forget_kl": self.forget_kl, "forget_ce": self.forget_ce}[target](P, N)


def step_shock_paths(rng: np.random.Generator, n_orders: int, n_steps: int, sd: float, shock: str = "iid",
                     rho: float = 0.8) -> np.ndarray:
    """``(n_orders, n_steps)`` step shocks: ``iid``, stationary ``ar1`` (coefficient ``rho``) or a ``walk``.

    Example:
        >>> w = step_shock_paths(np.random.default_rng(0), 2000, 6, 0.05, "ar1")
        >>> round(float(w.std()), 2), round(float(np.corrcoef(w[:, 0], w[:, 1])[0, 1]), 1)
        (0.05, 0.8)
    """
    z = rng.normal(0.0, sd, (n_orders, n_steps))
    if shock == "iid":
        return z
    if shock == "walk":
        return np.cumsum(z, axis=1)
    if shock != "ar1":
        raise ValueError(f"shock {shock!r}: choose iid, ar1 or walk")
    out = z.copy()
    for t in range(1, n_steps):
        out[:, t] = rho * out[:, t - 1] + math.sqrt(1 - rho**2) * z[:, t]
    return out


def synthetic_study(
    rng: np.random.Generator,
    *,
    ranks: tuple[int, ...] = (1, 4, 16, 64),
    seeds_per_rank: int = 1,
    steps: tuple[int, ...] = (8, 12, 16, 20, 24, 32),
    p_per_rank: float = 305_000,
    law: str = "kl_power",
    params: Mapping[str, float] | None = None,
    run_sd: float = 0.05,
    step_sd: float = 0.0,
    point_sd: float = 0.02,
    ft_sd: float = 0.0,
    record_ft_se: bool = True,
    step_shocks: np.ndarray | None = None,
    dataset: str = "synth",
    run_prefix: str = "r",
    run_sd_power: float = 0.0,
    shock: str = "iid",
    rho: float = 0.8,
) -> tuple[list[dict[str, Any]], Truth]:
    """Measurement rows of one synthetic study (step 0 included) and the truth behind them.

    Args:
        rng: the only source of randomness.
        ranks, seeds_per_rank: one run per (rank, data-order seed).
        steps: evaluation steps after step 0.
        p_per_rank: trainable parameters per rank unit (P = rank * p_per_rank).
        law: a key of :data:`LAWS` (see the module docstring).
        params: overrides of :data:`DEFAULT_PARAMS` on top of the law's.
        run_sd, step_sd, point_sd: log-scale sd of the run effect, the shared step shock and point noise.
        ft_sd: sd of ft_loss's measurement noise (nats).
        record_ft_se: store ``ft_loss_se = ft_sd`` in the rows (else None).
        step_shocks: reuse these ``(seeds, steps)`` shocks (e.g. a new run with a study's data order).
        dataset, run_prefix: labels of the rows (run ids are ``{prefix}{rank}s{seed}``).
        run_sd_power: run sd grows with rank as ``run_sd * (rank / 8)^run_sd_power`` (0: equal).
        shock: ``iid`` step shocks, ``ar1`` (stationary AR(1) over the evaluation steps, coefficient
            ``rho``, sd ``step_sd``) or ``walk`` (a random walk with innovations of sd ``step_sd``):
            a batch effect that persists from step to step.

    Returns:
        ``(rows, truth)``: row dicts with ``run_id, dataset, rank, P, step, seed, ft_loss, forget_ce,
        forget_kl, base_entropy, forget_top1_ce, data_loss, ft_loss_se`` (and ``forget_ce_se``,
        ``forget_kl_se``), in run then step order; and the :class:`Truth`.
    """
    if law not in LAWS:
        raise ValueError(f"law {law!r}: choose from {sorted(LAWS)}")
    p = {**DEFAULT_PARAMS, **LAWS[law], **(params or {})}
    steps_arr = np.asarray(steps, float)
    shocks = (step_shock_paths(rng, seeds_per_rank, steps_arr.size, step_sd, shock, rho) if step_shocks is None
              else np.asarray(step_shocks, float))  # fmt: skip
    truth = Truth(law, p, float(p_per_rank), shocks)
    rows: list[dict[str, Any]] = []
    for rank in ranks:
        P = rank * float(p_per_rank)
        for seed in range(seeds_per_rank):
            u = rng.normal(0.0, run_sd * (rank / 8) ** run_sd_power)
            kl = truth.forget_kl(P, steps_arr) * np.exp(u + shocks[seed] + rng.normal(0.0, point_sd, steps_arr.size))
            ft = truth.ft_loss(P, steps_arr) + rng.normal(0.0, ft_sd, steps_arr.size)
            ft0 = p["ft0"] + rng.normal(0.0, ft_sd)
            run_id = f"{run_prefix}{rank}s{seed}"
            for n, k, f in ((0, 0.0, ft0), *zip(steps, kl, ft, strict=True)):
                rows.append({"run_id": run_id, "dataset": dataset, "rank": rank, "P": P, "step": int(n),
                             "seed": seed, "ft_loss": float(f), "forget_ce": p["H"] + float(k),
                             "forget_kl": float(k), "base_entropy": p["H"],
                             "forget_top1_ce": p["H"] + 0.8 + TOP1_PER_KL * float(k),
                             "data_loss": p["H"] + 0.4 + DATA_PER_KL * float(k),
                             "ft_loss_se": ft_sd if record_ft_se else None,
                             "forget_ce_se": point_sd * float(k), "forget_kl_se": point_sd * float(k)})  # fmt: skip
    return rows, truth
