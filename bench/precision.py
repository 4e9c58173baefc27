"""The built-in model loaded in bf16 against fp32: how far its forgetting numbers move, what its reference costs.

    python -m bench.precision [--out runs/precision]

Trains one LoRA adapter on the default's data and corpus in fp32 (rank 16, 16 steps, evaluated at the last),
then measures that one adapter against the base loaded in fp32 and in bf16, each with its own reference
(``forgetscale forgetting --like DIR [--dtype bfloat16]``), and runs the smoke study with the base in bf16
to check that every run's step 0 is exactly 0 and to size its references. Counts, not timings: any CPU.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np

from forgetscale.api import measure_forgetting
from forgetscale.config import load_config
from forgetscale.models import cache_dir
from forgetscale.study import run_study


def reference_bytes_per_position(cache: Path) -> list[dict]:
    """Each cached reference made in bf16: its storage, size on disk and bytes per position."""
    out = []
    for d in sorted((cache / "refs").iterdir()):
        ident = d / "identity.json"
        if not ident.is_file() or json.loads(ident.read_text())["eval_dtype"] != "bfloat16":
            continue
        n = len(np.load(d / "meta.npz")["entropy"])
        size = sum(f.stat().st_size for f in d.iterdir())
        mode = "hidden" if (d / "mean_emb.npy").is_file() else "logits" if (d / "logp.npy").is_file() else "top-K"
        out.append({"mode": mode, "positions": n, "bytes": size, "bytes_per_position": size / n})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/precision"))
    args = p.parse_args(argv)

    trained = args.out / "fp32"
    study = load_config(preset="default", overrides=[
        "name=precision", "sweep.lora.rank=[16]", "sweep.train.seed=[0]", "train.steps=16", "train.eval_steps=[16]",
        "probes.enabled=false", "fit.min_step=16"])  # fmt: skip
    run_study(study, trained)
    (adapter,) = sorted((trained / "adapters").iterdir())
    rows = {dtype: measure_forgetting(None, adapter, like=trained, dtype=dtype).as_dict()
            for dtype in ("float32", "bfloat16")}  # fmt: skip
    moved = {}
    for k in ("forget_kl", "forget_ce", "base_entropy"):
        a, b = rows["float32"][k], rows["bfloat16"][k]
        moved[k] = {"fp32": a, "bf16": b, "difference": b - a, "relative": (b - a) / a,
                    "fp32_se": rows["float32"].get(f"{k}_se")}  # fmt: skip

    smoke = load_config(preset="smoke", overrides=["model.dtype=bfloat16", "probes.enabled=false"])
    run_study(smoke, args.out / "smoke-bf16")
    con = sqlite3.connect(args.out / "smoke-bf16" / "study.sqlite")
    try:
        step0 = [kl for (kl,) in con.execute("SELECT forget_kl FROM measurements WHERE step = 0")]
    finally:
        con.close()
    result = {"adapter": str(adapter), "moved": moved, "smoke_bf16_step0_kl": step0,
              "bf16_references": reference_bytes_per_position(cache_dir())}  # fmt: skip
    print(json.dumps(result, indent=1))
    (args.out / "precision.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
