"""Paired flips from lm-evaluation-harness sample logs: two runs' ``samples_<task>_<time>.jsonl``, item by item.

``lm_eval --log_samples --output_path DIR`` writes one JSON line per document and filter: its ``doc_id``,
``doc_hash``, the model's ``filtered_resps`` and one score per metric (``acc``: 1.0 or 0.0). Two such logs of
the same task, a base model's and a fine-tune's, pair up by task, filter and ``doc_id`` into the flips every
shipped probe gets (:func:`forgetscale.probes.flips.flips`): right -> wrong (``n10``), wrong -> right (``n01``),
the exact McNemar p and 95% Wilson intervals. Nothing here needs lm-eval itself: the logs of any two runs do,
whoever made them.

Reading is the only I/O; :func:`pair_samples` is pure.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from forgetscale.errors import UserError
from forgetscale.fsutil import jsonl_records
from forgetscale.probes.flips import flips, sides

__all__ = ["MAIN_METRICS", "find_sample_logs", "log_flips", "pair_samples", "read_sample_log", "sample_answer",
           "side_by_side"]

SAMPLES_FILE = re.compile(r"^samples_(?P<task>.+)_(?P<time>\d{4}-\d{2}-\d{2}T[\d.\-]+)\.jsonl$")
"""lm-eval's name of a sample log: ``samples_<task>_<date>T<time>.jsonl``."""
MAIN_METRICS = ("acc", "exact_match")
"""The per-sample right/wrong score read when none is named: the first of these a task logs, else its first
0/1 metric."""


def find_sample_logs(path: Path) -> dict[str, Path]:
    """``{task: sample log}`` of ``path``: one ``samples_*.jsonl`` file, or a directory (``--output_path``) searched
    recursively.

    Raises:
        UserError: ``path`` does not exist, holds no sample log, or holds two logs of one task (two runs written
            into one output directory: name the files).
    """
    path = Path(path)
    if path.is_file():
        m = SAMPLES_FILE.match(path.name)
        if m is None:
            raise UserError(f"{path}: not an lm-eval sample log (expected samples_<task>_<time>.jsonl, "
                            "written by lm_eval --log_samples)")  # fmt: skip
        return {m["task"]: path}
    if not path.is_dir():
        raise UserError(f"{path}: no such file or directory")
    found: dict[str, list[Path]] = {}
    for f in sorted(path.rglob("samples_*.jsonl")):
        m = SAMPLES_FILE.match(f.name)
        if m is not None:
            found.setdefault(m["task"], []).append(f)
    if not found:
        raise UserError(f"{path}: no lm-eval sample log (samples_<task>_<time>.jsonl) in it; "
                        "run lm_eval with --log_samples --output_path")  # fmt: skip
    twice = {t: fs for t, fs in found.items() if len(fs) > 1}
    if twice:
        task, files = next(iter(twice.items()))
        raise UserError(f"{path}: {len(files)} sample logs of task {task} ({files[0].name}, {files[1].name}, ...): "
                        "pass the two files to compare")  # fmt: skip
    return {t: fs[0] for t, fs in found.items()}


