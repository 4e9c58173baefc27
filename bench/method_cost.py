"""What each method's training step and evaluation cost, as ratios to LoRA's, measured side by side.

    python -m bench.method_cost [--reps 3] [--steps 4] [--blocks 2]

One process, the ``methods`` preset's settings on the embedded model, fp32. Each round trains every method
for ``--steps`` steps (``train.train``, as a study does, no evaluation inside) and then evaluates it once
(``forgetting.measure`` and ``task.held_out_metrics`` inside ``fold.folded``, as a run does; not a full
fine-tune of every weight, whose trained LM head needs a full-logit reference), the methods in
turn, so that a load that comes and goes falls on all of them alike; DoRA is also evaluated unfolded (PEFT's
own forward, which recomputes each layer's weight norm) to show what folding it saves. Every time is in units
of the fp32 kernel time measured beside it (``bench.estimate_costs.in_kernel_units``). Prints a markdown table:
per method its P, training per step and one evaluation in kernel units, and both as ratios to LoRA rank 4
(medians over ``--reps`` rounds). The training ratios are ``estimate.METHOD_TRAIN_FACTOR``'s.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench.estimate_costs import in_kernel_units
from forgetscale import methods, train
from forgetscale.config import RunConfig, load_config
from forgetscale.fold import folded
from forgetscale.forgetting import measure
from forgetscale.models import cache_dir
from forgetscale.task import held_out_metrics
from forgetscale.workspace import Workspace


def arms(blocks: int) -> dict[str, dict[str, Any]]:
    """The methods timed: the preset's, and a full fine-tune of every weight."""
    return {
        "lora r4": {"method": {"kind": "lora"}, "lora": {"rank": 4}},
        "lora r16": {"method": {"kind": "lora"}, "lora": {"rank": 16}},
        "dora r4": {"method": {"kind": "dora"}, "lora": {"rank": 4}},
        "lora-mlp r4": {"method": {"kind": "lora"}, "lora": {"rank": 4, "target_modules": "mlp"}},
        "ia3": {"method": {"kind": "ia3"}},
        f"full, last {blocks} blocks": {"method": {"kind": "full", "blocks": blocks}},
        "full, every weight": {"method": {"kind": "full"}},
    }


def configure(base: RunConfig, spec: dict[str, dict[str, Any]], steps: int) -> RunConfig:
    """``base`` with ``spec``'s sections updated, ``steps`` steps and no evaluations."""
    d = base.model_dump()
    for section, values in {**spec, "train": {"steps": steps, "eval_steps": []}}.items():
        d[section] = {**d[section], **values}
    return RunConfig.model_validate(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=2)
    args = ap.parse_args()
    first = load_config(None, "methods", overrides=["train.precision=fp32"]).runs()[0]
    ws = Workspace(cache_dir())
    lm, (train_seqs, _) = ws.model(first), ws.data(first)
    ref, task_ref, bs = ws.reference(first), ws.task_reference(first), first.forgetting.batch_size
    noop = lambda *a: None  # noqa: E731  (training without evaluations)

    def evaluate(model: Any) -> None:
        measure(model, ref, bs)
        held_out_metrics(model, task_ref, bs)

    runs = {name: configure(first, spec, args.steps) for name, spec in arms(args.blocks).items()}
    got: dict[str, dict[str, list[float]]] = {name: {"train": [], "eval": []} for name in runs}
    got["dora r4, unfolded"] = {"train": [], "eval": []}
    P: dict[str, int] = {}
    for _ in range(args.reps):
        for name, run in runs.items():
            model = methods.attach(lm.model, run)
            try:
                P[name] = methods.trainable_parameters(model)
                got[name]["train"].append(in_kernel_units(
                    lambda m=model, r=run: train.train(m, lm.tokenizer, r, train_seqs, noop)) / args.steps)  # fmt: skip
                if run.method.blocks is not None or run.method.kind != "full":  # a trained head needs logits
                    with folded(model):
                        got[name]["eval"].append(in_kernel_units(lambda m=model: evaluate(m)))
                if name == "dora r4":  # PEFT's own forward, what the evaluation ran before DoRA was folded
                    model.eval()
                    got["dora r4, unfolded"]["eval"].append(in_kernel_units(lambda m=model: evaluate(m)))
            finally:
                methods.detach(model, lm.model)
    med = {name: {k: statistics.median(v) if v else None for k, v in g.items()} for name, g in got.items()}
    lora = med["lora r4"]
    print(f"{args.reps} rounds of {args.steps} steps and one evaluation each, fp32; kernel units are multiples of "
          "the fp32 kernel time measured beside each phase; medians\n")
    print("| method | P | training per step | ratio to LoRA r4 | one evaluation | ratio to LoRA r4 |")
    print("|---|---|---|---|---|---|")
    for name, m in med.items():
        tr = "- | -" if m["train"] is None else f"{m['train']:.1f} | {m['train'] / lora['train']:.2f}"
        ev = "- | -" if m["eval"] is None else f"{m['eval']:.1f} | {m['eval'] / lora['eval']:.2f}"
        print(f"| {name} | {P.get(name, P['dora r4']):,} | {tr} | {ev} |")


if __name__ == "__main__":
    main()
