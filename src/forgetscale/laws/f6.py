"""F6, RL's Razor: does the new task's own KL predict forgetting better than the fine-tuning loss does?

Shenfeld et al. (2025) find that ``task_kl``, the forward KL between base and fine-tuned model on the
new task's data (:mod:`forgetscale.task`), predicts forgetting whatever the algorithm (R² ≈ 0.96 in
their controlled setting). A study records it beside ``ft_loss`` at every step of every run, so the
two can be compared as predictors of forgetting on the corpus, by the error of predicting runs the
fit did not see — not by R², which rewards fitting the same runs and says nothing of a new one.

The comparison (:func:`f6`):

- target: ``forget_kl`` on the corpus (``forget_ce`` less the base entropy, constant per corpus: the
  same errors as ``forget_ce``), at every step from ``min_step`` on (never step 0);
- each predictor ``x`` enters the same flexible curve, ``forget_kl ~ 1 + spline3(x)`` (a natural cubic
  spline of 3 df, knots at the training points' quartiles-by-thirds, linear beyond them), so that
  neither wins because forgetting happens to be more nearly linear in it;
- leave one run out: fit on the other runs, predict the held-out run's points; its error is their
  root mean square (nats of forget_kl). Runs are the independent units;
- one margin, stated in advance: ``task_kl`` must cut the held-out error by at least
  :data:`F6_MARGIN` (10%) of ``ft_loss``'s. The test statistic per run is
  ``d = (1 - margin) e_ft - e_task``; its mean gets a t interval over the G runs (paired: both errors of
  a run come from the same held-out points), with the variance of Nadeau & Bengio (2003) for
  cross-validated errors, ``(1/G + n_test/n_train) s^2`` rather than ``s^2 / G`` (see below), on
  Satterthwaite's df for runs whose errors differ in size (G - 1 when they are equal; see below).
  Supported: a one-sided 5% t test rejects "mean d <= 0" (the 90% interval lies above 0); not supported:
  one rejects "mean d >= 0" (it lies below 0: task_kl does not beat ft_loss by the margin, being no
  better or worse); otherwise undecided. The 95% intervals are reported beside it.
- fewer than :data:`F6_MIN_RUNS` runs with ``task_kl`` at two or more steps (an old store records
  none): undecided, with the reason.

Why the corrected variance. The G held-out errors are not independent: each fold's curve is fitted
to the other G - 1 runs, so any two folds share G - 2 of their training runs, and runs of one data
order share its step shocks. Positive correlation between the ``d`` of different runs makes ``s^2 / G``
too small (on simulated studies at the margin, the variance of the mean ``d`` was 2.0-2.1x the mean of
``s^2 / G``, and the plain t test said ``supported`` in 13% of studies against its 5%). Nadeau and
Bengio's correction models the correlation between fold errors as ``n_test / n`` (here about
``1 / G`` per pair, from the training the folds share); it multiplies the variance by
``1 + G n_test/n_train`` (2.1x at 8 runs, 2.3x at 4), and is not fitted to these simulations.
``n_test/n_train`` is the folds' mean of held-out points over training points (``1/(G - 1)`` when runs
have equal points).

Why fewer df than G - 1. A run's ``d`` is a difference of RMS errors, whose sd grows with their size; the
top rank's errors are the largest, and its ``d`` had 2-3x the sd of the middle ranks'. ``s^2`` then rests
on fewer effective runs than G - 1 and the t's tails are heavier than t(G - 1): at the margin the
corrected variance was large enough on average (1.17x the true one with one data order, 1.05x with two),
yet the test said supported in 5.9% (one order) and 5.8% (two) of 4000 studies. The df are Satterthwaite's
for a sample variance of values whose variances are proportional to ``(0.81 e_ft^2 + e_task^2) / n``
(:func:`forgetscale.laws.heldout_compare.unequal_runs_df`, from the sd ``e / sqrt(2n)`` of an RMS error; about
2.5 at 4 runs, 4.9 at 8): supported 4.9% with one order and 4.75% with two, not_supported 4.7% and 4.9%. Its
cost: the power of ``tests/sim/test_sim_f6.py`` fell from 80.5% to 68% at 8 runs. What the simulation tier
measures at the null boundary (task_kl exactly at the margin) is in ``tests/sim/test_sim_margins.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from forgetscale.laws.heldout_compare import ALPHA, LEVEL, curve_design, loro_errors, margin_test, side, t_interval

__all__ = ["F6_ALPHA", "F6_LEVEL", "F6_MARGIN", "F6_MIN_RUNS", "PREDICTORS", "curve_design", "f6", "loro_errors",
           "t_interval"]

F6_MARGIN = 0.1
"""task_kl must predict held-out forgetting with an error at least this fraction below ft_loss's."""
F6_MIN_RUNS = 4
"""Fewer runs and a t interval over runs rests on too few independent units (as F1-F4)."""
F6_LEVEL = LEVEL
"""The level of the intervals reported."""
F6_ALPHA = ALPHA
"""Each verdict is a one-sided test at this level: supported when the 90% interval of the statistic lies above 0
(``task_kl beats ft_loss by less than the margin`` rejected at 5%), not supported when it lies below 0."""
PREDICTORS = ("ft_loss", "task_kl")


