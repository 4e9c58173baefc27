"""Monte Carlo of F1, F2 and F3 on synthetic studies of a design: shared by ``test_sim_f123.py`` and ``bench/power.py``.

A study is drawn by :func:`tests.sim.synth.synthetic_study`, its rows become columns as the store's rows do
(``laws.rows.rows_to_arrays``), ``linear`` and ``kl_power`` are fitted by ``laws.fit.fit_law`` with the
arguments ``laws.rows.fit_study`` gives them (runs as groups, (data order, step) cells, the number of
orders, the base entropy as ``forget_ce``'s offset), and the findings are ``laws.findings.f1`` / ``f23``.
Only the held-out validation of the fits is skipped (``holdout={}``): it decides a law's reliability,
which F1-F3 report but do not use, and it is most of a fit's time.

The truth ``PAPER`` is the default study's measured law (a = 0.101, b = 0.489, c_fft = 0.273, forget_kl
about 0.34 at rank 1 and step 32), and ``NOISE`` its measured noise (log forget_kl): the two data orders
differ by sd 0.116 at the same rank and step, 0.082 per run, split here into a run effect (0.06), a step
shock shared by the runs of one data order (0.05) and point noise (0.02); ft_loss is measured with
sd 0.10 nats (8 held-out examples). The split is an assumption: the study measures only the sum.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetscale.laws.fit import fit_law
from forgetscale.laws.rows import rows_to_arrays
from tests.sim.synth import synthetic_study

findings_module = importlib.import_module("forgetscale.laws.findings")  # the module, not the package's function

PAPER = {"A": 0.062, "a": 0.101, "b": 0.489, "c_fft": 0.273, "ft0": 2.8}
"""The default study's measured law, as a synthetic truth (KL = A rank^a N^b)."""
NOISE = {"run_sd": 0.06, "step_sd": 0.05, "point_sd": 0.02, "ft_sd": 0.10}
"""The default study's measured noise (see the module docstring)."""
FALSE = {
    "F1": {"power": 2.0},  # forgetting ∝ (drop in ft_loss)^2: convex in ft_loss, a power law in P and N still
    "F2": {"a": 0.0},  # no P effect
    "F2 form": {"bend_P": 0.05},  # log KL quadratic in log P: up to rank 8, down beyond
    "F3": {"tau": 12.0},  # saturates in N (time constant 12 steps): the local exponent falls from 0.5 to 0.1
}
"""One false law per claim, each beyond its margin at the default design (``test_sim_f123.py`` finds the margins)."""
MIN_STEP = 8


@dataclass(frozen=True)
class Design:
    """A study design: ranks, data orders per rank, evaluation steps past the onset (step 0 is always measured)."""

    ranks: tuple[int, ...] = (1, 4, 16, 64)
    orders: int = 2
    steps: tuple[int, ...] = (8, 12, 16, 24, 32)

    @property
    def runs(self) -> int:
        return len(self.ranks) * self.orders

    def cost(self, eval_cost: float) -> float:
        """Training-step equivalents: runs x (last step + evaluations x ``eval_cost``), step 0's evaluation included.

        >>> Design().cost(3.0)  # 8 runs x (32 + 6 x 3)
        400.0
        """
        return self.runs * (max(self.steps) + (len(self.steps) + 1) * eval_cost)


def fits(rows: Sequence[Mapping[str, Any]], min_step: float = MIN_STEP) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``({"linear": fit, "kl_power": fit}, columns)`` of one study's rows, as ``fit_study`` fits them."""
    cols = rows_to_arrays(rows)["synth"]
    keep = (cols["N"] >= min_step) & (cols["N"] > 0)
    cells = np.char.add(np.char.add(cols["seed"][keep], "|"), cols["N"][keep].astype(str))
    common = {"groups": cols["run_id"][keep], "delta": "auto", "n_boot": 0, "holdout": {}, "cells": cells,
              "n_orders": len(np.unique(cols["seed"][keep]))}  # fmt: skip
    lin = fit_law("linear", {"ft_loss": cols["ft_loss"][keep]}, {"forget_ce": cols["forget_ce"][keep]},
                  offset={"forget_ce": float(np.median(cols["base_entropy"]))}, **common)  # fmt: skip
    klp = fit_law("kl_power", {"P": cols["P"][keep], "N": cols["N"][keep]}, {"forget_kl": cols["forget_kl"][keep]},
                  **common)  # fmt: skip
    return {"linear": lin, "kl_power": klp}, cols


def verdicts(rows: Sequence[Mapping[str, Any]], which: Sequence[str] = ("F1", "F2", "F3")) -> dict[str, dict]:
    """The findings ``which`` of one study (``F1``, ``F2``, ``F3``)."""
    f, cols = fits(rows)
    out = {}
    for name in which:
        if name == "F1":
            out[name] = findings_module.f1("synth", f, cols, MIN_STEP)
        else:
            out[name] = findings_module.f23("synth", f, "P" if name == "F2" else "N", cols, MIN_STEP)
    return out


def simulate(design: Design, params: Mapping[str, float], n: int, seed0: int, noise: Mapping[str, float] | None = None,
             which: Sequence[str] = ("F1", "F2", "F3")) -> dict[str, Counter]:
    """Verdict counts of ``which`` over ``n`` studies of ``design`` under the truth ``PAPER | params``."""
    counts: dict[str, Counter] = {w: Counter() for w in which}
    for s in range(n):
        rows, _ = synthetic_study(np.random.default_rng(seed0 + s), ranks=design.ranks, seeds_per_rank=design.orders,
                                  steps=design.steps, params={**PAPER, **params}, **{**NOISE, **(noise or {})})
        for w, f in verdicts(rows, which).items():
            counts[w][f["verdict"]] += 1
    return counts
