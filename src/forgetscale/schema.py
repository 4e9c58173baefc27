"""The measurement row: what one evaluation of one run at one step records, named once.

Training (:mod:`forgetscale.run`), the callback, the store, the laws and the report all pass
these rows along; the metric names below are the one spelling each of them imports.
"""

from __future__ import annotations

from typing import TypedDict

FORGETTING_METRICS = ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")
"""What :func:`forgetscale.forgetting.measure` computes against the base reference (DESIGN section 2)."""
METRICS = ("ft_loss", *FORGETTING_METRICS)
"""Every metric of a row: the fine-tuning loss on held-out data, then the forgetting metrics."""
SE_METRICS = ("ft_loss", "forget_ce", "forget_kl")
"""Metrics recorded with their standard error over sequences (``<name>_se``)."""


class Measurement(TypedDict, total=False):
    """One row: a run measured at one optimizer step (a ``scale`` other than 1: its adapter rescaled).

    Means are token-weighted over target positions; ``*_se`` are standard errors over sequences
    (held-out examples for ``ft_loss``, corpus sequences for the forgetting metrics). A value the
    source cannot give (the callback's ``ft_loss`` without an ``eval_loss``) is None.
    """

    step: int
    tokens: int
    ft_loss: float | None
    ft_loss_se: float | None
    forget_ce: float
    forget_kl: float
    base_entropy: float
    forget_top1_ce: float
    data_loss: float
    n_eval_tokens: int
    forget_ce_se: float | None
    forget_kl_se: float | None
    scale: float


MEASUREMENT_COLUMNS = (
    "step",
    "tokens",
    *METRICS,
    "n_eval_tokens",
    *(f"{m}_se" for m in SE_METRICS),
)
"""The store's columns of a row (``scale`` aside), in the table's order."""
