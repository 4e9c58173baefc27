"""Glue between the study store and the pure laws: fit, predict and plan for a study directory.

The laws themselves (``forgetscale.laws``) are pure functions on arrays; this
module reads the measurements of a study's current runs, hands them over, and
stores the fits back so the report and later commands read them from the store.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from forgetscale.errors import UserError

RELIABLE_ERROR = 0.15  # = laws.select.RELIABLE_ERROR, repeated so the CLI need not import the laws


def _open(out: Path):  # noqa: ANN202 - returns a Store; imported lazily
    from forgetscale.store import open_store

    try:
        return open_store(out, create=False)
    except FileNotFoundError:
        raise UserError(f"{out}: no study.sqlite here; run `forgetscale run --out {out}` first") from None


def study_rows(store: Any, mitigated: bool = False) -> list[dict[str, Any]]:
    """Measurement rows of the finished runs of the study last run into this store.

    The laws describe plain LoRA, so runs trained with a mitigation (``replay``, ``kl``) are left
    out unless ``mitigated``. A ``rescale`` run trains as plain LoRA and is kept; its rescaled rows
    live in another table (``Store.scaled_measurements``) and are never here.
    """
    current = set(store.get_meta("run_ids") or [])
    done = {r["run_id"] for r in store.runs()
            if r["status"] == "done" and (mitigated or mitigation_of(r)[0] in PLAIN_KINDS)}  # fmt: skip
    return [r for r in store.measurements() if r["run_id"] in done and (not current or r["run_id"] in current)]


PLAIN_KINDS = ("none", "rescale")
"""Mitigation kinds whose training is plain LoRA's (``rescale`` only measures the adapter at other scales)."""


def mitigation_of(run: dict[str, Any]) -> tuple[str, float | None]:
    """(kind, strength) of a stored run (``none`` for runs stored before mitigations existed)."""
    m = ((run.get("config") or {}).get("mitigation")) or {}
    kind = str(m.get("kind", "none"))
    strength = {"replay": m.get("replay_fraction"), "kl": m.get("kl_weight")}.get(kind)
    return kind, None if strength is None else float(strength)


def fit_directory(
    out: Path, laws: list[str] | None = None, min_step: int | None = None, n_boot: int | None = None
) -> dict[str, Any]:
    """Fit every applicable law for every dataset of the study in ``out``; store the fits.

    Returns:
        ``{"fits": {dataset: {law: FitResult dict}}, "comparison": [...], "skipped": {...}}``.
    """
    from forgetscale.config import FitConfig
    from forgetscale.laws import fit_study
    from forgetscale.laws.select import comparison_table

    with _open(out) as store:
        meta = store.get_meta("study") or {}
        cfg = FitConfig.model_validate(meta.get("fit", {}))
        rows = _with_data_order(store, study_rows(store))
        if not rows and study_rows(store, mitigated=True):  # only replay/kl runs: no plain LoRA to fit laws to
            reason = "only mitigated (replay, kl) runs: the laws describe plain LoRA; see `forgetscale compare`"
            datasets = sorted({r["dataset"] for r in study_rows(store, mitigated=True)})
            store.replace_fits({})
            return {"fits": {}, "comparison": [], "findings": [], "skipped": {ds: {"*": reason} for ds in datasets}}
        if not rows:
            raise UserError(f"{out}: no finished runs to fit")
        skipped: dict[str, dict[str, str]] = {}
        try:
            fits = fit_study(
                rows,
                laws=laws or (list(cfg.laws) if cfg.laws else None),
                min_step=min_step or cfg.min_step,
                delta=cfg.delta,
                n_boot=cfg.n_boot if n_boot is None else n_boot,
                skipped=skipped,
            )
        except (KeyError, ValueError) as e:
            raise UserError(f"fit: {e}") from None
        store.replace_fits({(ds, law): f.to_dict() for ds, by_law in fits.items() for law, f in by_law.items()})
        found = _findings(store, rows, fits, min_step or cfg.min_step)
        return {
            "fits": {ds: {law: f.to_dict(samples=False) for law, f in by_law.items()} for ds, by_law in fits.items()},
            "comparison": comparison_table(fits),
            "findings": found,
            "skipped": skipped,
        }


