"""The study pipeline, top to bottom: check, prepare, run, probe, fit, report.

:func:`run_study` is the whole of ``forgetscale run``. Everything that can be wrong
with the input (config, model, datasets, corpus) is checked before the study
directory is written, so bad input never leaves a half-written study behind; the
runs then go to an executor (:mod:`forgetscale.executors`), one row per scheduled
evaluation into the store, and the stages after them read the store alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetscale.config import RunConfig, StudyConfig
from forgetscale.data.corpus import check_corpus
from forgetscale.errors import UserError
from forgetscale.estimate import Estimate, computed_tokens, estimate
from forgetscale.executors import check as check_executor
from forgetscale.executors import make_executor
from forgetscale.lock import check_free, hold
from forgetscale.methods import check_method
from forgetscale.mitigation import check_replay
from forgetscale.models import cache_dir, pick_device, resolve
from forgetscale.precision import kernel_record, measured, pin_for_study
from forgetscale.probes.runner import probe_study
from forgetscale.reference import device_label
from forgetscale.report.command import write_report
from forgetscale.results import fit
from forgetscale.schema import METRIC_VERSION
from forgetscale.store import Store, check_store, open_store
from forgetscale.workspace import Workspace

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["run_id", "dataset", "rank", "P", "status", "step", "ft_loss", "forget_ce", "forget_kl", "seconds"]
"""The columns of :attr:`StudyRun.table`."""


@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` did.

    Attributes:
        config: the study as run (``train.precision: auto`` resolved, as recorded in the store).
        out: the study directory.
        runs: every run of the sweep, in order.
        table: one row per run (:data:`SUMMARY_COLUMNS`): its last measurement, status and seconds;
            empty for a dry run.
        phases: wall seconds of the stages after the runs (``probes``, ``fit``, ``report``).
        fits: what the fit stage returned (:func:`forgetscale.results.fit`, as ``out/fits.json`` holds it);
            empty for a dry run.
    """

    config: StudyConfig
    out: Path
    runs: list[RunConfig]
    table: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    fits: dict[str, Any] = field(default_factory=dict)


def run_study(
    config: StudyConfig, out: Path, *, cache: Path | None = None, dry_run: bool = False
) -> StudyRun:
    """Run every run of ``config`` not yet done in ``out``, then probe, fit and report: ``forgetscale run``.

    Resumable: finished runs are skipped, an interrupted one is measured again from step 0.
    Writes ``out/study.sqlite``, ``out/adapters/<run_id>/``, ``out/fits.json`` and
    ``out/report.html``. One process runs a study directory at a time (its run lock).

    Args:
        config: the study (:func:`forgetscale.config.load_config`).
        out: the study directory.
        cache: the cache directory (default ``FORGETSCALE_CACHE`` or the user cache).
        dry_run: check the config and return the runs planned; load and write nothing.

    Returns:
        A :class:`StudyRun`.

    Raises:
        UserError: bad input (config, model, data, corpus, a busy or foreign study directory, Ray
            asked for but missing), before anything is written; or a run that diverged.
    """
    out, cache = Path(out), cache if cache is not None else cache_dir()
    check_executor(config.executor)  # the Ray executor without Ray fails before anything is loaded or written
    check_store(out)  # a study.sqlite that is not a forgetscale store fails before anything loads
    config = pin_for_study(config, out, cache)  # `auto` resolved once per study, then recorded
    if dry_run:
        return StudyRun(config, out, config.runs())
    check_free(out)  # a busy study is refused before anything loads (one line, nothing else printed)
    measured = measured_with(config.runs())
    check_resumable(out, measured)  # and one measured otherwise, too
    ws = Workspace(cache)
    runs = prepare_study(config, ws)  # bad input fails here, before the directory (or its lock) exists
    executor = make_executor(config.executor)  # joins or starts a Ray cluster when asked
    with hold(out):  # one runner per study directory
        with open_store(out) as store:
            store.set_meta("measured_with", measured)
            todo = register_runs(config, runs, store)
            log.info(_plan(config, runs, todo, ws, cache).line())
            executor.run(todo, ws, store, out)
            store.set_meta("phases", dict(ws.phases))
            table = summary_table(store, [r.run_id for r in runs])
        phases: dict[str, float] = {}
        if config.probes.enabled:  # before the fit, so that the findings include F5
            probed = None if config.probes.runs == "all" else [r.run_id for r in config.probed_runs()]
            _timed(phases, "probes", lambda: probe_study(out, ws, config.probes, run_ids=probed))
        fits = _timed(phases, "fit", lambda: fit(out))
        _timed(phases, "report", lambda: write_report(out, "html"))
        with open_store(out) as store:
            store.set_meta("phases", {**(store.get_meta("phases") or {}), **phases})
    return StudyRun(config, out, runs, table, phases, fits)


