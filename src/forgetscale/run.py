"""One run from step 0: attach a fresh method (LoRA, ...), train, measure on schedule, rows to a sink.

:func:`execute_run` is the same code whatever the executor: the local executor gives it the
study's store, a Ray task a stand-in that streams each call to the driver. Both satisfy
:class:`RunSink`, the seam between a run and where its results go.
"""

from __future__ import annotations

import math
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch

from forgetscale import methods, train
from forgetscale.config import RunConfig
from forgetscale.data.encode import fingerprint
from forgetscale.fold import folded
from forgetscale.forgetting import measure
from forgetscale.mitigation import post_hoc_rows
from forgetscale.precision import resolve as resolve_precision
from forgetscale.reference import BaseReference
from forgetscale.schema import METRIC_VERSION, Measurement
from forgetscale.task import held_out_metrics
from forgetscale.texts import corpus_texts
from forgetscale.workspace import Workspace


class RunSink(Protocol):
    """Where a run's status and rows go (:class:`forgetscale.store.Store` is one)."""

    def start_run(self, run_id: str, P: int, provenance: Mapping[str, Any]) -> None: ...

    def add_measurement(self, run_id: str, row: Mapping[str, Any]) -> None: ...

    def finish_run(self, run_id: str, timings: Mapping[str, float]) -> None: ...

    def fail_run(self, run_id: str, error: str) -> None: ...


class Reporter(Protocol):
    """Told of each scheduled measurement as it is taken (:class:`forgetscale.console.Progress` is one)."""

    def step(self, step: int, steps: int, row: Mapping[str, Any]) -> None: ...


def execute_run(
    run: RunConfig, ws: Workspace, sink: RunSink, adapter_dir: Path, progress: Reporter | None = None
) -> None:
    """Train one run from scratch, handing ``sink`` a measurement row at every scheduled step.

    The adapter (a full fine-tune: the trained model) is saved to ``adapter_dir`` before
    ``sink.finish_run``; a run that raises is ``sink.fail_run`` and the exception goes on. The base
    model is handed back unchanged.
    """
    lm = ws.model(run)
    train_seqs, _ = ws.data(run)
    ref = ws.reference(run)
    task_ref = ws.task_reference(run)  # the base on the held-out examples, before any adapter exists
    bs = run.forgetting.batch_size
    replay = ws.replay(run) if run.mitigation.kind == "replay" else None  # sampled by the base, unadapted
    peft_model = methods.attach(lm.model, run)  # a full fine-tune gets a copy: lm.model is never trained
    try:
        P = methods.trainable_parameters(peft_model)
        precision = resolve_precision(run.train.precision)
        texts = {"corpus_texts": corpus_texts(ref.sequences, lm.tokenizer)}  # the store keeps them once per corpus
        sink.start_run(run.run_id, P, {**provenance(lm.fingerprint, ws.data_fingerprint(run), ref, precision), **texts})

        def metrics(model: Any) -> dict[str, float]:
            with folded(model):  # W + s BA once per evaluation, not two extra matmuls per layer and call
                return {**held_out_metrics(model, task_ref, bs), **measure(model, ref, bs),  # ft_loss, task_kl
                        "metric_version": METRIC_VERSION}  # fmt: skip

        post_hoc_seconds: dict[str, float] = {}

        def evaluate(model: Any, step: int, tokens: int) -> None:
            if step == 0 and methods.is_identity(model, lm.model):
                m = ws.base_evaluation(run, lambda: metrics(model))
            else:
                m = metrics(model)
            if not all(math.isfinite(m[k]) for k in ("ft_loss", "forget_ce", "forget_kl")):
                raise train.Diverged(
                    f"run {run.run_id}: training diverged (non-finite outputs at step {step}); lower train.lr"
                )
            own = dict(m)
            n_tokens = int(m.pop("n_tokens"))
            row = Measurement(step=step, tokens=tokens, n_eval_tokens=n_tokens, **m)  # ft_loss(_se), forgetting
            sink.add_measurement(run.run_id, row)
            if progress is not None:
                progress.step(step, run.train.steps, row)
            # mitigation.post_hoc: the adapter changed after training (rescaled, intruders reduced)
            for changed in post_hoc_rows(run, model, step, tokens, metrics, post_hoc_seconds, ws.spectra(run), own):
                sink.add_measurement(run.run_id, changed)

        try:
            timings = train.train(peft_model, lm.tokenizer, run, train_seqs, evaluate, replay)
            if post_hoc_seconds:  # measured inside the evaluations: counted apart, per method
                timings["eval"] -= sum(post_hoc_seconds.values())
                timings.update({f"post_hoc_{k}": v for k, v in post_hoc_seconds.items()})
            train.save_adapter(peft_model, adapter_dir)
        except BaseException as e:
            sink.fail_run(run.run_id, f"{type(e).__name__}: {e}")
            raise
        sink.finish_run(run.run_id, timings)
    finally:
        methods.detach(peft_model, lm.model)


def provenance(model_fp: str, data_fp: str, ref: BaseReference, precision: str) -> dict[str, Any]:
    """What produced a run's numbers: versions, git state, device, fingerprints."""
    versions = {}
    for pkg in ("forgetscale", "torch", "transformers", "peft", "accelerate", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": (ref.identity or {}).get("device") or "cpu",
        "threads": torch.get_num_threads(),
        "metric_version": METRIC_VERSION,
        "reference": ref.identity,
        "train_precision": precision,
        "git": git_state(),
        "model_fingerprint": model_fp,
        "data_fingerprint": data_fp,
        "corpus_fingerprint": fingerprint(ref.sequences),
        "corpus_tokens": ref.n_tokens,
    }


def git_state() -> str | None:
    """The commit of the forgetscale checkout running, ``-dirty`` when it has changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
