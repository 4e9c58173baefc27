"""How often F1, F2 and F3 reach a verdict, and how often a false law is called supported, for candidate designs.

    python -m bench.power [--studies 100] [--designs NAME ...] [--noise-scale 1.0 0.7] [--eval-cost 3]
                          [--run-sd 0.06] [--step-sd 0.05] [--point-sd 0.02] [--ft-sd 0.10] [--margin 0.1]

For each design and noise scale it simulates ``--studies`` synthetic studies with the paper's laws true
(the default study's measured law and noise, ``tests/sim/f123_mc.py``) and as many with each law false,
fits them with the package's own fitting functions and reads the package's own verdicts, and prints
one markdown row per design (paste it into docs):

- when true: P(F1 verdict) (supported or not_supported), P(F1 supported), P(F2 supported), P(F3 supported);
- when false: P(supported) for F1 (forgetting ∝ drop^2), F2 (no P effect; and log KL bent in log P) and
  F3 (forgetting saturating in N, time constant 12 steps): each should stay at or below 5%;
- the relative cost: runs x (last step + evaluations x ``--eval-cost`` training steps), against the
  default design's.

The noise is on the log scale of forget_kl, as the default study measures it (the split into run, step
and point parts is an assumption: the study measures their sum); ``--noise-scale`` multiplies all of them
(ft_loss's too) and stands for designs that make each run less noisy (larger batches, a lower learning
rate with warmup). Under a log-linear truth it moves F1 and the false laws only: F2's and F3's form tests
ask whether the law's held-out error is within a relative margin of a spline's, and both errors scale
with the noise (4 ranks x 4 orders, 200 studies: F2 0.63 and F3 0.57 at noise x 1 and x 0.7).
Rates are over the studies drawn: with S studies a rate r has sd sqrt(r(1-r)/S) (4.5 points at r = 0.7
and S = 100). Counts, not timings: any CPU, and the same numbers on each.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tests.sim.f123_mc import FALSE, NOISE, Design, findings_module, simulate

DESIGNS = {
    "default: 4 ranks x 2 orders, steps 8-32": Design(),
    "4 ranks x 3 orders": Design(orders=3),
    "4 ranks x 4 orders": Design(orders=4),
    "7 ranks (1-64) x 2 orders": Design(ranks=(1, 2, 4, 8, 16, 32, 64)),
    "7 ranks x 3 orders": Design(ranks=(1, 2, 4, 8, 16, 32, 64), orders=3),
    "3 ranks (1, 8, 64) x 3 orders": Design(ranks=(1, 8, 64), orders=3),
    "3 ranks x 4 orders": Design(ranks=(1, 8, 64), orders=4),
    "4 ranks x 2 orders, steps 8/16/32": Design(steps=(8, 16, 32)),
    "4 ranks x 2 orders, steps 8-64": Design(steps=(8, 12, 16, 24, 32, 48, 64)),
    "4 ranks x 3 orders, steps 8/16/32/64": Design(orders=3, steps=(8, 16, 32, 64)),
    "4 ranks x 5 orders": Design(orders=5),
    "4 ranks x 6 orders": Design(orders=6),
    "4 ranks x 7 orders": Design(orders=7),
    "4 ranks x 8 orders": Design(orders=8),
    "4 ranks x 5 orders, steps 8/16/24/32": Design(orders=5, steps=(8, 16, 24, 32)),
    "4 ranks x 6 orders, steps 8/16/24/32": Design(orders=6, steps=(8, 16, 24, 32)),
    "4 ranks x 7 orders, steps 8/16/24/32": Design(orders=7, steps=(8, 16, 24, 32)),
    "4 ranks x 8 orders, steps 8/16/24/32": Design(orders=8, steps=(8, 16, 24, 32)),
    "4 ranks x 4 orders, steps 8-64": Design(orders=4, steps=(8, 12, 16, 24, 32, 48, 64)),
}
"""Candidate designs: more data orders, more ranks or fewer, more steps past the onset, fewer evaluations."""
FALSE_WHICH = {"F1": "F1", "F2": "F2", "F2 form": "F2", "F3": "F3"}
"""Which finding each false law of ``FALSE`` makes false."""


def rate(c: Counter, *verdicts: str) -> float:
    return sum(c[v] for v in verdicts) / max(sum(c.values()), 1)


def row(
    name: str, design: Design, scale: float, noise: dict[str, float], n: int, seed: int, eval_cost: float
) -> list[str]:
    """One table row: the design's rates when true and when false, and its relative cost."""
    scaled = {k: v * scale for k, v in noise.items()}
    true = simulate(design, {}, n, seed, scaled)
    cells = [name, f"{scale:g}", str(design.runs), f"{design.cost(eval_cost) / Design().cost(eval_cost):.2f}",
             f"{rate(true['F1'], 'supported', 'not_supported'):.2f}"]  # fmt: skip
    cells += [f"{rate(true[f], 'supported'):.2f}" for f in ("F1", "F2", "F3")]
    for law, params in FALSE.items():
        which = FALSE_WHICH[law]
        c = simulate(design, params, n, seed + 100_000, scaled, which=(which,))[which]
        cells.append(f"{rate(c, 'supported'):.2f}")
    return cells


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.power", description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=100, help="studies per design and truth (default 100)")
    p.add_argument("--designs", nargs="*", choices=list(DESIGNS), help="only these designs (default: all)")
    p.add_argument("--noise-scale", type=float, nargs="+", default=[1.0], help="multiply every noise sd (default 1)")
    p.add_argument("--eval-cost", type=float, default=3.0, help="one evaluation in training steps (default 3)")
    for key, v in NOISE.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=float, default=v,
                       help=f"log forget_kl sd ({key}; ft_loss's in nats), default {v}")  # fmt: skip
    p.add_argument(
        "--margin",
        type=float,
        default=findings_module.FORM_MARGIN,
        help=f"the form tests' relative margin (default {findings_module.FORM_MARGIN})",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    findings_module.FORM_MARGIN = args.margin  # read at each call: a what-if, not a setting of the package
    noise = {k: getattr(args, k) for k in NOISE}
    head = [
        "design",
        "noise x",
        "runs",
        "cost",
        "F1 verdict",
        "F1 sup.",
        "F2 sup.",
        "F3 sup.",
        "F1 false: sup.",
        "F2 false (a=0): sup.",
        "F2 false (bent): sup.",
        "F3 false (saturating): sup.",
    ]
    print(
        f"{args.studies} studies per cell; noise (log forget_kl) run {noise['run_sd']}, step {noise['step_sd']}, "
        f"point {noise['point_sd']}, ft_loss {noise['ft_sd']} nats; form margin {args.margin:.0%}; cost in "
        f"training steps with an evaluation = {args.eval_cost:g} steps, relative to the default design\n"
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in args.designs or DESIGNS:
        for scale in args.noise_scale:
            print("| " + " | ".join(row(name, DESIGNS[name], scale, noise, args.studies, args.seed,
                                        args.eval_cost)) + " |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
