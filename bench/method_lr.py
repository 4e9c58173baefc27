"""Each method's learning rate for the ``methods`` preset, by a short measured sweep.

    python -m bench.method_lr [--out runs/method-lr] [--steps 8] [--methods ia3 full ...]

A method compared at a bad learning rate proves nothing: its line sits wherever that rate puts it. For
each method of the ``methods`` preset it trains one run per candidate rate (the preset's settings, one data
order, ``--steps`` updates, measured at the last), through the package's own study pipeline, and prints a
markdown table: the rate, held-out fine-tuning loss and forget_kl at the last step, and whether it diverged.
The rate chosen is the lowest held-out fine-tuning loss (the most learned in the steps given) among rates
that did not diverge; copy it into ``presets.METHOD_LR`` with the table into docs/methods.md. The numbers
are losses, not timings: any CPU gives the same to float rounding.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

CANDIDATES = {
    "dora": ({"method.kind": "dora", "lora.rank": 4}, (2e-3, 4e-3, 8e-3)),
    "lora-mlp": ({"method.kind": "lora", "lora.rank": 4, "lora.target_modules": "mlp"}, (4e-3, 8e-3)),
    "ia3": ({"method.kind": "ia3"}, (1e-2, 3e-2, 1e-1)),
    "full": ({"method.kind": "full", "method.blocks": 2}, (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
}
"""Per method: its settings and the rates tried (LoRA keeps the default study's 4e-3, chosen there)."""


def sweep(out: Path, steps: int, methods: list[str]) -> list[dict[str, object]]:
    """One study per (method, rate), so that a rate that diverges (one line, exit 2 in a study) is a row."""
    from forgetscale.api import load_results, run_study
    from forgetscale.errors import UserError

    rows = []
    for method in methods:
        settings, rates = CANDIDATES[method]
        for lr in rates:
            where = out / f"{method}-{lr:g}"
            bundle = json.dumps([{**settings, "train.lr": lr}])  # the preset's method axis, this one method
            sets = [f"sweep.method={bundle}", "sweep.train.seed=[0]", f"train.steps={steps}",
                    f"train.eval_steps=[{steps}]"]  # fmt: skip
            try:
                run_study(out=where, preset="methods", overrides=sets)
                final = [r for r in load_results(where).rows if r["step"] == steps]
                ft, kl = final[0]["ft_loss"], final[0]["forget_kl"]
            except UserError as e:  # the training loss went non-finite
                print(f"{method} at lr {lr:g}: {e}")
                ft, kl = None, None
            rows.append({"method": method, "lr": lr, "ft_loss": ft, "forget_kl": kl,
                         "diverged": ft is None or not math.isfinite(ft)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.method_lr", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/method-lr"))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--methods", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    args = p.parse_args(argv)
    rows = sweep(args.out, args.steps, args.methods)
    best = {}
    for r in rows:
        if not r["diverged"] and (r["method"] not in best or r["ft_loss"] < best[r["method"]]["ft_loss"]):
            best[r["method"]] = r
    print(f"| method | lr | held-out ft_loss at step {args.steps} | forget_kl | chosen |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["method"], r["lr"])):
        chosen = "yes" if best.get(r["method"]) is r else ("diverged" if r["diverged"] else "")
        ft = "-" if r["ft_loss"] is None else f"{r['ft_loss']:.4f}"
        kl = "-" if r["forget_kl"] is None else f"{r['forget_kl']:.4f}"
        print(f"| {r['method']} | {r['lr']:g} | {ft} | {kl} | {chosen} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
