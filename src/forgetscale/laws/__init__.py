"""Scaling laws for forgetting: law forms, robust fits, predictions and plans (pure numpy/scipy).

    forms.py      LawForm, coordinates, the registry, linear (Eq. 4)
    paper.py      paper (Eq. 5 + 6), reported in its fitting gauge, scales bounded
    power.py      kl_power and additive (Chinchilla)
    optimize.py   Huber-on-log-residual objective, L-BFGS-B from data-driven starts
    validate.py   bootstrap over runs, held-out splits and their error of change
    intervals.py  prediction intervals for a new run, calibrated on leave-one-run-out errors
    fit.py        fit_law and FitResult
    study.py      measurement rows -> fits per dataset, comparison table, reliability, predict, plan
    findings.py   the paper's findings F1-F5 as verdicts with evidence
"""

from forgetscale.laws.findings import findings
from forgetscale.laws.fit import FitError, FitResult, fit_law
from forgetscale.laws.forms import LAWS, LawForm, get_law, register_law
from forgetscale.laws.paper import paper_gauge
from forgetscale.laws.power import additive_varpro
from forgetscale.laws.study import (
    RELIABLE_ERROR,
    LawSpec,
    PlanError,
    choose_law,
    comparison_table,
    fit_study,
    heldout_error,
    heldout_errors,
    law_specs,
    plan,
    predict,
    reliability,
    rows_to_arrays,
)

__all__ = [
    "LAWS",
    "RELIABLE_ERROR",
    "FitError",
    "FitResult",
    "LawForm",
    "LawSpec",
    "PlanError",
    "additive_varpro",
    "choose_law",
    "comparison_table",
    "fit_law",
    "findings",
    "fit_study",
    "get_law",
    "heldout_error",
    "heldout_errors",
    "law_specs",
    "paper_gauge",
    "plan",
    "predict",
    "register_law",
    "reliability",
    "rows_to_arrays",
]
