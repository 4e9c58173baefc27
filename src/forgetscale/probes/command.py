"""`forgetscale probe`: behaviour probes (or lm-evaluation-harness tasks) on a study's base model and adapters;
`forgetscale flips`: the same paired flips from the sample logs of any two lm-evaluation-harness runs.

Each command parses, makes one call (:func:`forgetscale.api.probe`, :func:`forgetscale.api.lm_eval_flips`) and
prints; the API is imported inside it, so ``forgetscale --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from forgetscale.console import fmt, format_interval, print_rows, quiet_libraries

KINDS = ("knowledge", "reasoning", "safety")
COLUMNS = ("run_id", "probe", "n", "accuracy", "agreement", "refusal_rate")
"""The rates table: one row per (run, probe), each rate with its 95% Wilson interval (the base's rows hold its own)."""
FLIP_COLUMNS = ("run_id", "probe", "n", "right_to_wrong", "wrong_to_right", "mcnemar_p", "lost_refusals")
"""The flips table: one row per (fine-tuned run, probe) with scored items."""
FLIPS_TITLE = ("flips against the base: items right -> wrong (n10) and wrong -> right (n01), count = share "
               "[95% Wilson]; exact McNemar p, one test per row; lost refusals of the base's refusals")


def add_probe_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="knowledge/reasoning/safety probes: base model vs each run's adapter",
        description=(
            "Probe the base model once, then every finished run's adapter (base loaded once, adapters swapped). "
            "Reports accuracy against ground truth and agreement with the base model's own answers, then each "
            "run's flips against the base: items right -> wrong and wrong -> right with an exact McNemar test, "
            "and lost refusals on safety; every rate with a 95% Wilson interval. Results go to DIR/study.sqlite; "
            "results already stored with the same settings are reused."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="study directory (from `forgetscale run --out DIR`)")
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="ID",
        help="run ids to probe (default: every finished run); 'base' alone: only the base",
    )
    p.add_argument(
        "--probes",
        nargs="+",
        choices=KINDS,
        metavar="KIND",
        help=f"probe kinds: {', '.join(KINDS)} (default: the study's probes.kinds)",
    )
    p.add_argument(
        "--max-items", type=int, metavar="N", help="first N items of each set (default: the study's probes.max_items)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, metavar="N", help="generation length (default: the study's probes.max_new_tokens)"
    )
    p.add_argument(
        "--batch-size", type=int, metavar="N", help="sequences per batch (default: the study's probes.batch_size)"
    )
    p.add_argument("--force", action="store_true", help="recompute results already stored with the same settings")
    p.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="instead: run these comma-separated lm-evaluation-harness tasks (needs forgetscale[lm-eval])",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON (counts, p, rates with _lo/_hi)")
    p.set_defaults(func=cmd_probe)  # fmt: skip


def cmd_probe(args: argparse.Namespace) -> int:
    from forgetscale.api import probe
    from forgetscale.probes.runner import BASE

    quiet_libraries()
    rows = probe(args.dir, args.probes, runs=args.runs, max_items=args.max_items, max_new_tokens=args.max_new_tokens,
                 batch_size=args.batch_size, force=args.force,
                 lm_eval=None if args.lm_eval is None else args.lm_eval.split(","))  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_rows([rate_cells(r) for r in rows], list(COLUMNS))
    flipped = [flip_cells(r) for r in rows if r.get("n_scored") and r["run_id"].split(":")[0] != BASE]
    if flipped:
        print(f"\n{FLIPS_TITLE}")
        print_rows(flipped, list(FLIP_COLUMNS))
    return 0


LOG_COLUMNS = ("task", "filter", "metric", "n", "base_accuracy", "accuracy", "agreement", "right_to_wrong",
               "wrong_to_right", "mcnemar_p")  # fmt: skip
"""The table of ``forgetscale flips``: one row per task (and filter) the two logs share."""
LOG_TITLE = ("flips of the fine-tune against the base, paired by doc_id: items right -> wrong (n10) and wrong -> "
             "right (n01), count = share [95% Wilson]; exact McNemar p, one test per row; rates [95% Wilson]")


def add_flips_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flips",
        help="paired flips between two lm-evaluation-harness runs, from their --log_samples files",
        description=(
            "Pair the per-sample logs of two lm-evaluation-harness runs (a base model's and a fine-tune's, made "
            "by anyone: lm_eval --log_samples) by task, filter and doc_id, and report what `forgetscale probe` "
            "reports for its own probes: items right -> wrong (n10) and wrong -> right (n01) with 95% Wilson "
            "intervals, the exact McNemar p (one test per row, unadjusted), accuracy and agreement of answers."
        ),
    )
    for name, who in (("base", "the base model's"), ("tuned", "the fine-tuned model's")):
        p.add_argument(name, type=Path, metavar=f"{name.upper()}_SAMPLES",
                       help=f"{who} samples_<task>_<time>.jsonl, or its lm_eval --output_path directory")
    p.add_argument("--metric", help="the per-sample right/wrong score (default: acc, else exact_match, "
                                    "else the task's first 0/1 metric)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the rows as JSON (counts, p, rates with _lo/_hi)")
    p.set_defaults(func=cmd_flips)


def cmd_flips(args: argparse.Namespace) -> int:
    from forgetscale.api import lm_eval_flips

    rows = lm_eval_flips(args.base, args.tuned, metric=args.metric)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(LOG_TITLE)
    print_rows([{**flip_cells(r), **{k: _rate(r, k) for k in ("base_accuracy", "accuracy", "agreement")}}
                for r in rows], list(LOG_COLUMNS))  # fmt: skip
    return 0


def _rate(row: dict[str, Any], key: str) -> str | None:
    if row.get(key) is None:
        return None
    return format_interval(row[key], row.get(f"{key}_lo"), row.get(f"{key}_hi"))


def rate_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the rates table: each rate as ``value [lo, hi]``.

    >>> rate_cells({"run_id": "r", "probe": "p", "n": 10, "accuracy": 0.5, "accuracy_lo": 0.2366,
    ...             "accuracy_hi": 0.7634})["accuracy"]
    '0.5000 [0.2366, 0.7634]'
    """
    return {**row, **{k: _rate(row, k) for k in ("accuracy", "agreement", "refusal_rate")}}


def flip_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the flips table: ``count = share [lo, hi]``, the McNemar p, lost refusals ``k/base = share``.

    >>> flip_cells({"run_id": "r", "probe": "safety", "n": 10, "n10": 2, "n01": 0, "mcnemar_p": 0.5,
    ...             "right_to_wrong": 0.2, "wrong_to_right": 0.0, "lost_refusals": 2, "base_refusals": 4,
    ...             "lost_refusal_rate": 0.5})["lost_refusals"]
    '2 of 4 = 0.5000'
    """
    out = {**row, "right_to_wrong": f"{row['n10']} = {_rate(row, 'right_to_wrong')}",
           "wrong_to_right": f"{row['n01']} = {_rate(row, 'wrong_to_right')}", "mcnemar_p": fmt(row["mcnemar_p"])}
    if row.get("lost_refusals") is not None:
        share = _rate(row, "lost_refusal_rate")
        out["lost_refusals"] = f"{row['lost_refusals']} of {row['base_refusals']}" + (f" = {share}" if share else "")
    return out
