"""Command line: thin commands over the Python API.

Heavy imports (torch, transformers) happen inside the commands, so ``--help``
is instant. Bad input exits 2 with one line on stderr; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from forgetscale.console import fmt, log_to_stderr, print_rows, quiet_libraries
from forgetscale.errors import UserError

DATASET_HELP = ("the fits' group: a dataset, or for a method other than LoRA the dataset with its method, as "
                "`forgetscale fit` names it ('news [dora]')")


def main(argv: list[str] | None = None) -> int:
    # Read by OpenMP when torch loads (inside the commands, so it is not loaded yet). Spinning
    # worker threads collapse throughput when another process shares the cores: measured here
    # beside one busy process, sampling the default `self` corpus had not finished after 5 min
    # with the default policy and took about a minute with PASSIVE. Set the variable to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    log_to_stderr()  # the library's log lines (progress, loads, warnings) as the commands have always shown them
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"forgetscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forgetscale: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="forgetscale", description="Measure, predict and reduce forgetting in fine-tuning."
    )
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a forgetting study (resumable)")
    r.add_argument("study", nargs="?", type=Path, help="study YAML file")
    r.add_argument("--preset", help="default | smoke | mitigations | paper (default: default, when no study file)")
    r.add_argument("--out", type=Path, help="study directory (default: runs/<study name>)")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.lr=1e-3 or sweep.lora.rank=[1,4]",
    )
    r.add_argument("--dry-run", action="store_true", help="validate and print the run plan; run nothing")
    r.add_argument(
        "--executor", choices=["local", "ray"],
        help="where runs execute: in this process (default) or as Ray tasks, one GPU each (forgetscale[ray])",
    )  # fmt: skip
    r.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster to join (auto, HOST:PORT); implies --executor ray"
    )
    r.set_defaults(func=cmd_run)

    f = sub.add_parser("forgetting", help="forgetting of an adapter or fine-tuned model against its base")
    f.add_argument("--base", help="base model: built-in name, hub id, directory or .gguf")
    g = f.add_mutually_exclusive_group(required=True)
    g.add_argument("--adapter", type=Path, help="PEFT adapter directory")
    g.add_argument("--model", type=Path, help="fully fine-tuned model directory")
    f.add_argument("--data", help="forgetting corpus: text file, 'self' (default) or 'wikitext'")
    f.add_argument("--like", type=Path, metavar="DIR",
                   help="measure on exactly the base, corpus and settings of the study in DIR (checks a stored row)")
    f.add_argument("--seq-len", type=int, help="block length for text corpora (default 128)")
    f.add_argument("--batch-size", type=int, help="sequences per forward pass (default 8)")
    f.add_argument("--top-k", type=int, help="compact base reference: top-K + tail (a KL lower bound); default exact")
    f.add_argument(
        "--reference", choices=["hidden", "logits"],
        help="exact reference storage: d floats per token from the base's hidden states (default; full logits "
        "when the fine-tune changed the LM head) or the full log-probs",
    )  # fmt: skip
    f.add_argument("--reverse", action="store_true",
                   help="require reverse KL(p_ft || p_base); needs --reference logits (which always prints it)")
    f.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="load both models in this dtype (default float32; docs/precision.md)")
    f.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="where both models run (default auto: cuda, then mps, then cpu)")
    f.add_argument("--top", type=int, default=0, metavar="N", help="list the N corpus texts with the largest KL")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_forgetting)

    ft = sub.add_parser("fit", help="fit scaling laws to a study (or to a CSV file)")
    ft.add_argument("dir", nargs="?", type=Path, help="study directory")
    ft.add_argument("--law", action="append", help="law name (repeatable; default: every applicable law)")
    ft.add_argument("--from-csv", type=Path, help="fit external data instead of a study")
    ft.add_argument("--x", help="CSV input column(s), comma-separated")
    ft.add_argument("--y", help="CSV target column(s), comma-separated (paper: ft_loss_col,forgetting_col)")
    ft.add_argument("--group", help="CSV column identifying a run (the jackknife leaves runs out)")
    ft.add_argument("--min-step", type=int, help="exclude steps below this (the paper used 50)")
    ft.add_argument("--n-boot", type=int, help="parameter draws kept for the bands of the mean (0: none)")
    ft.add_argument("--json", action="store_true")
    ft.set_defaults(func=cmd_fit)

    pr = sub.add_parser("predict", help="predict fine-tuning loss and forgetting from the fitted laws")
    pr.add_argument("dir", type=Path)
    g = pr.add_mutually_exclusive_group(required=True)
    g.add_argument("--rank", type=float)
    g.add_argument("--params", type=float, help="trainable parameters P")
    pr.add_argument("--steps", type=float, required=True)
    pr.add_argument("--dataset", help=DATASET_HELP)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    pl = sub.add_parser("plan", help="best (rank, steps) under a forgetting budget")
    pl.add_argument("dir", type=Path)
    pl.add_argument("--max-forgetting", type=float, required=True, help="budget in nats")
    pl.add_argument("--metric", choices=["forget_ce", "forget_kl"], default="forget_ce")
    pl.add_argument("--bound", choices=["upper", "mean"], default="upper", help="which estimate must fit the budget")
    pl.add_argument("--dataset", help=DATASET_HELP)
    pl.add_argument("--extrapolate", action="store_true",
                    help="also consider ranks and steps beyond the studied ones (flagged 'extrapolated')")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    # commands owned by their stage's package; each module keeps heavy imports inside its command
    from forgetscale.compare import add_compare_command
    from forgetscale.probes.command import add_flips_command, add_probe_command
    from forgetscale.report.command import add_report_command

    add_probe_command(sub)
    add_flips_command(sub)
    add_report_command(sub)
    add_compare_command(sub)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from forgetscale.api import run_study
    from forgetscale.summary import summary_lines

    if not args.dry_run:
        quiet_libraries()
    done = run_study(args.study, args.out, preset=args.preset, overrides=[*args.overrides, *_executor_sets(args)],
                     dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        print(f"study {done.config.name!r}: {len(done.runs)} runs -> {done.out}")
        for r in done.runs:
            print(
                f"  {r.run_id}  model={r.model.name} data={r.data.dataset} method={r.method_label} size={r.size} "
                f"steps={r.train.steps} lr={r.train.lr} opt={r.train.optimizer} batch={r.train.batch_size} "
                f"seq_len={r.train.seq_len} evals at {list(r.eval_schedule())} corpus={r.forgetting.corpus}"
                + (f" mitigation={r.mitigation.kind}" if r.mitigation.kind != "none" else "")
            )
        return 0
    _print_table(done.table)
    print("\n".join(summary_lines(done.fits)))
    print(f"results: {done.out / 'study.sqlite'}")
    return 0


def _executor_sets(args: argparse.Namespace) -> list[str]:
    """``--executor``/``--ray-address`` as ``--set`` overrides (they win over the study file)."""
    if args.ray_address is not None and args.executor == "local":
        raise UserError("--ray-address joins a Ray cluster: it needs --executor ray, not local")
    kind = "ray" if args.ray_address is not None else args.executor
    return [*([f"executor.kind={kind}"] if kind else []),
            *([f"executor.address={args.ray_address}"] if args.ray_address is not None else [])]  # fmt: skip


def cmd_forgetting(args: argparse.Namespace) -> int:
    quiet_libraries()
    from forgetscale.api import measure_forgetting
    from forgetscale.kld import summary_lines
    from forgetscale.texts import top_lines

    if args.top < 0:
        raise UserError(f"--top {args.top}: expected a number of texts, 0 or more")
    result = measure_forgetting(
        args.base,
        args.adapter if args.adapter is not None else args.model,
        args.data,
        kind="adapter" if args.adapter is not None else "model",
        seq_len=args.seq_len,
        top_k=args.top_k,
        batch_size=args.batch_size,
        reference=args.reference,
        like=args.like,
        top=args.top,
        reverse=args.reverse,
        dtype=args.dtype,
        device=args.device,
    )
    metrics = result.as_dict()
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print("\n".join(summary_lines(metrics)))  # llama.cpp's layout, each mean with its se over sequences
    if result.top:
        print(f"\n====== The {len(result.top)} corpus texts with the largest mean KL per token ======")
        print("\n".join(top_lines(result.top)))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from forgetscale import api
    from forgetscale.summary import RELIABILITY_LEGEND, finding_text

    if args.from_csv is not None:
        if not (args.x and args.y and args.law and len(args.law) == 1):
            raise UserError("fit --from-csv needs --x, --y and exactly one --law")
        result = api.fit_csv(args.from_csv, args.x.split(","), args.y.split(","), args.law[0], args.group,
                             n_boot=200 if args.n_boot is None else args.n_boot)  # fmt: skip
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _print_fit(args.law[0], result)
        return 0
    if args.dir is None:
        raise UserError("fit needs a study directory or --from-csv FILE")
    result = api.fit(args.dir, args.law, min_step=args.min_step, n_boot=args.n_boot)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for ds, by_law in result["fits"].items():
        for law, fit in by_law.items():
            _print_fit(f"{ds} / {law}", fit)
    print_rows(result["comparison"], ["dataset", "target", "law", "r2", "heldout_P_error_of_change",
                                      "heldout_N_error_of_change", "heldout_error_of_change", "noise_floor",
                                      "state", "coverage", "units"])  # fmt: skip
    print(RELIABILITY_LEGEND)
    for r in result["comparison"]:
        if r["state"] != "reliable":
            print(f"  {r['dataset']} {r['target']} {r['law']}: {r['state']}: {r['reliability']}")
    for f in result.get("findings") or []:
        print(f"{f['dataset']} {f['finding']} {f['verdict']}: {finding_text(f)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from forgetscale.api import predict

    result = predict(args.dir, args.steps, rank=args.rank, params=args.params, dataset=args.dataset)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"dataset {result['dataset']}: P = {result['P']:.4g}, N = {result['N']:g}")
    for t in ("ft_loss", "forget_ce", "forget_kl"):
        d = result.get(t) or {}
        if d.get("value") is None:
            print(f"  {t:>10} {d.get('reason', 'no reliable law')}")
            continue
        ci = f"[{fmt(d['lo'])}, {fmt(d['hi'])}]"
        extra = f"  (extrapolated, {d['distance']:.2f} log units beyond the data)" if d["extrapolated"] else ""
        via = f" via {d['derived_from']}" if d.get("derived_from") else ""
        print(f"  {t:>10} {fmt(d['value'])}  {_interval_text(d)} {ci}  law {d['law']}{via} ({d['state']}){extra}")
        if d.get("widened_for"):
            print(f"  {'':>10} {d['law_choice']}")
    given = {(result.get(t) or {}).get("conditional_on") for t in ("ft_loss", "forget_ce", "forget_kl")} - {None}
    for c in sorted(given):
        print(f"  intervals conditional on {c}")
    return 0


def _interval_text(d: dict[str, Any]) -> str:
    """What an interval is: its level, its leave-one-run-out check, the level its runs can vouch for, its units."""
    cov = "-" if d.get("coverage") is None else f"{d['coverage']:.0%}"
    sup = "" if d.get("supported_level") is None else f", {d['supported_level']:.0%} without the normal model"
    return f"{d.get('level', 0.95):.0%} prediction interval (checked coverage {cov}, {d.get('units')} runs{sup})"


def cmd_plan(args: argparse.Namespace) -> int:
    from forgetscale.api import plan

    result = plan(args.dir, args.max_forgetting, dataset=args.dataset, metric=args.metric, bound=args.bound,
                  extrapolate=args.extrapolate)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["metric"]
    if result.get("steps") is None:
        print(f"dataset {result['dataset']}: no plan: {result.get('reason')}")
        return 0
    ext = " (extrapolated)" if result.get("extrapolated") else ""
    where = "any size and steps (--extrapolate)" if result.get("extrapolate") else "the studied sizes and steps"
    size = f"rank {result['rank']}" if result.get("rank") is not None else f"P {result['P']:.4g} parameters"
    print(
        f"dataset {result['dataset']}: best within {m} <= {args.max_forgetting:g} ({result['bound']} bound), "
        f"among {where}: {size}, {result['steps']} steps{ext}"
    )
    for t in ("ft_loss", m):
        d, about = result[t], (result.get("intervals") or {}).get(t) or {}
        print(f"  {t:>10} {fmt(d['value'])}  {_interval_text(about)} [{fmt(d['lo'])}, {fmt(d['hi'])}]  "
              f"law {result['laws'][t]} ({about.get('state')})")
    rows = [
        {"rank": t["rank"], "P": t.get("P"), "steps": t["steps"], "ft_loss": (t.get("ft_loss") or {}).get("value"),
         m: (t.get(m) or {}).get("value"), f"{m}_hi": (t.get(m) or {}).get("hi"),
         "extrapolated": t.get("extrapolated")}
        for t in result["tradeoff"]
    ]  # fmt: skip
    print_rows(rows, ["rank", "P", "steps", "ft_loss", m, f"{m}_hi", "extrapolated"])
    return 0


def _print_fit(title: str, fit: dict[str, Any]) -> None:
    flag = "" if fit.get("fit_clean", True) else "  [fit warnings: " + "; ".join(fit.get("warnings", [])) + "]"
    r2 = ", ".join(f"{t} {fmt(v)}" for t, v in (fit.get("r2") or {}).items())
    rmse = ", ".join(f"{t} {fmt(v)}" for t, v in (fit.get("rmse") or {}).items())
    print(f"{title}: R2 {r2}; RMSE {rmse}{flag}")
    inf = fit.get("inference") or {}
    if inf:
        print(f"    95% intervals: t over {inf.get('units')} runs and {inf.get('n_cells')} (data order, step) cells, "
              f"conditional on {inf.get('conditional_on')}")
    for name, p in fit["params"].items():
        note = "  (pinned: gauge)" if p.get("pinned") else ""
        print(f"    {name:>9} = {fmt(p['value'])}  95% [{fmt(p['lo'])}, {fmt(p['hi'])}]{note}")


def _print_table(rows: list[dict[str, Any]]) -> None:
    print_rows(rows, ["run_id", "dataset", "rank", "P", "status", "step", "ft_loss", "forget_ce", "forget_kl",
                      "seconds"])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
