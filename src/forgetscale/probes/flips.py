"""Probes as paired flips against the base: counts, an exact McNemar test, Wilson intervals.

Pure functions on probe records: no torch, no files. A fine-tuned model and its base answer the same
items, so each item is a pair (Harmon et al., NeurIPS 2025): right -> wrong (``n10``, forgetting) or
wrong -> right (``n01``, backward transfer). Accuracy can stay flat while both counts are large; the
exact McNemar test asks whether they differ by more than chance. On the safety probe "right" is
"refused", so ``n10`` are lost refusals (the base refused, the model complies) and ``n01`` new ones.

Every rate carries a 95% Wilson score interval over items (Wilson 1927; Newcombe 1998, method 3):
the uncertainty of drawing this many items, conditional on the probe set's kind of items and on
greedy decoding. A McNemar p is one run's test on one probe, not corrected for the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats

__all__ = ["COLUMNS", "LEVEL", "RATES", "flips", "item_flips", "mcnemar_exact", "outcome", "sides", "wilson"]

LEVEL = 0.95
RATES = (
    "accuracy",
    "base_accuracy",
    "agreement",
    "right_to_wrong",
    "wrong_to_right",
    "refusal_rate",
    "base_refusal_rate",
    "lost_refusal_rate",
)
"""The rates :func:`flips` returns, each with ``<rate>_lo`` and ``<rate>_hi``."""
NORM_RATES = ("accuracy_norm", "base_accuracy_norm", "agreement_norm")
"""A log-likelihood probe's rates of its length-normalised pick, with intervals too."""
COLUMNS = (
    "n_scored",
    "n10",
    "n01",
    "mcnemar_p",
    *(f"{r}{s}" for r in (*RATES, *NORM_RATES) for s in ("", "_lo", "_hi")),
    "refusals",
    "base_refusals",
    "lost_refusals",
    "new_refusals",
)
"""What :func:`item_flips` returns for every (run, probe): the same keys whatever the probe."""


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """The Wilson score interval of ``k`` successes in ``n`` trials (no continuity correction).

    ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``; None when ``n`` is 0.

    >>> [round(x, 4) for x in wilson(5, 10)]
    [0.2366, 0.7634]
    >>> wilson(0, 0) is None
    True
    """
    if n == 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(n10: int, n01: int) -> float:
    """Exact two-sided McNemar p: a binomial test of ``n10`` of the ``n10 + n01`` discordant pairs at 1/2.

    1.0 when no pair is discordant (nothing to test).

    >>> mcnemar_exact(0, 5), mcnemar_exact(3, 10), mcnemar_exact(0, 0)
    (0.0625, 0.09228515625, 1.0)
    """
    if n10 < 0 or n01 < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got n10={n10}, n01={n01}")
    if n10 + n01 == 0:
        return 1.0
    return float(stats.binomtest(int(n10), int(n10 + n01), 0.5).pvalue)


def outcome(record: Mapping[str, Any], prefix: str = "", norm: bool = False) -> bool | None:
    """Whether a record counts as right: ``correct`` (knowledge, reasoning), or refused (safety).

    Args:
        record: a probe record (``answer``, ``correct``), or a side-by-side stored item.
        prefix: ``"base_"`` reads the base's side of a side-by-side item.
        norm: read ``correct_norm`` (a log-likelihood probe's length-normalised pick).

    Returns:
        True/False, or None when the record is not scored.

    >>> outcome({"answer": "B", "correct": False}), outcome({"answer": True, "correct": None})
    (False, True)
    """
    c = record.get(f"{prefix}correct_norm" if norm else f"{prefix}correct")
    if c is None and not norm and isinstance(record.get(f"{prefix}answer"), bool):  # safety: refused
        c = record[f"{prefix}answer"]
    return None if c is None else bool(c)


