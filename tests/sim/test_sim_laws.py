"""Calibration of the laws' inference on simulated studies whose truth is known.

Two designs, each with run effects (sd 0.05 on log KL), step shocks shared by the runs of one data
order (sd 0.05: docs/default-study.md's ~10% batch-to-batch jumps of forget_kl, half of it) and point noise
(sd 0.02), forgetting an exact kl_power law (``synth.py``):

- ``default``: ranks 1/4/16/64, one run each, all on one data order; evaluations at 8..32;
- ``two_orders``: the same ranks, two data-order seeds per rank (8 runs).

Per design, ``N_STUDIES`` studies are fitted once (module fixture) and every check reads them. Monte
Carlo error: a rate near 0.9 over 120 studies has sd 0.027 (over 720 predicted points, ~0.011 if
they were independent; they are not: a run's points share its offset, so read ~0.02); the thresholds
sit about two such sd below what was measured, so a pass is not luck and a real regression (the old
code: 31% exponent coverage, 81-87% prediction coverage, 27-47% false "unreliable") fails loudly.
Measured when written: 88 s wall for both designs on the shared 2-core machine (40 s CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from forgetscale.laws import fit_study, reliability
from tests.sim.synth import synthetic_study

pytestmark = pytest.mark.sim

N_STUDIES = 120
NOISE = {"run_sd": 0.05, "step_sd": 0.05, "point_sd": 0.02}
DESIGNS = {"default": {"seeds_per_rank": 1}, "two_orders": {"seeds_per_rank": 2}}
NEW_RANKS = (8, 256)  # inside the studied P, and 4x beyond it


@dataclass
class Tally:
    cover_a: list[bool] = field(default_factory=list)
    cover_b: list[bool] = field(default_factory=list)
    cover_new: dict[int, list[bool]] = field(default_factory=lambda: {r: [] for r in NEW_RANKS})
    states: list[str] = field(default_factory=list)


def simulate(design: str) -> Tally:
    out = Tally()
    for s in range(N_STUDIES):
        rng = np.random.default_rng(10_000 + s)
        rows, truth = synthetic_study(rng, **DESIGNS[design], **NOISE)
        fit = fit_study(rows, laws=["kl_power"], n_boot=0)["synth"]["kl_power"]
        (la, ha), (lb, hb) = fit.intervals["a"], fit.intervals["b"]
        out.cover_a.append(la <= truth.exponents["a"] <= ha)
        out.cover_b.append(lb <= truth.exponents["b"] <= hb)
        out.states.append(reliability(fit, "forget_kl").state)
        for rank in NEW_RANKS:  # a new run with its own data order: new run effect, new step shocks
            new, _ = synthetic_study(rng, ranks=(rank,), **NOISE)
            pts = [r for r in new if r["step"] > 0]
            P = np.array([r["P"] for r in pts])
            N = np.array([r["step"] for r in pts], dtype=float)
            kl = np.array([r["forget_kl"] for r in pts])
            _, lo, hi = fit.predict({"P": P, "N": N})
            out.cover_new[rank].extend((lo[0] <= kl) & (kl <= hi[0]))
    return out


@pytest.fixture(scope="module", params=sorted(DESIGNS))
def tally(request) -> tuple[str, Tally]:
    return request.param, simulate(request.param)


def test_exponent_intervals_cover(tally):
    # measured: default a 0.93 / b 0.89; two_orders a 0.95 / b 0.93 (old code, default: b 0.31)
    design, t = tally
    print(design, "a", np.mean(t.cover_a), "b", np.mean(t.cover_b), {r: np.mean(h) for r, h in t.cover_new.items()},
          {s: t.states.count(s) for s in set(t.states)})
    assert np.mean(t.cover_a) >= 0.85, (design, np.mean(t.cover_a))
    assert np.mean(t.cover_b) >= 0.85, (design, np.mean(t.cover_b))


def test_prediction_intervals_cover_a_new_run(tally):
    # measured: default 0.98 (rank 8) / 0.99 (rank 256); two_orders 0.99 / 0.99 (conservative: the run-level
    # variance from 4-8 leave-one-run-out errors is wide on t_{G-1}); the old calibration: 0.81 / 0.85
    design, t = tally
    for rank, hits in t.cover_new.items():
        assert np.mean(hits) >= 0.90, (design, rank, np.mean(hits))


def test_a_correct_law_is_rarely_called_unreliable(tally):
    # measured: 0 unreliable in either design, undecided 12/120 (default) and 3/120 (two_orders); the old rule
    # (one draw against 10%) called this correct law unreliable in 27-47% of studies
    design, t = tally
    states = np.array(t.states)
    assert np.mean(states == "unreliable") <= 0.10, (design, {s: int(np.sum(states == s)) for s in set(t.states)})
    assert np.mean(states == "reliable") >= 0.5, (design, {s: int(np.sum(states == s)) for s in set(t.states)})
