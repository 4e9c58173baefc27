"""`forgetscale compare`: does each mitigation beat plain LoRA's line, and does each method forget more or less
than LoRA at equal fine-tuning loss?

The command parses, makes one call (:func:`forgetscale.api.compare`) and prints; the API is imported
inside it, so ``forgetscale --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forgetscale.console import print_rows

METHOD_COLUMNS = ("dataset", "method", "P", "lr", "difference", "lo", "hi", "margin", "verdict", "n_runs",
                  "n_reference_runs", "n_points", "seconds_per_step", "reason")
COLUMNS = ("dataset", "mitigation", "strength", "residual", "lo", "hi", "verdict", "overhead", "n_runs", "n_plain_runs",
           "n_points", "n_outside", "reason")


def add_compare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="each mitigation and each method against plain LoRA's line, at equal fine-tuning loss",
        description=(
            "Methods (a study that sweeps method): each method's forgetting minus LoRA's line at the method's own "
            "ft_loss, within the ft_loss range both cover, mean over its runs (difference, nats of forget_ce; "
            "negative: forgets less), with a 95% interval calibrated on LoRA's runs left out one at a time. "
            "Verdict: same (the 90% interval inside ±margin, 20% of LoRA's forgetting there), forgets_less, "
            "forgets_more (the 95% interval below or above 0), or undecided with its reason. "
            "Mitigations: fit plain LoRA's line forget_ce(ft_loss) per dataset from the study's plainly trained runs' "
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
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list (methods' rows first)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from forgetscale.api import compare

    rows = compare(args.dir, min_step=args.min_step)["rows"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    methods = [r for r in rows if "mitigation" not in r]
    mitigations = [r for r in rows if "mitigation" in r]
    if methods:
        print_rows(methods, list(METHOD_COLUMNS))
    if methods and mitigations:
        print()
    if mitigations:
        print_rows(mitigations, list(COLUMNS))
    return 0
