"""Simulation tier for reliability: a law biased beyond the limit is not called reliable, a correct one not unreliable.

Studies from :func:`tests.sim.synth.synthetic_study` (ranks 1/4/16/64, one data order, steps 8-32; run 0.05,
step 0.05, point 0.02 on log KL), ``kl_power`` fitted to ``forget_kl``. The biased case lowers the points the
held-out splits score (the largest rank and the last step) by 25%, so the law's forecasts there are 33% high:
more than the 15% limit. Fixed seeds; each bound is the nominal 5% plus 1.96 binomial sds at S studies.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from forgetscale.laws.rows import fit_study
from forgetscale.laws.select import reliability
from tests.sim.synth import synthetic_study

pytestmark = pytest.mark.sim
S = 100
BOUND = math.floor(S * (0.05 + 1.96 * math.sqrt(0.05 * 0.95 / S)))  # 9


def _states(biased: bool) -> Counter:
    out: Counter = Counter()
    for s in range(S):
        rows, _ = synthetic_study(np.random.default_rng(7000 + s), run_sd=0.05, step_sd=0.05, point_sd=0.02,
                                  steps=(8, 12, 16, 24, 32))  # fmt: skip
        if biased:
            rows = [{**r, "forget_kl": 0.75 * r["forget_kl"], "forget_ce": r["base_entropy"] + 0.75 * r["forget_kl"]}
                    if r["step"] > 0 and (r["rank"] == 64 or r["step"] == 32) else r for r in rows]  # fmt: skip
        fit = fit_study(rows, laws=["kl_power"], n_boot=0)["synth"]["kl_power"]
        out[reliability(fit, "forget_kl").state] += 1
    return out


def test_a_law_biased_beyond_the_limit_is_not_called_reliable():
    """Reliable needs both splits' one-sided 95% upper bounds <= 15%: at most 5% of studies for a law biased by
    exactly the limit, fewer beyond it. Measured 0/100 reliable (100 undecided: with one held-out rank-64 run
    the lower bound rarely clears the limit either). The point-error rule before called a 12%-biased
    saturating law reliable in most studies."""
    v = _states(biased=True)
    assert v["reliable"] <= BOUND, v


def test_a_correct_law_is_not_called_unreliable_and_its_reliable_rate_is_stated():
    """The correct law: unreliable at most at 5% (+ MC). Measured 3/100 reliable, 97 undecided, 0 unreliable:
    in this design one held-out run cannot vouch for 15% (the bound's noise is the held-out run's effect plus
    the refit's extrapolation to 4x the rank), so a correct law is mostly undecided, and still predicts."""
    v = _states(biased=False)
    assert v["unreliable"] <= BOUND, v
