"""Methods against LoRA at equal fine-tuning loss (``laws.methods``): verdicts, interval and F7 at the
``methods`` preset's design, on studies whose truth is known.

The design. The reference, LoRA, has 4 runs (ranks 4 and 16 x data orders 0 and 1); every other method 2
(data orders 0 and 1). Each run is evaluated at steps 4, 8 and 12, all used (the preset's min_step is 4).
Runs of one data order saw the same batches, so they share its step shocks, across methods too.

The truth. ft_loss falls linearly in log step over each method's own range (:data:`FT`, nats at step 4
and 12: 2.25 -> 1.4 in all, ranges that overlap partly); every method sits on its own line
``forget_ce = s_m - C * ft_loss``, parallel to LoRA's, ``s_m = s_lora + d_m``, so ``d_m`` is the true
difference at every ft_loss. LoRA's line: the base forget_ce :data:`BASE` = 2.0, forgetting 0.3 nats at
ft_loss 2.2 and 0.6 at 1.4 (``C`` = 0.375). The noise, in nats of forget_ce (additive, so the line is the
mean: ``synth.py``'s log-scale sds times a forgetting of ~0.45, with a larger run effect):

- a run effect, sd :data:`RUN_SD` per method (0.04 for LoRA; 0.03-0.05 for the others);
- a step shock shared by the runs of a data order, sd 0.02 (``synth``'s 0.05 on log KL);
- point noise, sd 0.01 (``synth``'s 0.02 on log KL; 0.01 of 0.45 nats);
- ft_loss measurement noise, sd 0.02 (as in ``test_sim_frontier``).

The margin at which a method is ``same`` is 20% of LoRA's forgetting at the compared points: for the
true margin, LoRA's true line at the method's true ft_loss inside LoRA's true range. The base forget_ce
is known (every run's step 0 is the base model). Each of :data:`N_STUDIES` studies is drawn once with
every difference 0, and a true difference is added to a method's forget_ce: so every case sees the same
studies, and a study with one method at 3x its margin and the others at 0 is that study's rows at those
shifts (F7). Monte Carlo error: ``laws_mc.band``, the two-sided 95% band of a rate over the studies
(1.35 points at 5%, 0.97 at 2.5%).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from forgetscale.laws.methods import MARGIN, compare_method, f7
from tests.sim.laws_mc import band
from tests.sim.synth import step_shock_paths

pytestmark = pytest.mark.sim
STEPS = np.array([4, 8, 12], float)
ORDERS = 2
BASE, C = 2.0, 0.375
S_REF = BASE + 0.3 + C * 2.2  # LoRA's line: forgetting 0.3 at ft_loss 2.2, 0.6 at 1.4
FT = {"lora4": (2.1, 1.6), "lora16": (2.0, 1.45), "dora": (2.05, 1.55), "lora-mlp": (2.2, 1.7),
      "ia3": (2.25, 1.9), "full": (1.9, 1.4)}  # fmt: skip
"""Each run's true ft_loss at step 4 and 12 (linear in log step between)."""
RUN_SD = {"lora": 0.04, "dora": 0.04, "lora-mlp": 0.03, "ia3": 0.05, "full": 0.05}
STEP_SD, POINT_SD, FT_SD = 0.02, 0.01, 0.02
METHODS = ("dora", "lora-mlp", "ia3", "full")
SHIFTS = (0.0, 1.0, -1.0, 3.0)
N_STUDIES = 1000


def true_ft(run: str) -> np.ndarray:
    a, b = FT[run]
    return a - (a - b) * np.log(STEPS / 4) / np.log(3)


def true_margin(method: str) -> float:
    """MARGIN of LoRA's true forgetting at the method's true ft_loss inside LoRA's true range."""
    lo, hi = min(min(FT["lora4"]), min(FT["lora16"])), max(max(FT["lora4"]), max(FT["lora16"]))
    x = true_ft(method)
    x = x[(x >= lo) & (x <= hi)]
    return MARGIN * float(np.mean(S_REF - C * x - BASE))


