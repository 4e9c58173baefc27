"""Simulation tier for F5: it fails where its claim is false, and keeps its size at its margin.

Probe records come from ``test_sim_findings._probe`` (items the base gets right with probability ``base_acc``;
per run an answer changes with probability ``p_change``; a changed right answer is lost with probability
``p_loss``, a changed wrong one becomes right with probability ``p_gain``). F5's statistic is
``made_up = 1 - accuracy drop / right answers that changed``; its margin is 0.5. Fixed seeds; with S studies
a rate r has binomial sd sqrt(r(1-r)/S), and each bound below is the nominal rate plus 1.96 of those sds.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from forgetscale.laws.findings import f5
from tests.sim.test_sim_findings import _probe

pytestmark = pytest.mark.sim


def _rates(n: int, start: int, p_change: float, p_loss: float, p_gain: float, base_acc: float) -> Counter:
    return Counter(f5("d", _probe(np.random.default_rng(start + s), 100, p_change, p_loss, p_gain, base_acc=base_acc),
                      seed=s)["verdict"] for s in range(n))  # fmt: skip


@pytest.mark.parametrize("base_acc", [0.5, 0.6, 0.8])
def test_f5_not_supported_when_every_changed_right_answer_is_lost(base_acc):
    """Every right answer that changes is lost and wrong answers only change to other wrong ones: the claim is
    false, though agreement still falls further than accuracy. 100 studies of 100 items x 3 runs: measured
    100/100 not_supported at each accuracy (300/300 in a 300-study run); the statistic before (agreement drop
    minus accuracy drop) is at least the wrong-to-wrong share here,
    0.3 x (1 - base_acc), so it could not fail. At a true 99% the observed rate is >= 95 with probability
    0.9995."""
    v = _rates(100, 5000, 0.3, 1.0, 0.0, base_acc)
    assert v["not_supported"] >= 95 and v["supported"] == 0, v


@pytest.mark.parametrize(("p_loss", "p_gain"), [(0.5, 0.0), (1.0, 0.75)], ids=["half lost", "losses half made up"])
def test_f5_supported_at_most_at_its_size_at_the_margin(p_loss, p_gain):
    """made_up exactly at the margin 0.5, two ways (base accuracy 0.6): half the changed right answers kept; or
    all lost and the changed wrong ones gained at 0.75, so gains make up half. Supported is a one-sided 5%
    test: 300 studies, bound 5% + 1.96 sqrt(.05 x .95 / 300) = 7.5% (22 studies). Measured 11/300 both ways
    (not_supported 14 and 17)."""
    s = 300
    v = _rates(s, 5000, 0.3, p_loss, p_gain, 0.6)
    assert v["supported"] <= math.floor(s * (0.05 + 1.96 * math.sqrt(0.05 * 0.95 / s))), v
    assert v["not_supported"] <= math.floor(s * (0.05 + 1.96 * math.sqrt(0.05 * 0.95 / s))), v