def read_sample_log(path: Path) -> list[dict[str, Any]]:
    """The records of one sample log, each checked for what pairing needs (``doc_id``, ``filter``, ``metrics``).

    Raises:
        UserError: an unreadable file, a line that is not a JSON object, or a record without those keys.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({type(e).__name__})") from None
    out = []
    for i, rec in jsonl_records(lines, path):
        missing = [k for k in ("doc_id", "metrics") if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise UserError(f"{path}:{i}: not an lm-eval sample record (no {', '.join(missing)})")
        out.append(rec)
    if not out:
        raise UserError(f"{path}: an empty sample log")
    return out


def sample_answer(sample: Mapping[str, Any]) -> Any:
    """The model's answer in one sample record: the picked option of a multiple-choice task (the largest
    log-likelihood; lm-eval logs each as ``[loglik, is_greedy]``, as strings in its files), else the
    filtered generation. None when the record holds no response.

    >>> sample_answer({"filtered_resps": [["-3.5", "False"], ["-1.25", "True"], ["-2.0", "False"]]})
    1
    >>> sample_answer({"filtered_resps": ["Paris"]}), sample_answer({})
    ('Paris', None)
    """
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        return None
    first = resps[0]
    if isinstance(first, (list, tuple)) and first:
        try:
            lls = [float(r[0]) for r in resps]
        except (TypeError, ValueError, IndexError):
            return json.dumps(resps, sort_keys=True)
        return max(range(len(lls)), key=lambda i: (lls[i], -i))  # the first of equal maxima, as argmax does
    return first if len(resps) == 1 else json.dumps(resps, sort_keys=True)


def _metric(task: str, records: Sequence[Mapping[str, Any]], metric: str | None) -> str:
    """The per-sample score that says right or wrong: ``metric``, else the first of :data:`MAIN_METRICS`, else
    the first metric every record scores 0 or 1."""
    logged = [m for m in records[0].get("metrics") or [] if all(m in r for r in records)]
    binary = [m for m in logged if all(_is_01(r[m]) for r in records)]
    if metric is not None:
        if metric not in logged:
            raise UserError(f"task {task} logs no per-sample {metric} (it logs {', '.join(logged) or 'none'})")
        if metric not in binary:
            raise UserError(f"task {task}: its per-sample {metric} is not right/wrong (0 or 1), which flips need")
        return metric
    for m in (*MAIN_METRICS, *binary):
        if m in binary:
            return m
    raise UserError(f"task {task}: none of its per-sample metrics ({', '.join(logged) or 'none'}) is right/wrong "
                    "(0 or 1), which flips need; name one with --metric")  # fmt: skip


def _is_01(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and not (isinstance(v, float) and math.isnan(v)) and v in (0, 1)


def _by_doc(task: str, side: str, records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in records:
        key = (str(r.get("filter", "none")), str(r["doc_id"]))
        if key in out:
            raise UserError(f"task {task}: the {side} log holds doc_id {key[1]} twice (filter {key[0]})")
        out[key] = r
    return out


def side_by_side(task: str, base: Sequence[Mapping[str, Any]], tuned: Sequence[Mapping[str, Any]],
                 metric: str | None = None) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """One task's base and fine-tuned sample records paired by filter and ``doc_id``, as the side-by-side items
    ``forgetscale probe`` stores (``id``, ``answer``, ``base_answer``, ``correct``, ``base_correct``).

    Returns:
        ``(metric, {filter: items})``: the per-sample score read as right/wrong (:data:`MAIN_METRICS`), and the
        items of each filter in ``doc_id`` order; ``answer`` is :func:`sample_answer`'s.

    Raises:
        UserError: the records cover different documents, a document's ``doc_hash`` differs (not the same task
            data), or no right/wrong metric (the message says which).
    """
    name = _metric(task, base, metric)
    if _metric(task, tuned, metric) != name:
        raise UserError(f"task {task}: the two logs score different metrics; name one with --metric")
    b, t = _by_doc(task, "base", base), _by_doc(task, "fine-tuned", tuned)
    if b.keys() != t.keys():
        only = sorted(b.keys() ^ t.keys(), key=_order)
        raise UserError(f"task {task}: the two logs cover different documents ({len(b)} and {len(t)}; e.g. doc_id "
                        f"{only[0][1]} in one only): run both on the same documents (same --limit)")  # fmt: skip
    out: dict[str, list[dict[str, Any]]] = {}
    for k in sorted(b, key=_order):
        hb, ht = b[k].get("doc_hash"), t[k].get("doc_hash")
        if hb is not None and ht is not None and hb != ht:
            raise UserError(f"task {task}: doc_id {k[1]} is a different document in the two logs (doc_hash "
                            f"{str(hb)[:12]} vs {str(ht)[:12]}): not the same task data")  # fmt: skip
        out.setdefault(k[0], []).append({"id": k[1], "answer": sample_answer(t[k]), "correct": bool(t[k][name]),
                                         "base_answer": sample_answer(b[k]), "base_correct": bool(b[k][name])})
    return name, out


def _order(key: tuple[str, str]) -> tuple[str, int, str]:
    return key[0], int(key[1]) if key[1].isdigit() else -1, key[1]


def pair_samples(task: str, base: Sequence[Mapping[str, Any]], tuned: Sequence[Mapping[str, Any]],
                 metric: str | None = None) -> list[dict[str, Any]]:
    """One task's flips from its base and fine-tuned sample records (:func:`side_by_side`).

    Returns:
        One row per filter: ``task``, ``filter``, ``metric`` and :func:`~forgetscale.probes.flips.flips`' keys
        (``n``, ``n10``, ``n01``, ``mcnemar_p``, ``accuracy``, ``base_accuracy``, ``agreement`` and the rest,
        each rate with its Wilson ``_lo``/``_hi``); ``agreement`` compares the two answers (:func:`sample_answer`).

    Raises:
        UserError: as :func:`side_by_side`.

    >>> def rec(i, pick, acc):
    ...     resps = [["-1.0", "False"] if j == pick else ["-9.0", "False"] for j in range(3)]
    ...     return {"doc_id": i, "filter": "none", "metrics": ["acc"], "acc": acc, "filtered_resps": resps}
    >>> base = [rec(0, 0, 1.0), rec(1, 1, 1.0), rec(2, 2, 0.0)]
    >>> tuned = [rec(0, 2, 0.0), rec(1, 1, 1.0), rec(2, 0, 1.0)]
    >>> (row,) = pair_samples("t", base, tuned)
    >>> row["metric"], row["n"], row["n10"], row["n01"], row["agreement"]
    ('acc', 3, 1, 1, 0.3333333333333333)
    """
    name, by_filter = side_by_side(task, base, tuned, metric)
    return [{"task": task, "filter": f, "metric": name, **flips(*sides(items))} for f, items in by_filter.items()]


def log_flips(base: Path, tuned: Path, metric: str | None = None) -> list[dict[str, Any]]:
    """Flips of every task two lm-eval runs share, from their sample logs (files or ``--output_path``
    directories, :func:`find_sample_logs`): :func:`pair_samples` per task, tasks in name order.

    Raises:
        UserError: a path without sample logs, bad records, the two runs cover different tasks or documents.
    """
    logs = {"base": find_sample_logs(base), "tuned": find_sample_logs(tuned)}
    if logs["base"].keys() != logs["tuned"].keys():
        if len(logs["base"]) == len(logs["tuned"]) == 1:
            (a,), (b,) = logs["base"], logs["tuned"]
            raise UserError(f"the two sample logs are of different tasks ({a} and {b})")
        diff = sorted(logs["base"].keys() ^ logs["tuned"].keys())
        raise UserError(f"the two runs logged different tasks ({', '.join(diff)} in one only): "
                        "pass the two sample files of one task")  # fmt: skip
    rows = []
    for task in sorted(logs["base"]):
        rows += pair_samples(task, read_sample_log(logs["base"][task]), read_sample_log(logs["tuned"][task]), metric)
    return rows
