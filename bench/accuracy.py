"""How far the compact top-K + tail base reference is from exact, on a finished study's adapters."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any


def topk_gap(study_dir: Path, ks: tuple[int, ...] = (4096, 1024, 256)) -> dict[str, Any]:
    """``forget_kl`` of every finished adapter of the study against the exact reference and top-K ones.

    The top-K + tail KL is a lower bound on the exact KL (coarse-graining never
    increases a KL), so the gap ``(exact - topK) / exact`` is >= 0 and is the
    relative error a user accepts by choosing ``forgetting.top_k``.
    """
    from forgetscale.config import StudyConfig
    from forgetscale.forgetting import measure
    from forgetscale.models import cache_dir
    from forgetscale.probes.inference import swapped_adapters
    from forgetscale.reference import compute_reference
    from forgetscale.store import open_store
    from forgetscale.workspace import Workspace

    try:
        store = open_store(study_dir, create=False)
    except FileNotFoundError:
        return {"error": f"no study at {study_dir}; run `make study` first"}
    with store:
        study = StudyConfig.model_validate(store.get_meta("study"))
        done = [r["run_id"] for r in store.runs() if r["status"] == "done"]
    run = study.base_run()
    ws = Workspace(cache_dir())
    lm = ws.model(run)
    exact = ws.reference(run)
    bs = run.forgetting.batch_size
    per_run: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        refs = {"exact": exact}
        for k in ks:
            refs[f"top{k}"] = compute_reference(lm.model, list(exact.sequences), bs, Path(tmp) / str(k), k)
        with swapped_adapters(lm.model) as attach:
            for rid in done:
                model = attach(study_dir / "adapters" / rid, rid)
                per_run[rid] = {name: measure(model, ref, bs)["forget_kl"] for name, ref in refs.items()}
    gaps: dict[str, dict[str, float]] = {}
    for k in ks:
        rel = [(m["exact"] - m[f"top{k}"]) / m["exact"] for m in per_run.values() if m["exact"] > 0]
        if rel:
            gaps[f"top{k}"] = {"max_rel_gap": max(rel), "median_rel_gap": statistics.median(rel), "min": min(rel)}
    return {"study": str(study_dir), "n_runs": len(per_run), "gaps": gaps, "forget_kl": per_run}