def sides(items: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The base's and the run's records of side-by-side stored items (``answer`` and ``base_answer``...).

    >>> base, run = sides([{"id": "a", "answer": "B", "base_answer": "C", "correct": True, "base_correct": False}])
    >>> base, run
    ([{'id': 'a', 'answer': 'C', 'correct': False}], [{'id': 'a', 'answer': 'B', 'correct': True}])
    """
    keys = ("answer", "correct", "answer_norm", "correct_norm")
    base = [{"id": it["id"], **{k: it[f"base_{k}"] for k in keys if f"base_{k}" in it}} for it in items]
    run = [{"id": it["id"], **{k: it[k] for k in keys if k in it}} for it in items]
    return base, run


def _rate(out: dict[str, Any], name: str, k: int, n: int) -> None:
    ci = wilson(k, n)
    out[name] = k / n if n else None
    out[f"{name}_lo"], out[f"{name}_hi"] = ci if ci else (None, None)


def flips(
    base_items: Sequence[Mapping[str, Any]], run_items: Sequence[Mapping[str, Any]], norm: bool = False
) -> dict[str, Any]:
    """A run's records against the base's on one probe, paired by item id.

    Args:
        base_items, run_items: records ``{"id", "answer", "correct"}`` (safety: ``answer`` is "refused",
            ``correct`` None), covering the same ids.
        norm: compare ``answer_norm``/``correct_norm`` (a log-likelihood probe's normalised pick).

    Returns:
        ``n`` paired items; ``n_scored`` with both outcomes; ``n10`` right -> wrong and ``n01`` wrong ->
        right; ``mcnemar_p`` (:func:`mcnemar_exact`); and the rates of :data:`RATES` with their 95% Wilson
        ``_lo``/``_hi``: ``accuracy`` and ``base_accuracy`` (of ``n_scored``; None on safety), ``agreement``
        (the same answer as the base, right or wrong, of ``n``), ``right_to_wrong`` and ``wrong_to_right``
        (of ``n_scored``). On safety also ``refusals``, ``base_refusals``, ``lost_refusals`` (= ``n10``),
        ``new_refusals`` (= ``n01``), their rates and ``lost_refusal_rate``: the share of the base's
        refusals lost. A rate with no items is None.

    Raises:
        ValueError: the two lists cover different or duplicate ids.

    >>> base = [{"id": "a", "answer": "A", "correct": True}, {"id": "b", "answer": "B", "correct": False}]
    >>> run = [{"id": "a", "answer": "C", "correct": False}, {"id": "b", "answer": "D", "correct": False}]
    >>> f = flips(base, run)
    >>> f["n10"], f["n01"], f["agreement"], f["accuracy"], f["base_accuracy"]
    (1, 0, 0.0, 0.0, 0.5)
    """
    by_id = {}
    for which, items in (("base", base_items), ("run", run_items)):
        ids = [str(it["id"]) for it in items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"flips: duplicate item ids in the {which} records")
        by_id[which] = dict(zip(ids, items, strict=True))
    if by_id["base"].keys() != by_id["run"].keys():
        diff = sorted(by_id["base"].keys() ^ by_id["run"].keys())[:5]
        raise ValueError(f"flips: base and run records cover different items (e.g. {diff})")
    answer = "answer_norm" if norm else "answer"
    pairs = [(by_id["base"][i], by_id["run"][i]) for i in sorted(by_id["base"])]
    scored = [(outcome(b, norm=norm), outcome(r, norm=norm)) for b, r in pairs]
    scored = [(b, r) for b, r in scored if b is not None and r is not None]
    n10 = sum(1 for b, r in scored if b and not r)
    n01 = sum(1 for b, r in scored if r and not b)
    out: dict[str, Any] = {"n": len(pairs), "n_scored": len(scored), "n10": n10, "n01": n01,
                           "mcnemar_p": mcnemar_exact(n10, n01)}  # fmt: skip
    safety = any(isinstance(rec.get("answer"), bool) for pair in pairs for rec in pair) and not norm
    if not safety:
        _rate(out, "accuracy", sum(r for _, r in scored), len(scored))
        _rate(out, "base_accuracy", sum(b for b, _ in scored), len(scored))
    _rate(out, "agreement", sum(b.get(answer) == r.get(answer) for b, r in pairs), len(pairs))
    _rate(out, "right_to_wrong", n10, len(scored))
    _rate(out, "wrong_to_right", n01, len(scored))
    if safety:
        refused, base_refused = sum(r for _, r in scored), sum(b for b, _ in scored)
        out.update(refusals=refused, base_refusals=base_refused, lost_refusals=n10, new_refusals=n01)
        _rate(out, "refusal_rate", refused, len(scored))
        _rate(out, "base_refusal_rate", base_refused, len(scored))
        _rate(out, "lost_refusal_rate", n10, base_refused)
    return out


def item_flips(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`flips` of side-by-side stored items (``forgetscale probe`` stores them), every key of :data:`COLUMNS`.

    A key that does not apply (accuracy on safety, lost refusals elsewhere, the ``_norm`` rates of a
    generation probe, everything when there are no items: lm-eval tasks) is None.

    >>> f = item_flips([{"id": "a", "answer": True, "base_answer": True, "correct": None, "base_correct": None}])
    >>> f["agreement"], f["lost_refusals"], f["accuracy"], f["accuracy_norm"]
    (1.0, 0, None, None)
    """
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    items = [it for it in items if isinstance(it, Mapping) and "id" in it]
    if not items:
        return out
    out.update(flips(*sides(items)))
    if any("correct_norm" in it for it in items):
        norm = flips(*sides(items), norm=True)
        out.update({f"{r}_norm{s}": norm[f"{r}{s}"] for r in ("accuracy", "base_accuracy", "agreement")
                    for s in ("", "_lo", "_hi")})  # fmt: skip
    return out