def _with_data_order(store: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``seed``: their run's data order (data and training seeds; runs that share it saw the same
    batches, so their points at a step share a step shock). Rows of runs without a config share one order."""
    order = {}
    for r in store.runs():
        cfg = r.get("config") or {}
        seeds = ((cfg.get("data") or {}).get("seed"), (cfg.get("train") or {}).get("seed"))
        order[r["run_id"]] = "/".join("-" if v is None else str(v) for v in seeds)
    return [{**r, "seed": order.get(r["run_id"], "-/-")} for r in rows]


def _findings(store: Any, rows: list[dict[str, Any]], fits: dict[str, Any], min_step: int) -> list[dict[str, Any]]:
    from forgetscale.laws.findings import findings
    from forgetscale.laws.rows import rows_to_arrays

    dataset_of = {r["run_id"]: r["dataset"] for r in store.runs()}
    items: dict[str, list[dict[str, Any]]] = {}
    for p in store.probes():
        ds = dataset_of.get(p["run_id"])
        if ds is not None:  # the base model's own rows have no dataset
            items.setdefault(ds, []).extend({**it, "probe": p["probe"], "run_id": p["run_id"]}
                                            for it in p.get("items") or [] if isinstance(it, dict))
    cols = rows_to_arrays(rows)
    for ds, c in cols.items():  # F4's measurement-error check reads ft_loss_se where rows record it
        se = [r.get("ft_loss_se") for r in rows if str(r["dataset"]) == ds]
        c["ft_loss_se"] = np.array([math.nan if v is None else float(v) for v in se])
    return findings(cols, fits, items, min_step)


def study_findings(out: Path) -> list[dict[str, Any]]:
    """F1-F5 per dataset from the store (stored fits, measurements, probes), as ``fit`` reports them."""
    from forgetscale.laws import FitResult

    with _open(out) as store:
        fits: dict[str, dict[str, Any]] = {}
        min_step = 1
        for (ds, label), d in store.fits().items():
            fits.setdefault(ds, {})[label] = FitResult.from_dict(d)
            min_step = int((d.get("settings") or {}).get("min_step") or min_step)
        return _findings(store, study_rows(store), fits, min_step)


def base_entropy(store: Any, dataset: str) -> float | None:
    """The median base entropy of a dataset's measurements (constant per forgetting corpus)."""
    rows = study_rows(store)
    vals = [r["base_entropy"] for r in rows if r["dataset"] == dataset and r.get("base_entropy") is not None]
    return float(np.median(vals)) if vals else None


def summary_lines(out: Path) -> list[str]:
    """What `forgetscale run` ends with: each dataset's findings and headline laws, one line each."""
    import json

    path = out / "fits.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"no fits in {out}; run `forgetscale fit {out}`"]
    lines = []
    for ds in sorted(result.get("fits") or {}):
        lines.append(f"dataset {ds}:")
        lin = (result["fits"][ds].get("linear") or {}).get("params")
        if lin:
            c, s = lin["c_fft"], lin["s_fft"]
            r2 = (result["fits"][ds]["linear"].get("r2") or {}).get("forget_ce")
            lines.append(f"  linear law: forget_ce = -{c['value']:.4g} * ft_loss + {s['value']:.4g}"
                         f"  (c_fft 95% [{_g(c['lo'])}, {_g(c['hi'])}], R2 {_g(r2)})")
        for target in ("ft_loss", "forget_ce", "forget_kl"):
            rows = [r for r in result.get("comparison") or [] if r["dataset"] == ds and r["target"] == target]
            best = next((r for r in rows if r["reliable"]), None)
            if best:
                err, floor = _pct(best["heldout_error_of_change"]), _pct(best.get("noise_floor"))
                lines.append(f"  {target}: {best['law']} reliable (held-out error {err} of the change since step 0, "
                             f"noise floor {floor})")
            elif rows:
                lines.append(f"  {target}: no reliable law (best: {rows[0]['law']}, {rows[0].get('state')}: "
                             f"{rows[0].get('reliability')})")
        for f in result.get("findings") or []:
            if f["dataset"] == ds:
                lines.append(f"  {f['finding']} {f['verdict']}: {finding_text(f)}")
    return lines