def prepare_study(study: StudyConfig, ws: Workspace) -> list[RunConfig]:
    """Validate every input of ``study`` and warm the shared ones; writes nothing to the study directory.

    Raises:
        UserError: anything wrong with the config, model, datasets or corpus.
    """
    runs = study.runs()
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise UserError(
            "the sweep produces duplicate runs (an axis repeats a value, or sweeps a mitigation setting that "
            "a swept mitigation.kind does not use, e.g. mitigation.kl_weight for kind none)"
        )
    for r in runs:  # cheap checks first: a typo should not wait for a model to load
        resolve(r.model)
        ws.raw_data(r)
        check_corpus(r.forgetting)
        check_replay(r)
    for r in runs:  # then validate and warm every shared input before writing anything
        ws.data(r)
        ws.reference(r)
        ws.task_reference(r)  # the base on the held-out examples (task_kl), before any adapter exists
        check_method(ws.model(r).model, r)
        if r.mitigation.kind == "replay":  # sampled here, so that Ray ships it with the corpora
            ws.replay(r)
    return runs


def measured_with(runs: list[RunConfig]) -> dict[str, Any]:
    """What every row of a study must share to be compared: the metric implementation's version and the device
    the models compute on (numbers differ in their last digits between devices, and a reference made on one
    device must not serve another).

    Raises:
        UserError: a run's ``model.device`` is not available here.
    """
    devices = sorted({device_label(pick_device(r.model.device)) for r in runs})
    return {"metric_version": METRIC_VERSION, "device": devices[0] if len(devices) == 1 else devices}


def check_resumable(out: Path, measured: dict[str, Any]) -> None:
    """Refuse to add rows to a study measured under another metric version or on another device.

    A study from before versions were recorded counts as version 1 once it holds a row.

    Raises:
        UserError: one line naming what differs and the way out.
    """
    if not (out / "study.sqlite").is_file():
        return
    with open_store(out, create=False) as store:
        recorded = store.get_meta("measured_with")
        has_rows = store.conn.execute("SELECT 1 FROM measurements LIMIT 1").fetchone() is not None
    if recorded is None:
        if not has_rows:
            return
        recorded = {"metric_version": 1, "device": measured["device"]}
    if recorded.get("metric_version") != measured["metric_version"]:
        raise UserError(
            f"study {out} was measured with metric version {recorded.get('metric_version')}, and this forgetscale "
            f"measures version {measured['metric_version']}: its rows would not be comparable. Start a new study "
            "(--out a new directory), or resume it with the forgetscale that began it (its runs' provenance names "
            "the version)"
        )
    if recorded.get("device") != measured["device"]:
        raise UserError(
            f"study {out} was measured on {recorded.get('device')}, and its models now run on {measured['device']}: "
            f"resume it there (model.device), or start a new study (--out a new directory)"
        )


def register_runs(study: StudyConfig, runs: list[RunConfig], store: Store) -> list[RunConfig]:
    """Record the study and its runs in ``store``; return the runs not yet done, in order."""
    store.set_meta("study", study.model_dump(mode="json"))
    store.set_meta("run_ids", [r.run_id for r in runs])
    for r in runs:
        store.register_run(r.run_id, r.model_dump(mode="json"), r.data.dataset, r.size, r.method_label)
    todo = [r for r in runs if store.run_status(r.run_id) != "done"]
    if len(todo) < len(runs):
        log.info(f"{len(runs) - len(todo)} of {len(runs)} runs already done; skipping them")
    return todo


def summary_table(store: Store, run_ids: list[str]) -> list[dict[str, Any]]:
    """One row per run: its last measurement and timings (:data:`SUMMARY_COLUMNS`)."""
    runs = {r["run_id"]: r for r in store.runs()}
    out = []
    for rid in run_ids:
        r = runs[rid]
        rows = store.measurements(rid)
        last = rows[-1] if rows else {}
        out.append(
            {
                "run_id": rid,
                "dataset": r["dataset"],
                "rank": r["rank"],
                "P": r["P"],
                "status": r["status"],
                "step": last.get("step"),
                "ft_loss": last.get("ft_loss"),
                "forget_ce": last.get("forget_ce"),
                "forget_kl": last.get("forget_kl"),
                "seconds": (r["timings"] or {}).get("total"),
            }
        )
    return out


def _plan(config: StudyConfig, runs: list[RunConfig], todo: list[RunConfig], ws: Workspace, cache: Path) -> Estimate:
    """The plan of what is left to run and its estimated time on this machine (:mod:`forgetscale.estimate`)."""
    if kernel_record(cache) is None:  # fp32 studies never time the kernels for `auto`: time them here (~1 s)
        measured(cache)
    kernel = kernel_record(cache) or {}
    fp32 = kernel.get("fp32_seconds")
    bf16 = kernel.get("bf16_seconds")
    bf16_factor = bf16 / fp32 if fp32 and bf16 and config.train.precision == "bf16" else 1.0
    tokens = [ws.reference(r).n_tokens for r in todo] or [0]
    # what one evaluation computes: the whole corpus (prompts too) and the held-out examples
    computed = [computed_tokens(ws.reference(r).sequences, r.forgetting.batch_size)
                + computed_tokens(ws.task_reference(r).sequences, r.forgetting.batch_size) for r in todo] or [0]
    blocks = getattr(ws.model(todo[0]).model.config, "num_hidden_layers", None) if todo else None
    return estimate(config, todo, len(runs), round(sum(tokens) / len(tokens)), fp32, bf16_factor=bf16_factor,
                    computed_tokens=round(sum(computed) / len(computed)), n_blocks=blocks)  # fmt: skip


def _timed(phases: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its wall seconds recorded as ``phases[name]``."""
    t = time.perf_counter()
    value = fn()
    phases[name] = time.perf_counter() - t
    return value
