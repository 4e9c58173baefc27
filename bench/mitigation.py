"""What each mitigation costs: training time with replay or the KL-to-base term against plain LoRA,
and the evaluations that WiSE-FT rescaling adds, measured side by side in one process."""

from __future__ import annotations

import statistics
import time
from typing import Any

from forgetscale import train
from forgetscale.config import RunConfig
from forgetscale.fold import folded
from forgetscale.forgetting import measure
from forgetscale.intruders import BaseSpectra, IntruderReduction
from forgetscale.mitigation import post_hoc_rows, replay_sequences
from forgetscale.task import held_out_metrics


def mitigation_overhead(setup: Any, steps: int = 8, repeats: int = 3) -> dict[str, Any]:
    """Training seconds of ``none``, ``replay`` and ``kl`` on the same run, alternated ``repeats`` times
    (``train.train``'s ``train`` window: updates only, evaluations no-ops); then, on the last plain
    adapter, one evaluation against the ``rescale`` evaluations (one per scale), which are its whole cost,
    and intruder detection (the base's singular vectors once, then each run's merged weights).

    Args:
        setup: a :class:`bench.speed.Setup` (its base model, workspace and news run are used; its
            benchmark adapter is removed, so run this after the benchmarks that need it).
        steps: training steps per timing.
        repeats: timings per variant (the median is reported).

    Returns:
        ``{"steps", "training": {kind: {"train_s", "overhead", "strength"}}, "rescale": {...}}``; ``overhead``
        is the median time over plain LoRA's, minus 1.
    """
    base = setup.base_model()
    ws = setup.ws
    run = setup.run
    plain = run.model_copy(update={"train": run.train.model_copy(update={"steps": steps}),
                                   "mitigation": run.mitigation.model_copy(update={"kind": "none"})})  # fmt: skip
    variants = {
        "none": plain,
        "replay": _kind(plain, "replay", replay_fraction=run.mitigation.replay_fraction or 0.25),
        "kl": _kind(plain, "kl", kl_weight=run.mitigation.kl_weight or 1.0),
    }
    lm = ws.model(plain)
    seqs, _ = ws.data(plain)
    task_ref = ws.task_reference(plain)  # the base on the held-out examples (cached, or taken now: no adapter)
    replay = replay_sequences(variants["replay"], lm.tokenizer, base, lm.fingerprint, ws.cache)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for kind, r in variants.items():
            peft_model = train.attach_lora(base, r.lora, r.train.seed)
            try:
                extra = replay if kind == "replay" else None
                times[kind].append(train.train(peft_model, lm.tokenizer, r, seqs, lambda *a: None, extra)["train"])
            finally:
                peft_model.unload()
    none = statistics.median(times["none"])
    out: dict[str, Any] = {"steps": steps, "training": {}}
    for kind, ts in times.items():
        out["training"][kind] = {"train_s": ts, "overhead": statistics.median(ts) / none - 1,
                                 "strength": variants[kind].mitigation.strength()}  # fmt: skip

    rescale = _kind(plain, "rescale")
    ref = ws.reference(rescale)
    bs = rescale.forgetting.batch_size

    def metrics(model: Any) -> dict[str, float]:  # a study's evaluation, as forgetscale.run makes it
        with folded(model):
            return {**held_out_metrics(model, task_ref, bs), **measure(model, ref, bs)}

    peft_model = train.attach_lora(base, rescale.lora, rescale.train.seed)
    try:
        train.train(peft_model, lm.tokenizer, rescale, seqs, lambda *a: None)
        t0 = time.perf_counter()
        metrics(peft_model)
        t1 = time.perf_counter()
        rows = post_hoc_rows(rescale, peft_model, rescale.train.steps, 0, metrics)
        t2 = time.perf_counter()
        spectra = BaseSpectra()  # intruder detection: the first run also computes the base's singular vectors
        m = rescale.mitigation
        IntruderReduction(peft_model, m.intruder_top_k, m.intruder_epsilon, spectra)
        t3 = time.perf_counter()
        IntruderReduction(peft_model, m.intruder_top_k, m.intruder_epsilon, spectra)
        t4 = time.perf_counter()
    finally:
        peft_model.unload()
    out["rescale"] = {"scales": list(rescale.mitigation.scales), "evaluation_s": t1 - t0, "scaled_s": t2 - t1,
                      "per_scale_vs_evaluation": (t2 - t1) / max(len(rows), 1) / (t1 - t0),
                      "vs_training": (t2 - t1) / none}  # fmt: skip
    out["intruders"] = {"first_detection_s": t3 - t2, "detection_s": t4 - t3, "vs_evaluation": (t4 - t3) / (t1 - t0),
                        "vs_training": (t4 - t3) / none}  # fmt: skip
    return out


def _kind(run: RunConfig, kind: str, **update: Any) -> RunConfig:
    return run.model_copy(update={"mitigation": run.mitigation.model_copy(update={"kind": kind, **update})})