def f6(ds: str, cols: Mapping[str, np.ndarray], min_step: float) -> dict[str, Any]:
    """F6: task_kl predicts held-out forgetting better than ft_loss does (see the module docstring).

    Args:
        ds: dataset name.
        cols: columns ``run_id, N, ft_loss, forget_kl`` and ``task_kl`` (NaN where a row has none); optional
            ``seed`` (the data order of each row's run).
        min_step: leave out steps below this (and step 0).

    Returns:
        ``{dataset, finding: "F6", verdict, evidence}``; the evidence holds ``heldout_error`` (both
        predictors: mean over runs and per run, nats of forget_kl), ``error_difference`` (ft_loss's error less
        task_kl's, value and 95% interval), ``statistic`` (mean ``(1 - margin) e_ft - e_task`` with its
        interval), ``margin``, the units and, when undecided, the ``reason``.
    """
    ev: dict[str, Any] = {
        "claim": "the new task's own KL (task_kl) predicts forgetting better than the fine-tuning loss",
        "test": "forget_kl ~ spline3(predictor), leave one run out, RMS error per held-out run; paired "
                f"differences over runs, {F6_LEVEL:.0%} t interval with the Nadeau-Bengio variance for "
                "cross-validated errors ((1/G + n_test/n_train) s^2) on Satterthwaite's df for runs of unequal "
                f"error size; margin {F6_MARGIN:.0%} of ft_loss's "
                "error",
        "units": "runs",
        "target": "forget_kl (nats; forget_ce less the base entropy)",
        "conditional_on": "the studied ranks, steps and data orders"}  # fmt: skip
    task = cols.get("task_kl")
    if task is None or not np.isfinite(np.asarray(task, float)).any():
        return _result(ds, "undecided", reason="no task_kl recorded (a store from before task_kl was measured: "
                       "rerun the study to measure it)", **ev)  # fmt: skip
    task = np.asarray(task, float)
    y, ft = np.asarray(cols["forget_kl"], float), np.asarray(cols["ft_loss"], float)
    keep = (np.asarray(cols["N"], float) >= max(min_step, 1)) & np.isfinite(y) & np.isfinite(ft) & np.isfinite(task)
    runs = np.asarray(cols["run_id"]).astype(str)
    usable = [g for g in np.unique(runs[keep]) if np.sum(keep & (runs == g)) >= 2]
    keep &= np.isin(runs, usable)
    ev |= {"n_runs": len(usable), "n_points": int(keep.sum())}
    if "seed" in cols:
        ev["n_orders"] = len(np.unique(np.asarray(cols["seed"]).astype(str)[keep]))
    if len(usable) < F6_MIN_RUNS:
        return _result(ds, "undecided", reason=f"needs >= {F6_MIN_RUNS} runs with task_kl at 2+ steps "
                       f"(has {len(usable)})", **ev)  # fmt: skip
    y, runs = y[keep], runs[keep]
    errors = {name: loro_errors(x[keep], y, runs) for name, x in (("ft_loss", ft), ("task_kl", task))}
    ev["heldout_error"] = {p: {"value": float(np.mean([errors[p][g] for g in usable])), "per_run": errors[p]}
                           for p in PREDICTORS}  # fmt: skip
    test = margin_test(errors["ft_loss"], errors["task_kl"], 1 - F6_MARGIN, runs)
    ev["variance"] = test["variance"]
    ev["error_difference"] = {**test["error_difference"],
                              "definition": "ft_loss's held-out error less task_kl's (positive: task_kl predicts "
                                            "better)"}  # fmt: skip
    ev["statistic"] = {**test["statistic"],
                       "definition": f"(1 - {F6_MARGIN}) x ft_loss's error - task_kl's error, mean over runs; "
                                     f"verdicts by one-sided {F6_ALPHA:.0%} tests (the 90% interval's ends)"}
    ev["margin"] = {"fraction": F6_MARGIN, "value": F6_MARGIN * ev["heldout_error"]["ft_loss"]["value"],
                    "units": "nats of forget_kl (RMS held-out error)",
                    "definition": f"task_kl's error must be at least {F6_MARGIN:.0%} below ft_loss's"}
    one_sided = {"lo": ev["statistic"]["lo90"], "hi": ev["statistic"]["hi90"]}
    verdict = side(test)
    if verdict != "inside":
        return _result(ds, "supported" if verdict == "above" else "not_supported", **ev)
    return _result(ds, "undecided", reason=f"the statistic's 90% interval [{one_sided['lo']:.3g}, "
                   f"{one_sided['hi']:.3g}] contains 0: task_kl neither beats ft_loss by the margin nor falls short "
                   f"of it, at {len(usable)} runs", **ev)  # fmt: skip


def _result(ds: str, verdict: str, **evidence: Any) -> dict[str, Any]:
    return {"dataset": ds, "finding": "F6", "verdict": verdict, "evidence": evidence}
