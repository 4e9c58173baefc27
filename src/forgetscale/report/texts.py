"""The report's most-forgotten texts: the corpus sequences with the largest KL, and the largest growth.

The numbers are :func:`forgetscale.texts.forgotten_texts`'s (the per-sequence KLs a study stores with
every measurement), gathered by :mod:`~forgetscale.report.data`; this module turns them into plain-text
cells that both renderers escape and lay out (Markdown tables in :mod:`~forgetscale.report.markdown`,
the ``texts.html.j2`` partial of the HTML report), so the two show the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from forgetscale.console import fmt
from forgetscale.errors import UserError
from forgetscale.texts import forgotten_texts, snippet

__all__ = ["TextTables", "gather_texts", "text_tables"]

TEXTS_TITLE = "Most-forgotten texts"
TEXTS_N = 10


class TextTables(NamedTuple):
    """The section: its title, what it shows (one paragraph), and tables of ``(caption, header, rows)``."""

    title: str
    note: str
    tables: list[tuple[str, tuple[str, ...], list[list[str]]]]


def gather_texts(out: Path) -> dict[str, Any] | None:
    """:func:`forgetscale.texts.forgotten_texts` of the study, or None when it stored no per-sequence KL."""
    try:
        return forgotten_texts(out, n=TEXTS_N)
    except UserError:
        return None


def text_tables(t: Mapping[str, Any] | None) -> TextTables | None:
    """The section's plain-text cells (None: no section).

    >>> t = {"run_id": "r1", "dataset": "news", "rank": 4, "step": 8,
    ...      "top": [{"seq": 3, "kl": 0.51234, "text": "a\\nb"}],
    ...      "growth": {"from": 1, "to": 8, "rows": [{"seq": 3, "kl_from": 0.1, "kl_to": 0.51234, "growth": 0.41234,
    ...                                               "text": None}]}}
    >>> text_tables(t).tables[0][2]
    [['1', '3', '0.5123', 'a\\\\nb']]
    """
    if t is None:
        return None
    g = t["growth"]
    note = (f"Run {t['run_id']} (dataset {t['dataset']}, rank {fmt(t['rank'])}), the finished run with the largest "
            "forget_kl at its last step: the forgetting corpus' sequences whose mean KL(p_base || p_ft) per token "
            f"is largest at step {t['step']}, and those whose KL grew most from step {g['from']} to step {g['to']}. "
            "Texts as one-line snippets with Python's escapes; '-' where the run did not store them.")  # fmt: skip
    top = [[str(k), str(r["seq"]), fmt(r["kl"]), snippet(r["text"])] for k, r in enumerate(t["top"], 1)]
    grew = [[str(k), str(r["seq"]), fmt(r["kl_from"]), fmt(r["kl_to"]), fmt(r["growth"]), snippet(r["text"])]
            for k, r in enumerate(g["rows"], 1)]  # fmt: skip
    return TextTables(TEXTS_TITLE, note, [
        (f"Largest KL at step {t['step']}", ("#", "sequence", "KL", "text"), top),
        (f"Largest growth, step {g['from']} → {g['to']}",
         ("#", "sequence", f"KL at {g['from']}", f"KL at {g['to']}", "growth", "text"), grew),
    ])  # fmt: skip
