"""A study directory's results: its rows as tables, the laws fitted to them, predictions, plans, the frontier.

The laws (:mod:`forgetscale.laws`) are pure functions on arrays. These functions read a study's store
(``study.sqlite``), hand the rows of its finished runs to the laws and store the fits back, so that the
report and later commands read them from the store alone. Each is one ``forgetscale`` command
(``fit``, ``predict``, ``plan``, ``compare``) and is re-exported by :mod:`forgetscale.api`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forgetscale.config import FitConfig
from forgetscale.data.sources import example_pool
from forgetscale.errors import UserError
from forgetscale.fsutil import atomic_write
from forgetscale.laws import FitResult, fit_law, fit_study
from forgetscale.laws.findings import findings as judge_findings
from forgetscale.laws.forms import get_law
from forgetscale.laws.frontier import POST_HOC, fit_line, frontier, residuals
from forgetscale.laws.methods import f7
from forgetscale.laws.methods import method_rows as compare_methods
from forgetscale.laws.predict import PlanError
from forgetscale.laws.predict import plan as plan_law
from forgetscale.laws.predict import predict as predict_law
from forgetscale.laws.rows import rows_to_arrays, shared_training
from forgetscale.laws.select import comparison_table, reliability
from forgetscale.store import Store, open_study, open_study_to_write

PLAIN_KINDS = ("none", "rescale")
"""Mitigation kinds whose training is plain LoRA's (``rescale`` only measures the adapter at other scales)."""


# ---------------------------------------------------------------------------- rows


def mitigation_of(run: Mapping[str, Any]) -> tuple[str, float | None]:
    """(kind, strength) of a stored run (``none`` for runs stored before mitigations existed).

    >>> mitigation_of({"config": {"mitigation": {"kind": "kl", "kl_weight": 0.1}}}), mitigation_of({})
    (('kl', 0.1), ('none', None))
    """
    m = ((run.get("config") or {}).get("mitigation")) or {}
    kind = str(m.get("kind", "none"))
    strength = {"replay": m.get("replay_fraction"), "kl": m.get("kl_weight")}.get(kind)
    return kind, None if strength is None else float(strength)


def data_order(run: Mapping[str, Any]) -> str:
    """The data order a stored run trained in: ``"<data.seed>/<train.seed>"``.

    ``data.seed`` draws the training examples (with ``data.examples: per_order``, ``train.seed`` too) and
    ``train.seed`` their batch order, so runs that share both saw the same batches at every step, and their
    points at a step share its step shock. The laws and F4 treat data orders as units (``laws.rows``). A run
    stored without a config gets ``-/-``.

    >>> data_order({"config": {"data": {"seed": 0}, "train": {"seed": 1}}}), data_order({})
    ('0/1', '-/-')
    """
    cfg = run.get("config") or {}
    seeds = ((cfg.get("data") or {}).get("seed"), (cfg.get("train") or {}).get("seed"))
    return "/".join("-" if v is None else str(v) for v in seeds)


REFERENCE_METHOD = "lora"
"""The method other methods are compared with, and whose groups keep the dataset's bare name."""


def group_name(dataset: str, method: str | None) -> str:
    """The name of the group a run's rows are fitted in: its dataset, and its method unless plain LoRA.

    Every method gets its own line and laws; LoRA's keep the dataset's name, so studies from before the
    method axis read as they did.

    >>> group_name("news", "lora"), group_name("news", "dora"), group_name("news", None)
    ('news', 'news [dora]', 'news')
    """
    return dataset if method in (None, REFERENCE_METHOD) else f"{dataset} [{method}]"


def study_rows(store: Store, mitigated: bool = False) -> list[dict[str, Any]]:
    """Measurement rows of the finished runs of the study last run into this store, each with its ``seed``.

    ``seed`` is the run's data order (:func:`data_order`); ``dataset`` the run's group
    (:func:`group_name`: its dataset, with its method unless plain LoRA) and ``data`` its dataset.
    The laws describe a method trained plainly, so runs
    trained with a mitigation (``replay``, ``kl``) are left out unless ``mitigated``. A ``rescale``
    run trains as plain LoRA and is kept; its rescaled rows live in another table
    (``Store.scaled_measurements``) and are never here.
    """
    current = set(store.get_meta("run_ids") or [])
    done = {r["run_id"]: data_order(r) for r in store.runs()
            if r["status"] == "done" and (not current or r["run_id"] in current)
            and (mitigated or mitigation_of(r)[0] in PLAIN_KINDS)}  # fmt: skip
    return [{**m, "seed": done[m["run_id"]], "data": m["dataset"], "dataset": group_name(m["dataset"], m.get("method"))}
            for m in store.measurements() if m["run_id"] in done]  # fmt: skip


