"""Scaling laws for forgetting: law forms, robust fits, predictions and plans (pure numpy/scipy).

    forms.py      LawForm, coordinates, the registry, linear (Eq. 4)
    paper.py      paper (Eq. 5 + 6), reported in its fitting gauge, scales bounded
    power.py      kl_power and additive (Chinchilla)
    optimize.py   Huber-on-log-residual objective, L-BFGS-B from data-driven starts
    intervals.py  intervals over runs and data orders: parameters, and prediction intervals for a new run
    validate.py   held-out splits, their error of change, and its noise floor
    fit.py        fit_law and FitResult
    rows.py       measurement rows -> fits per dataset (fit_study)
    select.py     reliability (reliable / unreliable / undecided), comparison table, choice of law
    predict.py    predict and plan from reliable laws
    findings.py   the paper's findings F1-F6 as verdicts with evidence
    f6.py         F6: task_kl against ft_loss as predictors of held-out forgetting
    frontier.py   mitigations against plain LoRA's line
"""

from forgetscale.laws.findings import findings
from forgetscale.laws.fit import FitError, FitResult, fit_law
from forgetscale.laws.forms import LAWS, LawForm, get_law, register_law
from forgetscale.laws.paper import paper_gauge
from forgetscale.laws.power import additive_varpro
from forgetscale.laws.predict import PlanError, plan, predict
from forgetscale.laws.rows import LawSpec, fit_study, law_specs, rows_to_arrays
from forgetscale.laws.select import (
    RELIABLE_ERROR,
    Reliability,
    choose_law,
    comparison_table,
    heldout_error,
    heldout_errors,
    reliability,
)

__all__ = [
    "LAWS",
    "RELIABLE_ERROR",
    "FitError",
    "FitResult",
    "LawForm",
    "LawSpec",
    "PlanError",
    "Reliability",
    "additive_varpro",
    "choose_law",
    "comparison_table",
    "findings",
    "fit_law",
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
