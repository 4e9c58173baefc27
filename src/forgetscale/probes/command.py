"""`forgetscale probe`: behaviour probes (or lm-evaluation-harness tasks) on a study's base model and adapters.

The command parses, makes one call (:func:`forgetscale.api.probe`) and prints; the API is imported
inside it, so ``forgetscale --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forgetscale.console import print_rows, quiet_libraries

KINDS = ("knowledge", "reasoning", "safety")
COLUMNS = ("run_id", "probe", "n", "accuracy", "base_accuracy", "agreement", "refusal_rate", "base_refusal_rate")


def add_probe_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="knowledge/reasoning/safety probes: base model vs each run's adapter",
        description=(
            "Probe the base model once, then every finished run's adapter (base loaded once, adapters swapped). "
            "Reports accuracy against ground truth and agreement with the base model's own answers; "
            "results go to DIR/study.sqlite. Results already stored with the same settings are reused."
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
    p.add_argument("--json", action="store_true", help="print the summary rows as JSON")
    p.set_defaults(func=cmd_probe)  # fmt: skip


def cmd_probe(args: argparse.Namespace) -> int:
    from forgetscale.api import probe

    quiet_libraries()
    rows = probe(args.dir, args.probes, runs=args.runs, max_items=args.max_items, max_new_tokens=args.max_new_tokens,
                 batch_size=args.batch_size, force=args.force,
                 lm_eval=None if args.lm_eval is None else args.lm_eval.split(","))  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_rows(rows, list(COLUMNS))
    return 0
