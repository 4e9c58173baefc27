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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller workloads (a sanity check, not a measurement)")
    p.add_argument("--study", type=Path, default=Path("runs/default"), help="study directory for the breakdown")
    p.add_argument(
        "--only", nargs="*", choices=["forgetting", "trainer", "breakdown", "topk_gap"], help="run only these"
    )
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from bench import accuracy, breakdown, speed
    from forgetscale.console import quiet_libraries

    quiet_libraries()
    only = set(args.only or ["forgetting", "trainer", "breakdown", "topk_gap"])
    results: dict[str, object] = {"machine": _machine()}
    if "forgetting" in only or "trainer" in only:
        setup = speed.Setup.create(quick=args.quick)
        if "forgetting" in only:
            results["forgetting"] = speed.forgetting_speedup(setup, n_evals=10)
        if "trainer" in only:
            results["trainer"] = speed.trainer_overhead(setup)
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
    f = results.get("forgetting")
    if isinstance(f, dict):
        for mode, d in f["modes"].items():
            rows.append((f"forgetting_speedup[{mode}]", f"{d['speedup']:.2f}x", "target >= 2"))
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
