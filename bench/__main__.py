"""forgetscale benchmarks: ratios measured side by side in one run (``make bench``).

Every number that matters is a ratio of two things timed in this process, one
after the other, on the default model, so that a shared, noisy machine affects
both sides alike. Prints a table and writes ``bench/results.json``.

    python -m bench [--quick] [--study runs/default] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["forgetting", "evaluation", "training_step", "scale", "trainer", "mitigation", "breakdown", "topk_gap"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller workloads (a sanity check, not a measurement)")
    p.add_argument("--study", type=Path, default=Path("runs/default"), help="study directory for the breakdown")
    p.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from bench import accuracy, breakdown, speed
    from forgetscale.console import quiet_libraries

    quiet_libraries()
    only = set(args.only or BENCHMARKS)
    results: dict[str, object] = {"machine": _machine()}
    if only & {"forgetting", "evaluation", "training_step", "scale", "trainer", "mitigation"}:
        setup = speed.Setup.create(quick=args.quick)
        if "forgetting" in only:
            f = speed.forgetting_speedup(setup, n_evals=10)
            results["forgetting"] = f
            # the headline figures: the hidden reference against the naive two-model evaluation
            results["forgetting_speedup"] = {"value": f["modes"]["hidden"]["speedup"], "target": 3}
            results["hidden_reference_rel_error"] = {"value": f["hidden_reference_rel_error"], "target": 1e-6}
            results["reference_bytes_per_token"] = {m: d["bytes_per_token"] for m, d in f["modes"].items()}
        if only & {"evaluation", "scale"}:
            from bench import evaluation

            bs = setup.run.forgetting.batch_size
            if "evaluation" in only:
                results["eval_vs_bare_forward"] = evaluation.eval_vs_bare_forward(
                    setup.peft_model, setup.corpus, setup.task_ref, bs
                )
            if "scale" in only:
                sizes = (1_000, 3_000) if args.quick else (1_000, 10_000, 100_000)
                tok = setup.ws.model(setup.run).tokenizer
                results["scale"] = evaluation.scale(setup.peft_model, tok, sizes=sizes, batch_size=bs)
        if "training_step" in only:  # after the evaluation figures: it takes the adapter off the model
            from bench import evaluation

            run, tok = setup.run, setup.ws.model(setup.run).tokenizer
            results["train_step_vs_bare"] = evaluation.train_step_vs_bare(
                setup.base_model(), tok, run, setup.ws.data(run)[0]
            )
        if "trainer" in only:
            results["trainer"] = speed.trainer_overhead(setup)
        if "mitigation" in only:
            from bench.mitigation import mitigation_overhead

            results["mitigation"] = mitigation_overhead(setup)
    if "breakdown" in only:
        results["study_breakdown"] = breakdown.study_breakdown(args.study)
    if "topk_gap" in only:
        results["topk_gap"] = accuracy.topk_gap(args.study)
    args.out.write_text(json.dumps(results, indent=2))
    _print(results)
    print(f"\nwritten: {args.out}")
    return 0


def _machine() -> dict[str, object]:
    import torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _print(results: dict[str, object]) -> None:
    rows: list[tuple[str, str, str]] = []
    for key, fmt in (("eval_vs_bare_forward", "{:.3f}x"), ("train_step_vs_bare", "{:.3f}x"),
                     ("forgetting_speedup", "{:.2f}x"), ("hidden_reference_rel_error", "{:.1e}")):  # fmt: skip
        r = results.get(key)
        if isinstance(r, dict):
            rows.append((key, fmt.format(r["value"]), f"target {r['target']:g}"))
    e = results.get("eval_vs_bare_forward")
    if isinstance(e, dict):
        rows.append(("  with the full-logit reference", f"{e['logits_reference_ratio']:.3f}x", ""))
        rows.append(("  with the adapter unmerged", f"{e['unmerged_ratio']:.3f}x", ""))
    b = results.get("reference_bytes_per_token")
    if isinstance(b, dict):
        for mode, v in b.items():
            rows.append((f"reference_bytes_per_token[{mode}]", f"{v:,.0f}", ""))
    sc = results.get("scale")
    if isinstance(sc, dict):
        for r in sc["rows"]:
            note = f"ref {r['reference_bytes'] / 1e6:.1f} MB, peak +{r['evaluation_peak_mb']:.0f} MB"
            rows.append((f"scale: {r['tokens']} tokens", f"{r['evaluation_s']:.1f}s", note))
        rows.append(
            (
                "scale: time/token growth",
                f"{sc['time_per_token_growth']:.2f}x",
                f"over {sc['token_growth']:.0f}x tokens",
            )
        )
    f = results.get("forgetting")
    if isinstance(f, dict):
        for mode, d in f["modes"].items():
            rows.append((f"forgetting_speedup[{mode}]", f"{d['speedup']:.2f}x", "target >= 3"))
            rows.append((f"forgetting_rel_error[{mode}]", f"{d['rel_error']:.2e}", "target <= 1e-3"))
        rows.append(("naive forgetting tokens/s", f"{f['naive_tokens_per_s']:.0f}", ""))
    t = results.get("trainer")
    if isinstance(t, dict):
        rows.append(("trainer_overhead", f"{t['overhead'] * 100:+.1f}%", "target <= 5% (both datasets)"))
        for name, d in t["datasets"].items():
            note = f"{d['tokens_per_s']:.0f} tokens/s, {d['target_fraction']:.0%} of positions labelled"
            rows.append((f"trainer_overhead[{name}]", f"{d['overhead'] * 100:+.1f}%", note))
        rows.append(("matmul_peak_fraction", f"{t['matmul_peak_fraction']:.2f}", f"target >= 0.5 ({t['precision']})"))
        for prec, d in t["precisions"].items():
            note = f"{d['train_gflops']:.0f} of {d['peak_gflops']:.0f} GFLOP/s"
            rows.append((f"matmul_peak_fraction[{prec}]", f"{d['matmul_peak_fraction']:.2f}", note))
        rows.append((f"training speedup {t['precision']} vs fp32", f"{t['precision_speedup']:.2f}x", ""))
    m = results.get("mitigation")
    if isinstance(m, dict):
        for kind, d in m["training"].items():
            note = "plain LoRA" if kind == "none" else f"strength {d['strength']:g}"
            rows.append((f"mitigation_overhead[{kind}]", f"{d['overhead'] * 100:+.1f}%", note))
        r = m["rescale"]
        rows.append(("mitigation_overhead[rescale]", f"{r['vs_training'] * 100:+.1f}%",
                     f"{len(r['scales'])} scaled evaluations, {r['per_scale_vs_evaluation']:.2f}x one evaluation each"))
        i = m["intruders"]
        rows.append(("mitigation_overhead[intruders]", f"{i['vs_training'] * 100:+.1f}%",
                     f"detection per run {i['vs_evaluation']:.2f}x one evaluation "
                     f"(first run +{i['first_detection_s']:.1f}s)"))
    b = results.get("study_breakdown")
    if isinstance(b, dict) and "phases" in b:
        for k, v in b["phases"].items():
            rows.append((f"study: {k}", f"{v:.1f}s", f"{100 * v / b['total']:.0f}%"))
        rows.append(("study: total (sum of phases)", f"{b['total']:.1f}s", ""))
    elif isinstance(b, dict):
        rows.append(("study breakdown", b.get("error", "?"), ""))
    g = results.get("topk_gap")
    if isinstance(g, dict) and "gaps" in g:
        for name, d in g["gaps"].items():
            note = f"median {d['median_rel_gap']:.1e} over {g['n_runs']} runs of the study"
            rows.append((f"forget_kl gap {name} vs exact", f"{d['max_rel_gap']:.1e}", note))
    elif isinstance(g, dict):
        rows.append(("top-K gap", g.get("error", "?"), ""))
    w = max(len(r[0]) for r in rows) if rows else 10
    for name, value, note in rows:
        print(f"{name:<{w}}  {value:>12}  {note}")


if __name__ == "__main__":
    sys.exit(main())
