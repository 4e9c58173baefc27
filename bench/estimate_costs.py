"""The plan line's unit costs, measured on this machine in units of its own fp32 kernel time.

    python -m bench.estimate_costs [--reps 2] [--steps 4]

One process, the default preset's first run (rank 4, fp32): it times, each between two timings of
the fp32 kernels (``precision.time_kernels``) so that every cost is a ratio to the kernel time
measured beside it, and a load that slows both cancels out:

* ``steps`` training steps (no evaluation inside): seconds per training token;
* one forgetting evaluation (``forgetting.measure``) and one held-out evaluation
  (``task.held_out_metrics``), each folded as a run folds them;
* a no-gradient forward over the whole corpus and over half of it: the slope is the cost of a
  computed token (the tokens the evaluation computes, prompts included); what the evaluations cost
  beyond their computed tokens at that slope is their fixed cost.

Prints one JSON object: each cost in kernel units and, multiplied by ``estimate.REF_KERNEL_SECONDS``,
in seconds on the reference CPU (to compare with the constants of :mod:`forgetscale.estimate`). Medians
over ``reps``. Run it on a quiet machine: the kernel timing is a best of rounds, the phases are not, so a
load beside it inflates every cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from forgetscale import train
from forgetscale.config import load_config
from forgetscale.estimate import REF_KERNEL_SECONDS, computed_tokens
from forgetscale.fold import folded
from forgetscale.forgetting import measure
from forgetscale.forward import forward_batches
from forgetscale.models import cache_dir
from forgetscale.precision import time_kernels
from forgetscale.task import held_out_metrics
from forgetscale.workspace import Workspace


def in_kernel_units(fn: Callable[[], Any]) -> float:
    """``fn``'s wall seconds over the fp32 kernel time, the mean of one timing before and one after."""
    before = time_kernels()[0]
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    units = seconds / ((before + time_kernels()[0]) / 2)
    print(f"{units:.1f} kernel units", file=sys.stderr, flush=True)
    return units


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    study = load_config(None, "default", overrides=["train.precision=fp32", "sweep.lora.rank=[4]"])
    run = study.runs()[0]
    run = run.model_copy(update={"train": run.train.model_copy(update={"steps": args.steps, "eval_steps": []})})
    ws = Workspace(cache_dir())
    lm, (train_seqs, _) = ws.model(run), ws.data(run)
    ref, task_ref, bs = ws.reference(run), ws.task_reference(run), run.forgetting.batch_size
    corpus, held = computed_tokens(ref.sequences, bs), computed_tokens(task_ref.sequences, bs)
    full, half = list(ref.sequences), list(ref.sequences[: len(ref.sequences) // 2])
    noop = lambda *a: None  # noqa: E731  (training without evaluations)
    tokens_per_step = run.train.batch_size * run.train.grad_accum * run.train.seq_len
    got: dict[str, list[float]] = {k: [] for k in ("train", "forgetting", "held_out", "forward_all", "forward_half")}
    for _ in range(args.reps):
        peft = train.attach_lora(lm.model, run.lora, run.train.seed)
        try:
            got["train"].append(in_kernel_units(
                lambda m=peft: train.train(m, lm.tokenizer, run, train_seqs, noop)) / args.steps)  # fmt: skip
            with folded(peft):  # the kernels are timed with gradients: no torch.no_grad() around them
                got["forgetting"].append(in_kernel_units(lambda m=peft: measure(m, ref, bs)))
                got["held_out"].append(in_kernel_units(lambda m=peft: held_out_metrics(m, task_ref, bs)))
                got["forward_all"].append(in_kernel_units(
                    lambda m=peft: [None for _ in forward_batches(m, full, bs, hidden=True)]))  # fmt: skip
                got["forward_half"].append(in_kernel_units(
                    lambda m=peft: [None for _ in forward_batches(m, half, bs, hidden=True)]))  # fmt: skip
        finally:
            train.detach_lora(peft)
    med = {k: statistics.median(v) for k, v in got.items()}
    per_token = (med["forward_all"] - med["forward_half"]) / (corpus - computed_tokens(half, bs))
    fixed = med["forgetting"] + med["held_out"] - per_token * (corpus + held)
    units = {
        "train_per_token": med["train"] / tokens_per_step,
        "eval_per_computed_token": per_token,
        "eval_fixed": fixed,
        "forgetting_eval": med["forgetting"],
        "held_out_eval": med["held_out"],
    }
    print(json.dumps({
        "corpus_computed_tokens": corpus, "corpus_scored_tokens": ref.n_tokens, "held_out_computed_tokens": held,
        "threads": torch.get_num_threads(), "kernel_units": units, "raw": got,
        "reference_seconds": {k: v * REF_KERNEL_SECONDS for k, v in units.items()},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