def finding_text(f: dict[str, Any]) -> str:
    """One line of a finding's evidence."""
    ev = f.get("evidence") or {}

    def ci(d: Any) -> str:
        return f"{_g(d.get('value'))} [{_g(d.get('lo'))}, {_g(d.get('hi'))}]" if isinstance(d, dict) else "-"

    parts = []
    if f["finding"] == "F1" and "r2" in ev:
        parts.append(f"R2 {_g(ev['r2'])}, slope c_fft {ci(ev.get('slope_c_fft'))}")
    for key in ("exponent_a", "exponent_b"):
        if key in ev:
            parts.append(f"{key.split('_')[1]} = {ci(ev[key])}" + ("" if ev.get("law_reliable") else
                                                                   " (kl_power not reliable)"))
    if "effect_log_P" in ev:  # F4: one contrast, at equal ft_loss; WCR interval over runs
        parts.append(f"log P effect at equal ft_loss {ci(ev['effect_log_P'])} nats (95%, {ev.get('n_runs')} runs) "
                     f"vs margin ±{_g((ev.get('margin') or {}).get('value'))}")
    if "difference" in ev:  # F5: intervals over items
        parts.append(f"agreement drop {ci(ev['agreement_drop'])} vs accuracy drop {ci(ev['accuracy_drop'])}, "
                     f"difference {ci(ev['difference'])} (95%, {ev['n_items']} items) vs margin {_g(ev.get('margin'))}")
    if "lost_share" in (ev.get("safety") or {}):
        s = ev["safety"]
        parts.append(f"safety: {s['lost_refusals']} of {s['base_refusals']} refusals lost, share {ci(s['lost_share'])}")
    if "reason" in ev:
        parts.append(str(ev["reason"]))
    return "; ".join(parts) or "-"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1%}"


