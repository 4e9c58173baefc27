"""`forgetscale compare`: does each mitigation of a study beat plain LoRA's learning-forgetting line?

The command parses, makes one call (:func:`forgetscale.api.compare`) and prints; the API is imported
inside it, so ``forgetscale --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forgetscale.console import print_rows

COLUMNS = ("dataset", "mitigation", "strength", "residual", "lo", "hi", "verdict", "overhead", "n_runs", "n_plain_runs",
           "n_points", "n_outside", "reason")


def add_compare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="each mitigation's forgetting against plain LoRA's line, at equal fine-tuning loss",
        description=(
            "Fit plain LoRA's line forget_ce(ft_loss) per dataset from the study's plainly trained runs' "
            "own points, then judge each (mitigation, strength) level by its runs. residual: the mean over the "
            "level's runs of each run's mean residual (forget_ce minus the line at the same ft_loss; negative: it "
            "forgets less). Trained kinds (replay, kl): lo/hi is a 95% prediction interval for as many new plain "
            "runs at the same ft_loss (calibrated leaving one plain run out; t on G-1 df). Post-hoc kinds "
            "(rescale, intruders: the run's final adapter changed after training): the paired within-run "
            "contrast with the same run's own points at the same steps, t interval over runs. overhead: extra "
            "wall time as a fraction of plain training (trained kinds: against the plain run of the same rank "
            "and data order; post-hoc kinds: changing and measuring the adapter at one strength). "
            "Verdict: beats_line (interval below 0), on_line, worse, or undecided with its reason (one run per "
            "level, fewer than 3 plain runs). n_outside counts points whose ft_loss is outside the plain runs' "
            "range, where the line is extrapolated. Steps below fit.min_step are left out."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="study directory (from `forgetscale run --out DIR`)")
    p.add_argument(
        "--min-step", type=int, metavar="K", help="leave out steps below K (default: the study's fit.min_step)"
    )
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from forgetscale.api import compare

    rows = compare(args.dir, min_step=args.min_step)["rows"]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_rows(rows, list(COLUMNS))
    return 0