def study(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """One study with every true difference 0: LoRA's points and each of :data:`METHODS`' points.

    A true difference ``d`` is then ``d`` added to the method's forget_ce: the same noise, so the cases
    below see each study at every difference.
    """
    shocks = step_shock_paths(rng, ORDERS, STEPS.size, STEP_SD)

    def runs(method: str, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
        cols: dict[str, list[Any]] = {"ft_loss": [], "forget_ce": [], "run_id": [], "step": []}
        for kind in kinds:
            x = true_ft(kind)
            for o in range(ORDERS):
                noise = rng.normal(0, RUN_SD[method]) + shocks[o] + rng.normal(0, POINT_SD, STEPS.size)
                cols["ft_loss"] += list(x + rng.normal(0, FT_SD, STEPS.size))
                cols["forget_ce"] += list(S_REF - C * x + noise)
                cols["run_id"] += [f"{kind}-o{o}"] * STEPS.size
                cols["step"] += list(STEPS)
        return {k: np.array(v) for k, v in cols.items()}

    return runs("lora", ("lora4", "lora16")), {m: runs(m, (m,)) for m in METHODS}


@cache
def simulate() -> dict[float, dict[str, list[dict[str, Any]]]]:
    """:func:`compare_method` rows per shift (true difference over the method's true margin) and method."""
    out: dict[float, dict[str, list[dict[str, Any]]]] = {k: {m: [] for m in METHODS} for k in SHIFTS}
    for s in range(N_STUDIES):
        ref, other = study(np.random.default_rng(20_000 + s))
        for k in SHIFTS:
            for m in METHODS:
                pts = {**other[m], "forget_ce": other[m]["forget_ce"] + k * true_margin(m)}
                out[k][m].append({"method": m, **compare_method(ref, pts, BASE)})
    return out


def rate(shift: float, method: str, *verdicts: str) -> float:
    return float(np.mean([r["verdict"] in verdicts for r in simulate()[shift][method]]))


def f7_rate(shifts: dict[str, float], verdict: str) -> float:
    """The rate of F7's ``verdict`` over the studies with each method at its shift (0 where not named)."""
    rows = simulate()
    return float(np.mean([f7("d", [rows[shifts.get(m, 0.0)][m][i] for m in METHODS], "lora")["verdict"] == verdict
                          for i in range(N_STUDIES)]))  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("side", (1.0, -1.0))
def test_same_is_said_at_most_5_percent_of_a_method_at_its_margin(method, side):
    """A method exactly at ±margin is ``same`` at most 5% of the time (+ 1.35%, the band over 1000).

    Measured (+margin / -margin): dora 4.2% / 4.9%, lora-mlp 3.2% / 1.9%, ia3 4.3% / 3.7%, full 4.7% / 5.3%.
    ia3 and full spread more than LoRA (run sd 0.05 against 0.04), which the interval does not know of (it
    assumes the reference's spread). At the preset's earlier design (16 steps, four evaluations) full was
    ``same`` at its margin 5.75% / 5.5% of the time over 4000 studies, and 7.2% / 6.9% were its run sd 0.06.
    There, before the one-sided tests took the margin's share of the line's error, a method spreading as
    LoRA does was ``same`` at +margin 4.5% and at -margin 3.5% (4000 studies; 4.0% and 3.9% with them): the
    fitted line's error moves the difference and the margin in opposite directions.
    """
    assert rate(side, method, "same") <= 0.05 + band(0.05, N_STUDIES)


@pytest.mark.parametrize("method", METHODS)
def test_a_zero_difference_is_called_a_difference_at_most_5_percent(method):
    """True difference 0: ``forgets_less`` or ``forgets_more`` (the 95% interval off 0) at most 5% + 1.35%.
    Measured: dora 3.5%, lora-mlp 0.9%, ia3 4.2%, full 2.8%."""
    assert rate(0.0, method, "forgets_less", "forgets_more") <= 0.05 + band(0.05, N_STUDIES)


@pytest.mark.parametrize("method", METHODS)
def test_the_95_percent_interval_covers_the_true_difference(method):
    """Each tail at most 2.5% + 0.97% (the band over 1000), and coverage not above 99% (an interval far
    too wide would be a defect too). ``lo`` and ``hi`` move with the difference exactly (LoRA's points
    alone set the interval's width), so the studies at difference 0 say it for every difference.
    Measured (true < lo, true > hi, coverage): dora 2.9%, 2.2%, 94.9%; lora-mlp 0.9%, 1.2%, 97.9%
    (runs spreading less than LoRA's: the interval is wider than it needs); ia3 2.5%, 2.8%, 94.7%;
    full 2.6%, 2.4%, 95.0% (runs spreading more).
    """
    rows = simulate()[0.0][method]
    below = float(np.mean([r["lo"] > 0.0 for r in rows]))
    above = float(np.mean([r["hi"] < 0.0 for r in rows]))
    assert below <= 0.025 + band(0.025, N_STUDIES), below
    assert above <= 0.025 + band(0.025, N_STUDIES), above
    assert 1 - below - above <= 0.99


SAME_FLOOR = {"dora": 0.28, "lora-mlp": 0.27, "ia3": 0.12, "full": 0.30}
MORE_FLOOR = {"dora": 0.97, "lora-mlp": 0.97, "ia3": 0.92, "full": 0.97}


@pytest.mark.parametrize("method", METHODS)
def test_power_at_the_presets_design(method):
    """The preset's design shows equivalence seldom. True difference 0: ``same`` in 34% (dora), 35%
    (lora-mlp), 17% (ia3: it meets LoRA only at ft_loss 1.9-2.1, where LoRA forgets least, so its margin
    is the smallest) and 33% (full) of studies; the rest are mostly ``undecided``. With 4 reference runs
    the interval has ~3.2 df, and its 90% half-width (t 2.35 x se ~0.04) is about the margin (0.08-0.1
    nats). True difference 3x margin: ``forgets_more`` in 99.1%, 99.5%, 96.2% and 99.4%. Floors sit a
    few points (about 2 Monte Carlo sd) below the measured rates."""
    assert rate(0.0, method, "same") >= SAME_FLOOR[method]
    assert rate(3.0, method, "forgets_more") >= MORE_FLOOR[method]


def test_f7_when_no_method_changes_forgetting():
    """Every difference 0: F7 ``supported`` (all four ``same`` at once) in only 9.9% of studies;
    ``not_supported`` in 0.1%. Low power, as each method alone is ``same`` 17-35% of the time."""
    assert f7_rate({}, "supported") >= 0.06
    assert f7_rate({}, "not_supported") <= 0.05 + band(0.05, N_STUDIES)


@pytest.mark.parametrize("side", (1.0, -1.0))
def test_f7_with_every_method_at_its_margin(side):
    """Every method at +margin (or -margin): F7 ``supported`` at most 5% + 1.35% (measured 0.1% / 0.3%:
    all four must pass their 5% test), and ``not_supported`` (a difference beyond the margin at the
    Bonferroni level) at most 5% + 1.35% too (measured 2.0% / 1.4%)."""
    shifts = dict.fromkeys(METHODS, side)
    assert f7_rate(shifts, "supported") <= 0.05 + band(0.05, N_STUDIES)
    assert f7_rate(shifts, "not_supported") <= 0.05 + band(0.05, N_STUDIES)


NOT_SUPPORTED_FLOOR = {"dora": 0.42, "lora-mlp": 0.38, "ia3": 0.25, "full": 0.47}


@pytest.mark.parametrize("method", METHODS)
def test_f7_finds_one_method_at_3x_its_margin(method):
    """One method 3x its margin above LoRA, the others on LoRA's line: F7 ``not_supported`` in 46% (dora),
    46% (lora-mlp), 33% (ia3) and 50% (full) of studies, the rest ``undecided``: the Bonferroni interval
    over four methods (98.75%, ~3.2 df) must clear the margin. Floors a few points below."""
    assert f7_rate({method: 3.0}, "not_supported") >= NOT_SUPPORTED_FLOOR[method]
    assert f7_rate({method: 3.0}, "supported") <= 0.05 + band(0.05, N_STUDIES)