def base_entropy(store: Store, dataset: str) -> float | None:
    """The median base entropy of a dataset's measurements (constant per forgetting corpus)."""
    rows = study_rows(store)
    vals = [r["base_entropy"] for r in rows if r["dataset"] == dataset and r.get("base_entropy") is not None]
    return float(np.median(vals)) if vals else None


def params_per_rank(store: Store, dataset: str) -> float | None:
    """Trainable parameters per unit of LoRA rank (LoRA's P is linear in the rank); None when no run of the
    dataset has a rank (a full fine-tune or another PEFT method, logged by the callback with rank 0)."""
    runs = [r for r in store.runs() if group_name(r["dataset"], r.get("method")) == dataset and r["P"]]
    if not runs:
        raise UserError(f"no finished run of dataset {dataset!r} records its parameter count")
    ratios = {r["P"] / r["rank"] for r in runs if r["rank"]}
    if not ratios:
        return None
    if max(ratios) - min(ratios) > 1e-9 * max(ratios):
        raise UserError("runs differ in parameters per rank (different target modules); pass --params")
    return ratios.pop()


@dataclass(frozen=True)
class Results:
    """A study's results as tables: lists of dicts, or pandas DataFrames with ``load_results(..., as_frame=True)``.

    Attributes:
        rows: one measurement per (run, step) of the finished plain-LoRA runs: ``run_id, step, tokens,
            ft_loss, ft_loss_se, forget_ce, forget_kl, base_entropy, forget_top1_ce, data_loss,
            dataset, rank, P, seed, ...`` (:class:`forgetscale.schema.Measurement`; ``seed`` is the
            run's data order, :func:`data_order`).
        fits: one row per stored fit (dataset, law): :func:`flatten_fit`.
        runs: one row per run: ``run_id, dataset, rank, P, status, error, config, timings, provenance``.
        probes: one row per (run, probe): ``run_id, probe`` and the probe's summary (``accuracy``, ...).
    """

    rows: Any
    fits: Any
    runs: Any
    probes: Any


def load_results(directory: str | Path, *, as_frame: bool = False) -> Results:
    """Read a study directory's store (``forgetscale run --out DIR`` or a callback's ``store=DIR``).

    Args:
        directory: the study directory (``study.sqlite`` inside).
        as_frame: pandas DataFrames (pandas required) instead of lists of dicts.

    Returns:
        A :class:`Results`.

    Raises:
        UserError: no study in ``directory``.

    Example::

        >>> r = forgetscale.load_results("runs/default", as_frame=True)  # doctest: +SKIP
        >>> r.rows.groupby("rank").forget_kl.max()  # doctest: +SKIP
    """
    with open_study(Path(directory)) as store:
        rows = study_rows(store)
        runs = store.runs()
        fits = [flatten_fit(ds, label, fit) for (ds, label), fit in store.fits().items()]
        probes = [{"run_id": p["run_id"], "probe": p["probe"], **p["summary"]} for p in store.probes()]
    return Results(*(_table(t, as_frame) for t in (rows, fits, runs, probes)))