def _g(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def fit_csv(
    path: Path, x: list[str], y: list[str], law: str, group: str | None = None, n_boot: int = 200, delta: float = 1e-3
) -> dict[str, Any]:
    """Fit one law to columns of an external CSV file (e.g. another paper's measurements)."""
    from forgetscale.laws import fit_law
    from forgetscale.laws.forms import get_law

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
        fit = fit_law(
            form,
            {c: column(c) for c in x},
            {c: column(c) for c in y},
            groups=groups,
            inputs=tuple(x),
            targets=tuple(y),
            n_boot=n_boot,
            delta=delta,
        )
    except ValueError as e:
        raise UserError(f"fit {law} on {path}: {e}") from None
    return fit.to_dict(samples=False)


def _dataset_fits(store: Any, dataset: str | None) -> tuple[str, dict[str, Any]]:
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


def params_per_rank(store: Any, dataset: str) -> float:
    """Trainable parameters per unit of LoRA rank (LoRA's P is linear in the rank)."""
    ratios = {r["P"] / r["rank"] for r in store.runs() if r["dataset"] == dataset and r["P"]}
    if not ratios:
        raise UserError(f"no finished run of dataset {dataset!r} records its parameter count")
    if max(ratios) - min(ratios) > 1e-9 * max(ratios):
        raise UserError("runs differ in parameters per rank (different target modules); pass --params")
    return ratios.pop()


def predict_directory(
    out: Path, steps: float, rank: float | None = None, params: float | None = None, dataset: str | None = None
) -> dict[str, Any]:
    """Predicted fine-tuning loss and forgetting at a new rank/P and step count, from reliable laws only.

    Each quantity has a 95% prediction interval for a new run with its coverage check and units, the
    law used, its reliability state and whether the point extrapolates (``laws.predict.predict``); with
    no reliable law its value is None with a ``reason`` (not an error).
    """
    from forgetscale.laws.predict import predict

    if steps <= 0 or (rank is not None and rank <= 0) or (params is not None and params <= 0):
        raise UserError("--steps, --rank and --params must be positive")
    with _open(out) as store:
        dataset, fits = _dataset_fits(store, dataset)
        P = params if params is not None else float(rank) * params_per_rank(store, dataset)  # type: ignore[arg-type]
        try:
            result = predict(fits, P, steps, base_entropy=base_entropy(store, dataset))
        except ValueError as e:
            raise UserError(f"predict: {e}") from None
    return {"dataset": dataset, "rank": rank, **result}


def plan_directory(
    out: Path, max_forgetting: float, dataset: str | None = None, metric: str = "forget_ce", bound: str = "upper",
    extrapolate: bool = False,
) -> dict[str, Any]:
    """The (rank, steps) with the lowest predicted fine-tuning loss within a forgetting budget, chosen within
    the studied ranks and steps unless ``extrapolate``."""
    from forgetscale.laws.predict import PlanError, plan

    if not math.isfinite(max_forgetting) or max_forgetting <= 0:
        raise UserError("--max-forgetting must be a positive number of nats")
    with _open(out) as store:
        dataset, fits = _dataset_fits(store, dataset)
        try:
            result = plan(fits, max_forgetting, params_per_rank(store, dataset), metric=metric, bound=bound,
                          base_entropy=base_entropy(store, dataset), extrapolate=extrapolate)
        except (PlanError, ValueError) as e:
            raise UserError(f"plan: {e}") from None
    return {"dataset": dataset, **result}


def frontier_data(out: Path, min_step: int | None = None) -> dict[str, Any]:
    """The frontier test for the study in ``out``: plain LoRA's line per dataset and every mitigation
    judged against it (:mod:`forgetscale.laws.frontier`).

    Plain points: the scale-1 rows of ``none`` and ``rescale`` runs; mitigated points: ``replay`` and
    ``kl`` runs, and the rescaled rows of ``rescale`` runs (strength = the scale). Steps below
    ``min_step`` (default: the study's ``fit.min_step``) are left out, as in the fits: every run shares
    step 0, and the onset is not on the line. A rescaled point is paired with its run's scale-1 point at
    the same step (``laws.frontier.POST_HOC``).

    Returns:
        ``{"rows": [compare rows], "lines": {dataset: line}, "points": [every point, with its residual]}``.

    Raises:
        UserError: no store, no finished run, or no plain line to compare with.
    """
    from forgetscale.config import FitConfig
    from forgetscale.laws.frontier import fit_line, frontier, residuals

    with _open(out) as store:
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
        if "scale" in r:
            kind, strength = "rescale", float(r["scale"])
        elif kind in PLAIN_KINDS:
            kind, strength = "none", None
        points.append({"dataset": r["dataset"], "run_id": r["run_id"], "rank": r["rank"], "step": r["step"],
                       "mitigation": kind, "strength": strength, "ft_loss": float(r["ft_loss"]),
                       "forget_ce": float(r["forget_ce"])})  # fmt: skip
    if not points:
        raise UserError(f"{out}: no finished run has measurements at or after step {k}")
    table: list[dict[str, Any]] = []
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
        judged = frontier({c: np.array([p[c] for p in plain]) for c in cols},
                          {c: np.array([p[c] for p in other]) for c in cols},
                          [(p["mitigation"], p["strength"]) for p in other])  # fmt: skip
        table += [{"dataset": ds, **j} for j in judged]
    if not table:
        raise UserError(f"{out}: no mitigated run to compare (sweep mitigation.kind: [none, replay, kl, rescale])")
    return {"rows": table, "lines": lines, "points": points}
