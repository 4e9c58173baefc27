"""The real path on a GPU, in a few minutes: ``make gpu-check`` (or ``python -m bench.gpu_check``).

On a CUDA machine it runs, with a fresh cache:

1. the smoke study on the built-in model in fp32 and with the base in bf16, on the GPU: every run's step 0
   must be exactly 0, and every reference must have been made on the GPU in the model's dtype;
2. ``forgetscale forgetting`` on one of those adapters against an independent computation (stock PEFT and
   transformers, float64 softmax over the same corpus positions);
3. the callback example (``examples/callback_sft.py``);

and compares the fp32 study's step-0 numbers with this CPU's (``bench/gpu_check_cpu.json``, written by
``--device cpu --write-reference``). It prints every timing. ``--device cpu`` runs the same checks on a CPU
(the test suite does, on the tiny model, with ``--model``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPU_FIGURES = HERE / "gpu_check_cpu.json"
STEP0_REL = 1e-4
"""Step 0 measures the base against itself and the held-out set with the untrained model: the same weights and
the same tokens on both machines, so only fp32 summation order differs (~1e-7 relative per log-probability,
averaged over ~100 positions); 1e-4 leaves room for a GPU's fused kernels while a wrong corpus, tokenizer or
weights moves these numbers by percent."""
INDEPENDENT_REL = 1e-4
"""forget_kl from the package against a float64 recomputation from stock PEFT's logits on the same device: the
two differ by the fp32 rounding of the logits (~1e-7 of ~20 nats) through a KL of ~0.1 nats, so about 2e-5."""


def _timed(label: str, fn, timings: dict[str, float]):
    t = time.perf_counter()
    value = fn()
    timings[label] = round(time.perf_counter() - t, 1)
    print(f"[gpu-check] {label}: {timings[label]} s", flush=True)
    return value


def smoke(out: Path, model: str, device: str, dtype: str, overrides: list[str]) -> dict:
    """The smoke study on ``device`` in ``dtype``: step-0 rows, references' identities, last rows."""
    from forgetscale import load_results
    from forgetscale.config import load_config
    from forgetscale.study import run_study

    sets = [f"model.name={model}", f"model.device={device}", f"model.dtype={dtype}", "probes.enabled=false",
            *overrides]  # fmt: skip
    run_study(load_config(preset="smoke", overrides=sets), out)
    res = load_results(out)
    step0 = [r for r in res.rows if r["step"] == 0]
    bad = [r["run_id"] for r in step0 if r["forget_kl"] != 0.0]
    assert not bad, f"{device}/{dtype}: step 0 not exactly 0 in runs {bad}"
    refs = [r["provenance"]["reference"] for r in res.runs]
    assert all(ref["device"].startswith(device) and ref["eval_dtype"] == dtype for ref in refs), refs
    return {"step0": {k: step0[0][k] for k in ("base_entropy", "forget_ce", "ft_loss", "data_loss")},
            "last": [{k: r[k] for k in ("run_id", "step", "forget_kl", "ft_loss")} for r in res.rows
                     if r["step"] == max(x["step"] for x in res.rows)]}  # fmt: skip


def independent_kl(base_name: str, adapter: Path, study: Path, device: str) -> tuple[float, float]:
    """(forgetscale's forget_kl, stock PEFT's float64 KL) of ``adapter`` on the study's corpus, on ``device``."""
    import torch
    from peft import PeftModel

    from forgetscale import api
    from forgetscale.api import measure_forgetting

    ours = measure_forgetting(None, adapter, like=study, device=device).as_dict()["forget_kl"]
    run = api._like_run(study, adapter)
    from forgetscale.workspace import Workspace

    ws = Workspace(Path(os.environ["FORGETSCALE_CACHE"]))
    seqs = ws.reference(run).sequences
    model, _ = api.load_base(base_name, device=device)

    def logprobs(m) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for s in seqs:
                z = m(input_ids=torch.tensor([s.ids], device=m.device)).logits[0, :-1]
                keep = torch.tensor(s.mask[1:], device=z.device)
                out.append(torch.log_softmax(z[keep].double(), -1))
        return torch.cat(out)

    base = logprobs(model)
    tuned = logprobs(PeftModel.from_pretrained(model, str(adapter)).eval())
    return ours, float((base.exp() * (base - tuned)).sum(-1).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="smollm2-135m-instruct", help="base model (default: the built-in)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra study overrides")
    p.add_argument("--no-callback", action="store_true", help="skip the callback example")
    p.add_argument("--write-reference", action="store_true", help="write this machine's figures to compare with")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("[gpu-check] no CUDA device here: nothing checked (run it where a GPU is, or --device cpu)")
        return 2
    os.environ["FORGETSCALE_CACHE"] = tempfile.mkdtemp(prefix="forgetscale-gpu-check-")  # references made here
    work = Path(tempfile.mkdtemp(prefix="forgetscale-gpu-check-runs-"))
    timings: dict[str, float] = {}
    figures = {dtype: _timed(f"smoke study {dtype}", lambda d=dtype: smoke(work / d, args.model, args.device, d,
                                                                          args.set), timings)
               for dtype in ("float32", "bfloat16")}  # fmt: skip
    print(f"[gpu-check] step 0 exactly 0 and references on {args.device} in both dtypes")
    adapter = sorted((work / "float32" / "adapters").iterdir())[-1]
    ours, theirs = _timed("forgetting vs stock PEFT", lambda: independent_kl(args.model, adapter, work / "float32",
                                                                              args.device), timings)  # fmt: skip
    print(f"[gpu-check] forget_kl {ours:.8f} (forgetscale) vs {theirs:.8f} (stock PEFT, float64)")
    assert abs(ours - theirs) <= INDEPENDENT_REL * abs(theirs) + 1e-7, (ours, theirs)
    if args.write_reference:
        CPU_FIGURES.write_text(json.dumps({"model": args.model, **figures["float32"]}, indent=1) + "\n")
    elif CPU_FIGURES.is_file() and json.loads(CPU_FIGURES.read_text())["model"] == args.model:
        cpu = json.loads(CPU_FIGURES.read_text())
        for k, v in cpu["step0"].items():
            here = figures["float32"]["step0"][k]
            print(f"[gpu-check] step 0 {k}: {here:.6f} here, {v:.6f} on the CPU")
            assert abs(here - v) <= STEP0_REL * abs(v), (k, here, v)
        for a, b in zip(figures["float32"]["last"], cpu["last"], strict=False):
            print(f"[gpu-check] last step, run {a['run_id']}: forget_kl {a['forget_kl']:.5f} here, "
                  f"{b['forget_kl']:.5f} on the CPU (trained: trajectories differ in their last bits)")
    if not args.no_callback:
        _timed("callback example", lambda: subprocess.run([sys.executable, str(HERE.parent / "examples" /
                                                           "callback_sft.py"), str(work / "callback")],
                                                          check=True), timings)  # fmt: skip
    print(f"[gpu-check] passed; timings (s): {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
