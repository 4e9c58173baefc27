"""The report's probe flips: each run's items right -> wrong and wrong -> right against the base.

The numbers are :func:`forgetscale.probes.flips.item_flips`'s, joined to the probe rows by
:mod:`~forgetscale.report.data`; this module turns them into plain-text cells that both renderers
escape and lay out (Markdown tables in :mod:`~forgetscale.report.markdown`, the ``flips.html.j2``
partial of the HTML report), so the two show the same table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from forgetscale.probes.runner import BASE
from forgetscale.report.data import fmt, fmt_pct

__all__ = ["FlipTable", "flip_table", "rate_text"]

FLIPS_TITLE = "Probe flips against the base"
FLIPS_NOTE = (
    "Each fine-tuned run's answers paired item by item with the base model's (Harmon et al., NeurIPS 2025): "
    "right → wrong is forgetting, wrong → right backward transfer; accuracy can stay flat while both are "
    "large. Counts with their share of the scored items; McNemar p: exact two-sided binomial test on the "
    "discordant items, one test per row, not corrected for the others. On safety, right is refused: lost "
    "refusals (the base refused, the run complies) as a share of the base's refusals. Intervals are 95% "
    "Wilson score intervals over items, conditional on this probe set and greedy decoding."
)
FLIP_HEADER = ("probe", "run", "dataset", "rank", "scored items", "right → wrong", "wrong → right", "McNemar p",
               "lost refusals")  # fmt: skip


class FlipTable(NamedTuple):
    """The flips section: its title, what it shows (one paragraph), the table's header and rows of text cells."""

    title: str
    note: str
    header: tuple[str, ...]
    rows: list[list[str]]


def rate_text(row: Mapping[str, Any], key: str) -> str:
    """A rate as a percentage with its 95% interval, ``-`` when unknown.

    >>> rate_text({"accuracy": 0.5, "accuracy_lo": 0.2366, "accuracy_hi": 0.7634}, "accuracy")
    '50% [23.7%, 76.3%]'
    >>> rate_text({"accuracy": 0.5}, "accuracy"), rate_text({}, "accuracy")
    ('50%', '-')
    """
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    interval = f" [{fmt_pct(lo)}, {fmt_pct(hi)}]" if lo is not None and hi is not None else ""
    return fmt_pct(row.get(key)) + interval


def _count(row: Mapping[str, Any], count: str, rate: str) -> str:
    return f"{fmt(row.get(count))} ({rate_text(row, rate)})"


def flip_table(probes: Sequence[Mapping[str, Any]]) -> FlipTable:
    """The flips section: one row of plain-text cells per (fine-tuned run, probe) with scored items.

    Args:
        probes: the report's probe rows (:class:`~forgetscale.report.data.ReportData` ``probes``: ``run_id``,
            ``probe``, ``dataset``, ``rank`` and :func:`~forgetscale.probes.flips.item_flips`'s keys).

    Returns:
        A :class:`FlipTable`; no rows when no fine-tuned run has scored probe items (lm-eval tasks have none).

    >>> row = {"run_id": "r1", "probe": "safety", "dataset": "news", "rank": 8, "n_scored": 10, "n10": 2,
    ...        "n01": 0, "right_to_wrong": 0.2, "wrong_to_right": 0.0, "mcnemar_p": 0.5, "lost_refusals": 2,
    ...        "base_refusals": 4, "lost_refusal_rate": 0.5}
    >>> flip_table([row, {**row, "run_id": "base"}]).rows
    [['safety', 'r1', 'news', '8', '10', '2 (20%)', '0 (0%)', '0.5', '2 of 4 (50%)']]
    """
    rows = []
    for p in probes:
        if not p.get("n_scored") or str(p["run_id"]).split(":")[0] == BASE:
            continue
        lost = "-"
        if p.get("lost_refusals") is not None:
            lost = f"{fmt(p['lost_refusals'])} of {fmt(p.get('base_refusals'))} ({rate_text(p, 'lost_refusal_rate')})"
        rows.append([str(p["probe"]), str(p["run_id"]), fmt(p.get("dataset")), fmt(p.get("rank")),
                     fmt(p["n_scored"]), _count(p, "n10", "right_to_wrong"), _count(p, "n01", "wrong_to_right"),
                     fmt(p.get("mcnemar_p"), 3), lost])  # fmt: skip
    return FlipTable(FLIPS_TITLE, FLIPS_NOTE, FLIP_HEADER, rows)
