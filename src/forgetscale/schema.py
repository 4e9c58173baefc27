"""The measurement row: what one evaluation of one run at one step records, named once.

Training (:mod:`forgetscale.run`), the callback, the store, the laws and the report all pass
these rows along; the metric names below are the one spelling each of them imports.
"""

from __future__ import annotations

from typing import TypedDict

FORGETTING_METRICS = ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")
"""What :func:`forgetscale.forgetting.measure` computes against the base reference (defined in docs/inference.md)."""
METRICS = ("ft_loss", *FORGETTING_METRICS)
"""Every metric of a row: the fine-tuning loss on held-out data, then the forgetting metrics."""
SE_METRICS = ("ft_loss", "forget_ce", "forget_kl")
"""Metrics recorded with their standard error over sequences (``<name>_se``)."""
SUMMARY_METRICS = ("top1_agree", "top1_agree_se", "kl_p50", "kl_p99", "forget_rkl", "task_kl", "task_kl_se")
"""llama.cpp-style summary figures of a row (None where the source cannot give them):
``top1_agree`` (share of positions whose top token is the base's, se over sequences), the median and
99th percentile of the per-position KL, ``forget_rkl`` (reverse KL(p_ft || p_base); full-logit
reference only) and ``task_kl`` (KL(p_base || p_ft) on the held-out fine-tuning responses)."""
METRIC_VERSION = 3
"""The version of the metric implementation. Raised whenever a change moves any stored number (a formula,
its precision, the corpus protocol): references and study rows record it, a cached reference of another
version is never used, and a study measured under another version refuses to resume."""
POST_HOC_METHODS = ("rescale", "intruders")
"""Post-hoc mitigations measured on a plain run's final adapter (rows keyed by ``method`` and
``strength``, the method's strength, in their own table)."""


class Measurement(TypedDict, total=False):
    """One row: a run measured at one optimizer step (with a post-hoc ``method``: its final adapter
    changed after training, ``strength`` being the method's strength).

    Means are token-weighted over target positions (``seq_kl``: each corpus sequence's mean KL, stored
    apart in ``sequence_kl``); ``*_se`` are standard errors over sequences
    (held-out examples for ``ft_loss``, corpus sequences for the forgetting metrics). A value the
    source cannot give is None. ``ft_loss`` is the held-out response-token cross-entropy in every row; a
    callback row keeps the Trainer's own ``eval_loss`` apart, under that name. ``metric_version`` is the
    :data:`METRIC_VERSION` the row was measured with.
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
    top1_agree: float | None
    top1_agree_se: float | None
    kl_p50: float | None
    kl_p99: float | None
    forget_rkl: float | None
    task_kl: float | None
    task_kl_se: float | None
    seq_kl: list[float]
    eval_loss: float | None
    metric_version: int
    strength: float
    method: str
    n_intruders: int | None


MEASUREMENT_COLUMNS = (
    "step",
    "tokens",
    *METRICS,
    "n_eval_tokens",
    *(f"{m}_se" for m in SE_METRICS),
    *SUMMARY_METRICS,
    "eval_loss",
    "metric_version",
)
"""The store's columns of a row (``strength`` and ``method`` aside), in the table's order."""