def flatten_fit(dataset: str, label: str, fit: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row for a stored fit: quality and reliability per target, parameters with their intervals.

    ``fit_clean`` says whether the fit itself raised doubts (a bound, a wide interval); ``state_<target>``
    (``reliable``, ``unreliable``, ``undecided``) and ``heldout_error_<target>`` say whether the law
    predicts unseen runs (``laws.select.reliability``), for a fit stored with its held-out checks.

    >>> f = {"law": "linear", "n_points": 9, "fit_clean": True, "r2": {"forget_ce": 0.9},
    ...      "rmse": {"forget_ce": 0.01}, "params": {"c_fft": {"value": 1.7, "lo": 1.5, "hi": 1.9}}}
    >>> row = flatten_fit("news", "linear", f)
    >>> row["law"], row["fit_clean"], row["r2_forget_ce"], row["c_fft"], row["c_fft_lo"], row["c_fft_hi"]
    ('linear', True, 0.9, 1.7, 1.5, 1.9)
    """
    out: dict[str, Any] = {"dataset": dataset, "law": label}
    for k in ("n_points", "n_groups"):
        if k in fit:
            out[k] = fit[k]
    if "fit_clean" in fit or "reliable" in fit:  # "reliable": its name in stores written by older versions
        out["fit_clean"] = bool(fit.get("fit_clean", fit.get("reliable")))
    for k in ("r2", "rmse"):
        for target, v in (fit.get(k) or {}).items():
            out[f"{k}_{target}"] = v
    if "heldout" in fit:
        result = FitResult.from_dict(fit)
        for target in result.targets:
            rel = reliability(result, target)
            out[f"state_{target}"], out[f"heldout_error_{target}"] = rel.state, rel.error
    for name, p in (fit.get("params") or {}).items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = p.get("value"), p.get("lo"), p.get("hi")
    return out


def _table(records: list[dict[str, Any]], as_frame: bool) -> Any:
    if not as_frame:
        return records
    import pandas as pd  # not a dependency: asked for explicitly

    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------------------- fit


def fit(
    directory: str | Path, laws: list[str] | None = None, *, min_step: int | None = None, n_boot: int | None = None
) -> dict[str, Any]:
    """Fit every applicable law for every dataset of a study; store the fits: ``forgetscale fit DIR``.

    The fits replace those stored in ``DIR/study.sqlite``, and the returned value is also written to
    ``DIR/fits.json`` (atomically).

    Args:
        directory: the study directory.
        laws: law labels (``linear``, ``paper``, ``kl_power``, ...); None: the study's ``fit.laws``, or every
            law the rows allow.
        min_step: leave out steps below this; None: the study's ``fit.min_step``.
        n_boot: parameter draws kept per fit; None: the study's ``fit.n_boot``.

    Returns:
        ``{"fits": {dataset: {law: FitResult dict}}, "comparison": [...], "findings": [...],
        "skipped": {dataset: {law: reason}}}``.

    Raises:
        UserError: no study in ``directory``, no finished runs, or a law that cannot be fitted; another
            process is running the study (:class:`forgetscale.lock.StudyBusy`, the fit waits for no one).
    """
    out = Path(directory)
    with open_study_to_write(out) as store:  # the run lock: never refit a study another process is running
        result = _fit_store(store, out, laws, min_step, n_boot)
        atomic_write(out / "fits.json", json.dumps(result, indent=2))
    return result


def _fit_store(store: Store, out: Path, laws: list[str] | None, min_step: int | None,
               n_boot: int | None) -> dict[str, Any]:
    cfg = FitConfig.model_validate((store.get_meta("study") or {}).get("fit", {}))
    rows = study_rows(store)
    if not rows and (mitigated := study_rows(store, mitigated=True)):  # no plain LoRA to fit laws to
        reason = "only mitigated (replay, kl) runs: the laws describe plain LoRA; see `forgetscale compare`"
        store.replace_fits({})
        return {"fits": {}, "comparison": [], "findings": [],
                "skipped": {ds: {"*": reason} for ds in sorted({r["dataset"] for r in mitigated})}}  # fmt: skip
    if not rows:
        raise UserError(f"{out}: no finished runs to fit")
    skipped: dict[str, dict[str, str]] = {}
    k = min_step or cfg.min_step
    try:
        fits = fit_study(rows, laws=laws or (list(cfg.laws) if cfg.laws else None), min_step=k, delta=cfg.delta,
                         n_boot=cfg.n_boot if n_boot is None else n_boot, skipped=skipped)  # fmt: skip
    except (KeyError, ValueError) as e:
        raise UserError(f"fit: {e}") from None
    store.replace_fits({(ds, law): f.to_dict() for ds, by_law in fits.items() for law, f in by_law.items()})
    return {
        "fits": {ds: {law: f.to_dict(samples=False) for law, f in by_law.items()} for ds, by_law in fits.items()},
        "comparison": comparison_table(fits),
        "findings": _findings(store, rows, fits, k),
        "skipped": skipped,
    }


def _findings(store: Store, rows: list[dict[str, Any]], fits: Mapping[str, Any], min_step: int) -> list[dict[str, Any]]:
    runs = {r["run_id"]: r for r in store.runs()}
    dataset_of = {i: group_name(r["dataset"], r.get("method")) for i, r in runs.items()}
    items: dict[str, list[dict[str, Any]]] = {}
    for p in store.probes():
        ds = dataset_of.get(p["run_id"])
        if ds is not None:  # the base model's own rows have no dataset
            items.setdefault(ds, []).extend({**it, "probe": p["probe"], "run_id": p["run_id"]}
                                            for it in p.get("items") or [] if isinstance(it, dict))  # fmt: skip
    cols = rows_to_arrays(rows)
    for ds, c in cols.items():  # F4's measurement-error check reads ft_loss_se, F6 task_kl, where rows record them
        for key in ("ft_loss_se", "task_kl"):
            vals = [r.get(key) for r in rows if str(r["dataset"]) == ds]
            c[key] = np.array([math.nan if v is None else float(v) for v in vals])
    out = judge_findings(cols, fits, items, min_step, shared=_shared(store, rows))
    compared = method_rows(rows, runs, min_step)
    for data in sorted({r["dataset"] for r in compared}):  # F7 where a dataset was trained by several methods
        out.append(f7(data, [r for r in compared if r["dataset"] == data], REFERENCE_METHOD))
    return out


def _shared(store: Store, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the data orders of these rows' runs share (``laws.rows.shared_training``), read from the runs'
    configs; None when a config lacks the numbers (a callback run) or the runs disagree on them."""
    ids = {r["run_id"] for r in rows}
    shapes = set()
    for run in store.runs():
        if run["run_id"] in ids:
            data, train = (run.get("config") or {}).get("data") or {}, (run.get("config") or {}).get("train") or {}
            per_step = None if train.get("batch_size") is None else train["batch_size"] * train.get("grad_accum", 1)
            examples = data.get("examples", "shared")  # the pool's source matters to per_order alone
            source = (data.get("dataset"), data.get("n_heldout")) if examples == "per_order" else (None, None)
            shapes.add((data.get("n_train"), train.get("steps"), per_step, examples, *source))
    if len(shapes) != 1 or None in (shape := shapes.pop())[:3]:
        return None
    n_train, steps, per_step, examples, dataset, n_heldout = shape
    pool = example_pool(dataset, n_train, n_heldout) if examples == "per_order" else None
    if examples == "per_order" and pool is None:
        return None  # the pool (a file no longer there) is unknown: say no more than the orders
    return shared_training(n_train, steps, per_step, n_orders=len({r["seed"] for r in rows}), pool=pool)


def findings(directory: str | Path) -> list[dict[str, Any]]:
    """F1-F6 per dataset from the stored fits, measurements and probes, as :func:`fit` reports them.

    Raises:
        UserError: no study in ``directory``.
    """
    with open_study(Path(directory)) as store:
        fits: dict[str, dict[str, Any]] = {}
        min_step = 1
        for (ds, label), d in store.fits().items():
            fits.setdefault(ds, {})[label] = FitResult.from_dict(d)
            min_step = int((d.get("settings") or {}).get("min_step") or min_step)
        return _findings(store, study_rows(store), fits, min_step)


def fit_csv(
    path: str | Path, x: list[str], y: list[str], law: str, group: str | None = None, *, n_boot: int = 200,
    delta: float = 1e-3,
) -> dict[str, Any]:
    """Fit one law to columns of an external CSV file (e.g. another paper's measurements):
    ``forgetscale fit --from-csv FILE``.

    Args:
        path: a UTF-8 CSV file with a header row.
        x, y: the input and target columns, as many as the law takes.
        law: a registered law name.
        group: the column naming each point's run (the independent units); None: every point its own.
        n_boot: parameter draws kept. delta: Huber threshold on log-residuals.

    Returns:
        The fit as ``FitResult.to_dict(samples=False)``.

    Raises:
        UserError: an unreadable file, a missing or non-numeric column, a law that cannot fit the data.
    """
    path = Path(path)
    try:
        form = get_law(law)
    except (KeyError, ValueError) as e:
        raise UserError(f"--law: {e}") from None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a UTF-8 CSV file ({e})") from None
    if not records:
        raise UserError(f"{path}: no data rows")
    for col in [*x, *y, *([group] if group else [])]:
        if col not in records[0]:
            raise UserError(f"{path}: no column {col!r} (columns: {', '.join(records[0])})")
    if len(x) != len(form.inputs) or len(y) != len(form.outputs):
        raise UserError(
            f"law {law!r} takes {len(form.inputs)} x column(s) {form.inputs} and "
            f"{len(form.outputs)} y column(s) {form.outputs}; got --x {','.join(x)} --y {','.join(y)}"
        )

    def column(name: str) -> np.ndarray:
        try:
            return np.array([float(r[name]) for r in records])
        except ValueError:
            raise UserError(f"{path}: column {name!r} has a non-numeric value") from None

    groups = np.array([r[group] for r in records]) if group else None
    try:
        result = fit_law(form, {c: column(c) for c in x}, {c: column(c) for c in y}, groups=groups, inputs=tuple(x),
                         targets=tuple(y), n_boot=n_boot, delta=delta)  # fmt: skip
    except ValueError as e:
        raise UserError(f"fit {law} on {path}: {e}") from None
    return result.to_dict(samples=False)


# ---------------------------------------------------------------------------- predict and plan


def _dataset_fits(store: Store, dataset: str | None) -> tuple[str, dict[str, Any]]:
    fits = store.fits()
    if not fits:
        raise UserError(f"{store.path.parent}: no fits stored; run `forgetscale fit {store.path.parent}` first")
    datasets = sorted({ds for ds, _ in fits})
    if dataset is None:
        if len(datasets) > 1:
            raise UserError(f"the study has several datasets ({', '.join(datasets)}); choose one with --dataset")
        dataset = datasets[0]
    if dataset not in datasets:
        raise UserError(f"--dataset {dataset!r}: not in the study (have {', '.join(datasets)})")
    return dataset, {law: r for (ds, law), r in fits.items() if ds == dataset}


def predict(
    directory: str | Path, steps: float, *, rank: float | None = None, params: float | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Fine-tuning loss and forgetting of a new run at a rank (or parameter count) and step count, from
    the study's reliable laws: ``forgetscale predict DIR``.

    Args:
        directory: a fitted study directory.
        steps: optimizer steps N.
        rank: LoRA rank (P from the study's parameters per rank); or ``params``: P itself.
        dataset: which dataset's laws (needed when the study has several).

    Returns:
        ``{"dataset", "rank", "P", "N", "ft_loss", "forget_ce", "forget_kl"}``: each quantity with its
        value, 95% prediction interval for a new run (``lo``, ``hi``, its checked ``coverage`` and
        ``units``), the ``law`` used and its reliability ``state``, and whether it ``extrapolated``
        (``laws.predict.predict``); with no reliable law its value is None with a ``reason``.

    Raises:
        UserError: no study or fits, a non-positive argument, an unknown dataset.
    """
    if steps <= 0 or (rank is not None and rank <= 0) or (params is not None and params <= 0):
        raise UserError("--steps, --rank and --params must be positive")
    if (rank is None) == (params is None):
        raise UserError("predict: give a rank or a parameter count, not both")
    with open_study(Path(directory)) as store:
        dataset, fits = _dataset_fits(store, dataset)
        if params is None:
            per_rank = params_per_rank(store, dataset)
            if per_rank is None:
                raise UserError("predict: the study's runs have no LoRA rank (a full fine-tune or another method): "
                                "give the trainable parameter count with --params")
            params = float(rank) * per_rank  # type: ignore[arg-type]
        P = params
        try:
            result = predict_law(fits, P, steps, base_entropy=base_entropy(store, dataset))
        except ValueError as e:
            raise UserError(f"predict: {e}") from None
    return {"dataset": dataset, "rank": rank, **result}


def plan(
    directory: str | Path, max_forgetting: float, *, dataset: str | None = None, metric: str = "forget_ce",
    bound: str = "upper", extrapolate: bool = False,
) -> dict[str, Any]:
    """The (rank, steps) with the lowest predicted fine-tuning loss within a forgetting budget:
    ``forgetscale plan DIR``.

    Args:
        directory: a fitted study directory.
        max_forgetting: the budget, in nats of ``metric``.
        dataset: which dataset's laws (needed when the study has several).
        metric: ``forget_ce`` or ``forget_kl``.
        bound: ``upper`` (the prediction interval's upper end must fit the budget) or ``mean``.
        extrapolate: also consider ranks and steps beyond the studied ones (flagged ``extrapolated``).

    Returns:
        ``laws.predict.plan``'s result with ``dataset``: ``rank`` and ``steps`` (None with a ``reason``
        when nothing fits), the predictions there with their intervals, and the ``tradeoff`` table.

    Raises:
        UserError: no study or fits, a non-positive budget, an unknown dataset.
    """
    if not math.isfinite(max_forgetting) or max_forgetting <= 0:
        raise UserError("--max-forgetting must be a positive number of nats")
    with open_study(Path(directory)) as store:
        dataset, fits = _dataset_fits(store, dataset)
        per_rank = params_per_rank(store, dataset)
        try:  # without a rank, the candidates are parameter counts themselves (P = "rank" x 1)
            result = plan_law(fits, max_forgetting, per_rank or 1.0, metric=metric, bound=bound,
                              base_entropy=base_entropy(store, dataset), extrapolate=extrapolate)  # fmt: skip
        except (PlanError, ValueError) as e:
            raise UserError(f"plan: {e}") from None
    if per_rank is None:
        result = {**result, "rank": None, "tradeoff": [{**t, "rank": None} for t in result.get("tradeoff") or []]}
    return {"dataset": dataset, **result}


# ---------------------------------------------------------------------------- compare


def overhead(runs: Mapping[str, Mapping[str, Any]], points: list[dict[str, Any]], kind: str,
             strength: float) -> float | None:
    """A level's extra wall time, as a fraction of plain LoRA's training time (mean over its runs).

    A trained kind (``replay``, ``kl``): its run's training time over that of the plain run of the same
    dataset, rank and data order, less 1. A post-hoc kind: the time to change the run's own final adapter
    and measure it once (``timings['post_hoc_<kind>']`` over the strengths measured) over the run's
    training time: what one more strength costs. None when a run lacks its plain partner or timings.
    """
    ids = sorted({p["run_id"] for p in points if (p["mitigation"], p["strength"]) == (kind, strength)})

    def train_s(run: Mapping[str, Any]) -> float | None:
        return (run.get("timings") or {}).get("train")

    plain = {(r["dataset"], r["rank"], data_order(r)): train_s(r) for r in runs.values()
             if mitigation_of(r)[0] in PLAIN_KINDS and r.get("status") == "done"}  # fmt: skip
    ratios = []
    for rid in ids:
        r = runs[rid]
        if kind in POST_HOC:
            n = len({p["strength"] for p in points if p["run_id"] == rid and p["mitigation"] == kind})
            spent, base = (r.get("timings") or {}).get(f"post_hoc_{kind}"), train_s(r)
            ratios.append(None if spent is None or not base or not n else spent / n / base)
        else:
            base = plain.get((r["dataset"], r["rank"], data_order(r)))
            ratios.append(None if not base or train_s(r) is None else train_s(r) / base - 1.0)
    return float(np.mean(ratios)) if ratios and None not in ratios else None


def method_rows(rows: list[dict[str, Any]], runs: Mapping[str, Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    """Each method against LoRA at equal fine-tuning loss (:func:`forgetscale.laws.methods.method_rows`), from
    the plainly trained runs' rows at or after step ``k`` and the runs' P, learning rate and time per step."""
    plain = [r for r in rows if mitigation_of(runs.get(r["run_id"]) or {})[0] in PLAIN_KINDS]
    info = {}
    for i, r in runs.items():
        train = (r.get("config") or {}).get("train") or {}
        sec = (r.get("timings") or {}).get("train")
        info[i] = {"P": r.get("P"), "lr": train.get("lr"),
                   "seconds_per_step": sec / train["steps"] if sec is not None and train.get("steps") else None}
    return compare_methods(plain, info, k, REFERENCE_METHOD)


def compare(directory: str | Path, *, min_step: int | None = None) -> dict[str, Any]:
    """Each mitigation of a study against plain LoRA's learning-forgetting line, and each method against
    LoRA's at equal fine-tuning loss (:func:`method_rows`): ``forgetscale compare DIR``.

    Plain points: the scale-1 rows of ``none`` and ``rescale`` runs; mitigated points: ``replay`` and
    ``kl`` runs, and the rescaled rows of ``rescale`` runs (strength = the scale). Steps below
    ``min_step`` (default: the study's ``fit.min_step``) are left out, as in the fits: every run shares
    step 0, and the onset is not on the line. A rescaled point is paired with its run's scale-1 point at
    the same step (``laws.frontier.POST_HOC``); the verdicts are :func:`forgetscale.laws.frontier.frontier`'s.

    Returns:
        ``{"rows": [one per dataset and method other than LoRA (keys ``method``, ``difference``, ``lo``,
        ``hi``, ``verdict``, ``reason``, ...), then one per dataset and (mitigation, strength)], "lines":
        {dataset: plain LoRA's line},
        "points": [every point, with its residual, its dataset ``data`` and its ``method``]}``.

    Raises:
        UserError: no store, no finished run, or no plain line to compare with.
    """
    out = Path(directory)
    with open_study(out) as store:
        cfg = FitConfig.model_validate((store.get_meta("study") or {}).get("fit", {}))
        runs = {r["run_id"]: r for r in store.runs()}
        rows = study_rows(store, mitigated=True)
        done = {r["run_id"] for r in rows}
        scaled = [r for r in store.scaled_measurements() if r["run_id"] in done]
    k = cfg.min_step if min_step is None else min_step
    points = []
    for r in [*rows, *scaled]:
        if r["step"] < k or r["ft_loss"] is None or r["forget_ce"] is None:
            continue
        kind, strength = mitigation_of(runs[r["run_id"]])
        if "strength" in r:  # a post-hoc row: the final adapter changed after training
            kind, strength = str(r["method"]), float(r["strength"])
        elif kind in PLAIN_KINDS:
            kind, strength = "none", None
        points.append({"dataset": r["dataset"], "run_id": r["run_id"], "rank": r["rank"], "step": r["step"],
                       "mitigation": kind, "strength": strength, "ft_loss": float(r["ft_loss"]),
                       "forget_ce": float(r["forget_ce"]), "data": r.get("data", r["dataset"]),
                       "method": r.get("method") or REFERENCE_METHOD})  # fmt: skip
    if not points:
        raise UserError(f"{out}: no finished run has measurements at or after step {k}")
    table: list[dict[str, Any]] = method_rows(rows, runs, k)  # methods against LoRA, where a study has several
    lines: dict[str, Any] = {}
    for ds in sorted({p["dataset"] for p in points}):
        plain = [p for p in points if p["dataset"] == ds and p["mitigation"] == "none"]
        other = [p for p in points if p["dataset"] == ds and p["mitigation"] != "none"]
        if not other:
            continue
        if len({p["run_id"] for p in plain}) < 2:
            raise UserError(f"dataset {ds}: plain LoRA's line needs at least 2 finished `none` (or `rescale`) runs")
        cols = ("ft_loss", "forget_ce", "run_id", "step")
        try:
            line = fit_line(*(np.array([p[c] for p in plain]) for c in cols[:3]))
        except ValueError as e:
            raise UserError(f"dataset {ds}: plain LoRA's line cannot be fitted ({e})") from None
        lines[ds] = line
        for p in [*plain, *other]:
            p["residual"] = float(residuals(line, np.array([p["ft_loss"]]), np.array([p["forget_ce"]]))[0])
            lo, hi = line["ft_loss_range"]
            p["outside"] = not lo <= p["ft_loss"] <= hi
        level = (*cols, "rank")  # run spread is judged at each level's own rank
        judged = frontier({c: np.array([p[c] for p in plain], dtype=float if c == "rank" else None) for c in level},
                          {c: np.array([p[c] for p in other], dtype=float if c == "rank" else None) for c in level},
                          [(p["mitigation"], p["strength"]) for p in other])  # fmt: skip
        table += [{"dataset": ds, **j, "overhead": overhead(runs, other, j["mitigation"], j["strength"])}
                  for j in judged]  # fmt: skip
    if not table:
        raise UserError(f"{out}: no mitigated run or second method to compare (sweep mitigation.kind: [none, replay, "
                        "kl], set mitigation.post_hoc: [rescale, intruders], or sweep method: see --preset methods)")
    return {"rows": table, "lines": lines, "points": points}
