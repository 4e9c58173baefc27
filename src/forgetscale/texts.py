"""Which texts were forgotten: the corpus sequences with the largest KL, and those whose KL grew most.

:func:`forgetscale.forgetting.measure` computes each corpus sequence's mean KL per token for the
standard errors anyway (``seq_kl``); a study stores it with every measurement (the store's
``sequence_kl`` table) and the corpus' texts once (``corpus_texts``, keyed by the corpus fingerprint
of the runs' provenance). :func:`forgotten_texts` reads them back for a study directory, and
``forgetscale forgetting --top N`` lists them for one adapter. Texts are shown as one-line snippets
with Python's repr escapes (:func:`snippet`). Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgetscale.console import fmt
from forgetscale.errors import UserError
from forgetscale.store import open_study

TEXT_CHARS = 400
"""Characters of each sequence's text a study stores (the snippets shown are shorter)."""
SNIPPET_CHARS = 100
TOP_N = 10


def corpus_texts(sequences: Sequence[Any], tok: Any) -> list[str]:
    """Each sequence's text, from where the corpus' sequences stop sharing a prefix (a chat template's
    system prompt would otherwise open every one), special tokens left out, cut to :data:`TEXT_CHARS`."""
    from forgetscale.forward import shared_prefix

    start = shared_prefix(list(sequences))
    return [tok.decode(list(s.ids[start:]), skip_special_tokens=True)[:TEXT_CHARS] for s in sequences]


def snippet(text: str | None, width: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, escaped as Python's ``repr`` escapes it, cut to ``width`` characters (``…``).

    An escape is never cut in half.

    >>> snippet('a\\nb\\t"c"')
    'a\\\\nb\\\\t"c"'
    >>> snippet("x" * 10, 5)
    'xxxx…'
    >>> snippet(None)
    '-'
    """
    if text is None:
        return "-"
    parts = [repr(c)[1:-1] for c in text]
    if sum(map(len, parts)) <= width:
        return "".join(parts)
    out, n = [], 0
    for p in parts:
        if n + len(p) > width - 1:
            break
        out.append(p)
        n += len(p)
    return "".join(out) + "…"


def _order(values: Sequence[float]) -> list[int]:
    """Indices by value, largest first; NaN (a sequence without targets) last."""
    return sorted(range(len(values)), key=lambda i: (math.isnan(values[i]), 0 if math.isnan(values[i]) else -values[i]))


def top_sequences(
    seq_kl: Sequence[float], texts: Sequence[str] | None, n: int, tokens: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """The ``n`` sequences with the largest mean KL: ``{seq, kl, text}`` (and ``tokens``), largest first.

    >>> [r["seq"] for r in top_sequences([0.1, 0.5, float("nan"), 0.3], None, 3)]
    [1, 3, 0]
    """
    vals = [float("nan") if v is None else float(v) for v in seq_kl]
    out = []
    for i in _order(vals)[:n]:
        row = {"seq": i, "kl": vals[i], "text": texts[i] if texts is not None and i < len(texts) else None}
        if tokens is not None:
            row["tokens"] = int(tokens[i])
        out.append(row)
    return out


def growth_sequences(
    before: Sequence[float], after: Sequence[float], texts: Sequence[str] | None, n: int
) -> list[dict[str, Any]]:
    """The ``n`` sequences whose mean KL grew most from ``before`` to ``after``: ``{seq, kl_from, kl_to,
    growth, text}``, largest growth first.

    >>> [r["seq"] for r in growth_sequences([0.1, 0.2, 0.0], [0.2, 0.1, 0.5], None, 2)]
    [2, 0]
    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} and {len(after)} sequences: not the same corpus")
    a = [float("nan") if v is None else float(v) for v in before]
    b = [float("nan") if v is None else float(v) for v in after]
    grew = [y - x for x, y in zip(a, b, strict=True)]
    return [{"seq": i, "kl_from": a[i], "kl_to": b[i], "growth": grew[i],
             "text": texts[i] if texts is not None and i < len(texts) else None}
            for i in _order(grew)[:n]]  # fmt: skip


def forgotten_texts(
    directory: str | Path, run_id: str | None = None, n: int = TOP_N, steps: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A study's most-forgotten corpus texts: at a run's last step, and by growth between two of its steps.

    Args:
        directory: the study directory.
        run_id: the run; None: the finished run with the largest ``forget_kl`` at its last step.
        n: sequences per table.
        steps: the two steps to compare; None: the first measured step after 0 and the last step.

    Returns:
        ``{run_id, dataset, rank, step, top: [{seq, kl, text}], growth: {from, to, rows: [{seq, kl_from,
        kl_to, growth, text}]}}``; ``text`` is None where the study did not store the corpus' texts (runs
        measured by the callback).

    Raises:
        UserError: no store, an unknown run, no per-sequence KL stored (a study from an older forgetscale),
            or a step that was not measured.
    """
    directory = Path(directory)
    with open_study(directory) as store:
        runs = {r["run_id"]: r for r in store.runs()}
        if run_id is None:
            last: dict[str, float] = {}
            for m in store.measurements():  # ordered by step within a run: the last one wins
                if runs[m["run_id"]]["status"] == "done" and m.get("forget_kl") is not None:
                    last[m["run_id"]] = m["forget_kl"]
            stored = [r for r in last if store.sequence_kl(r)]
            if not stored:
                raise UserError(f"{directory}: no finished run has per-sequence KL stored (the study was run "
                                "before forgetscale stored them); rerun it to store them")  # fmt: skip
            run_id = max(stored, key=lambda r: last[r])
        elif run_id not in runs:
            raise UserError(f"{directory}: no run {run_id!r} in this study")
        by_step = store.sequence_kl(run_id)
        corpus = (runs[run_id].get("provenance") or {}).get("corpus_fingerprint")
        texts = store.corpus_texts(str(corpus)) if corpus else None
    if not by_step:
        raise UserError(f"{directory}: run {run_id} has no per-sequence KL stored; rerun it to store them")
    measured = sorted(by_step)
    end = measured[-1]
    if steps is None:
        later = [s for s in measured if s > 0]
        steps = (later[0] if len(later) > 1 else measured[0], end)
    for s in steps:
        if s not in by_step:
            raise UserError(f"{directory}: run {run_id} has no per-sequence KL at step {s}; measured at {measured}")
    run = runs[run_id]
    return {
        "run_id": run_id, "dataset": run["dataset"], "rank": run["rank"], "step": end,
        "top": top_sequences(by_step[end], texts, n),
        "growth": {"from": steps[0], "to": steps[1],
                   "rows": growth_sequences(by_step[steps[0]], by_step[steps[1]], texts, n)},
    }  # fmt: skip


def top_lines(rows: Sequence[dict[str, Any]], width: int = SNIPPET_CHARS) -> list[str]:
    """``forgetscale forgetting --top N``'s table: rank, sequence, target tokens, mean KL, the text snippet."""
    out = [f"{'#':>3}  {'seq':>5}  {'tokens':>6}  {'kl':>9}  text"]
    for k, r in enumerate(rows, 1):
        out.append(f"{k:>3}  {r['seq']:>5}  {fmt(r.get('tokens')):>6}  {r['kl']:>9.5f}  {snippet(r['text'], width)}")
    return out
