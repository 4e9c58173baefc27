"""Everything the report shows, gathered from a study's store into one plain value.

:func:`gather` reads the store (runs, measurements, fits, probes, config,
provenance) and works out the headline numbers with the same functions the
``predict`` and ``plan`` commands use, so the report and the CLI never
disagree. The renderers (:mod:`~forgetscale.report.html`,
:mod:`~forgetscale.report.markdown`) only format this value.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetscale import results
from forgetscale.errors import UserError
from forgetscale.probes.flips import item_flips
from forgetscale.report.texts import gather_texts
from forgetscale.store import open_study
from forgetscale.summary import finding_text

EXPONENTS = ("alpha", "beta", "alpha_f", "alpha_ft", "beta_f", "beta_ft", "rho", "a", "b")
"""Parameters shown as a law's exponents in the headline."""

PREDICTED = ("ft_loss", "forget_ce", "forget_kl")
PROBE_COLUMNS = ("n", "accuracy", "base_accuracy", "agreement", "refusal_rate", "base_refusal_rate")
SAMPLES_PER_PROBE = 4
SAMPLE_CHARS = 600  # a generation longer than this is cut (the store keeps it whole)


@dataclass(frozen=True)
class Headline:
    """The key numbers of one dataset.

    Attributes:
        dataset: dataset name.
        n_runs: finished runs of the study on this dataset.
        linear: the Eq. 4 fit (``{"c_fft", "s_fft": {value, lo, hi}, "r2", "fit_clean", "warnings"}``) or None.
        laws: per predicted quantity, the (P, N) law predictions use (reliable first,
            then the smallest held-out error): target, law, held-out error,
            reliability and its exponents with intervals.
        predictions: at the study's largest rank and at 2x and 4x it, at the last
            step (:func:`forgetscale.results.predict` output plus ``label``).
        prediction_error: why there are no predictions, or None.
        budget: the forgetting budget of the default plan (median observed ``forget_ce``).
        plan: :func:`forgetscale.results.plan` output for that budget, or None.
        plan_error: why no plan could be made, or None.
    """

    dataset: str
    n_runs: int
    linear: dict[str, Any] | None
    laws: list[dict[str, Any]]
    predictions: list[dict[str, Any]]
    prediction_error: str | None
    budget: float | None
    plan: dict[str, Any] | None
    plan_error: str | None


@dataclass(frozen=True)
class ReportData:
    """A study, as the report shows it.

    Attributes:
        directory: the study directory.
        name: the study's name (from its config; the directory name otherwise).
        version: forgetscale version writing the report.
        datasets: datasets with measurements or fits, sorted.
        headlines: one :class:`Headline` per dataset.
        rows: measurement rows of the study's finished runs (the laws' input).
        fits: ``{dataset: {law label: FitResult dict}}`` as stored (with parameter draws);
            datasets sorted, then ``linear``, ``paper``, ``kl_power`` and the rest by label.
        comparison: ``laws.select.comparison_table`` rows (best held-out error first).
        runs: one row per run of the study: id, dataset, rank, P, status, error,
            final step and metrics, seconds.
        other_runs: runs in the store that the current study does not list.
        config: the study config flattened to ``(dotted key, value)`` pairs.
        provenance: ``(key, value)`` pairs; a key whose runs disagree lists every value.
        probes: probe summary rows (run, dataset, rank, probe, accuracy, agreement...), with their flips
            against the base and 95% Wilson intervals (``probes.flips.item_flips``).
        samples: base vs fine-tuned generations, a few per probe.
        findings: the paper's findings F1-F6 per dataset (``{dataset, finding, verdict,
            evidence}``, with ``text``: one line of evidence), as ``forgetscale fit`` states them.
        notes: things the reader should know (fits that could not be read...).
        frontier: when the study has mitigated runs or several methods, :func:`forgetscale.results.compare`:
            ``rows`` (what
            ``forgetscale compare`` prints), ``lines`` (plain LoRA's line per dataset), ``points``.
        texts: the most-forgotten corpus texts (:func:`forgetscale.texts.forgotten_texts`), or None.
    """

    directory: str
    name: str
    version: str
    datasets: list[str]
    headlines: list[Headline]
    rows: list[dict[str, Any]]
    fits: dict[str, dict[str, dict[str, Any]]]
    comparison: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    other_runs: int
    config: list[tuple[str, str]]
    provenance: list[tuple[str, str]]
    probes: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    findings: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frontier: dict[str, Any] | None = None
    texts: dict[str, Any] | None = None


def gather(out: Path) -> ReportData:
    """Read the study in ``out`` and compute everything the report shows.

    Args:
        out: a study directory (``study.sqlite`` inside).

    Returns:
        A :class:`ReportData`.

    Raises:
        UserError: there is no store in ``out``.
    """
    from forgetscale import __version__

    out = Path(out)
    with open_study(out) as store:
        study = store.get_meta("study") or {}
        current = list(store.get_meta("run_ids") or [])
        all_runs = store.runs()
        rows = results.study_rows(store)
        stored_fits = store.fits()
        probe_rows = store.probes()
        measurements = store.measurements()

    notes: list[str] = []
    in_study = [r for r in all_runs if not current or r["run_id"] in current]
    fits: dict[str, dict[str, dict[str, Any]]] = {}
    for (ds, label), d in sorted(stored_fits.items(), key=lambda kv: (kv[0][0], *_law_order(kv[0][1]))):
        fits.setdefault(ds, {})[label] = d
    fit_objects = _fit_objects(fits, notes)
    datasets = sorted({str(r["dataset"]) for r in rows} | set(fits))
    last = {}
    for m in measurements:  # ordered by step within a run: the last one wins
        last[m["run_id"]] = m

    from forgetscale.laws.select import comparison_table

    return ReportData(
        directory=str(out),
        name=str(study.get("name") or out.resolve().name),
        version=__version__,
        datasets=datasets,
        headlines=[_headline(out, ds, rows, fits.get(ds, {}), fit_objects.get(ds, {})) for ds in datasets],
        rows=rows,
        fits=fits,
        comparison=comparison_table(fit_objects),
        runs=[_run_row(r, last.get(r["run_id"], {})) for r in sorted(in_study, key=_run_order)],
        other_runs=len(all_runs) - len(in_study),
        config=flatten(study),
        provenance=_provenance(in_study),
        probes=_probe_rows(probe_rows, {r["run_id"]: r for r in all_runs}),
        samples=_samples(probe_rows, {r["run_id"]: r for r in all_runs}),
        findings=_findings(out, fits, notes),
        frontier=_frontier(out, in_study, notes),
        texts=gather_texts(out),
        notes=notes,
    )


# ---------------------------------------------------------------------------- headline

def _frontier(out: Path, runs: list[dict[str, Any]], notes: list[str]) -> dict[str, Any] | None:
    """The frontier test (``forgetscale compare``) when the study has a mitigated run or several methods, else None."""
    done = [r for r in runs if r["status"] == "done"]
    if all(results.mitigation_of(r)[0] == "none" for r in done) and len({r.get("method") for r in done}) < 2:
        return None
    try:
        return results.compare(out)
    except UserError as e:
        notes.append(f"mitigations: {e}")
        return None


def _findings(out: Path, fits: Mapping[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    if not fits:
        return []
    try:
        found = results.findings(out)
    except (KeyError, TypeError, ValueError) as e:
        notes.append(f"the findings could not be computed ({e}); refit the study")
        return []
    return [{**f, "text": finding_text(f)} for f in found]


def _law_order(label: str) -> tuple[int, str]:
    known = ("linear", "paper", "kl_power")  # Eq. 4 first: the paper's headline law
    return (known.index(label) if label in known else len(known), label)


def _fit_objects(fits: Mapping[str, Mapping[str, Mapping[str, Any]]], notes: list[str]) -> dict[str, dict[str, Any]]:
    from forgetscale.laws import FitResult

    out: dict[str, dict[str, Any]] = {}
    for ds, by_label in fits.items():
        for label, d in by_label.items():
            try:
                out.setdefault(ds, {})[label] = FitResult.from_dict(d)
            except (KeyError, TypeError, ValueError) as e:
                notes.append(f"stored fit {label!r} of dataset {ds!r} could not be read ({e}); refit the study")
    return out


def _headline(
    out: Path, ds: str, rows: list[dict[str, Any]], fits: Mapping[str, Any], objects: Mapping[str, Any]
) -> Headline:
    from forgetscale.laws.select import choose_law, heldout_error, reliability

    mine = [r for r in rows if r["dataset"] == ds]
    lin = fits.get("linear")
    linear = None
    if lin is not None:
        linear = {p: lin["params"][p] for p in ("c_fft", "s_fft") if p in lin["params"]}
        linear.update(r2=(lin.get("r2") or {}).get("forget_ce"), fit_clean=lin.get("fit_clean", lin.get("reliable")),
                      warnings=list(lin.get("warnings") or []))
    laws = []
    for target in PREDICTED:
        label = choose_law(objects, target, reliable_only=False) if objects else None
        if label is None:
            continue
        d = fits[label]
        err = heldout_error(objects[label], target)
        rel = reliability(objects[label], target)
        laws.append({
            "target": target, "law": label, "heldout_error_of_change": err if math.isfinite(err) else None,
            "r2": (d.get("r2") or {}).get(target), "reliable": bool(rel), "state": rel.state,
            "reliability": rel.reason, "noise_floor": rel.noise_floor,
            "coverage": ((d.get("calibration") or {}).get("coverage") or {}).get(target),
            "exponents": [(p, d["params"][p]) for p in _exponents(d, target)],
            "warnings": list(d.get("warnings") or []),
        })  # fmt: skip

    predictions: list[dict[str, Any]] = []
    prediction_error = None
    ranks = [r["rank"] for r in mine if r.get("rank")]
    steps = [r["step"] for r in mine if r.get("step")]
    if not fits:
        prediction_error = "no fits stored for this dataset; run `forgetscale fit` on the study"
    elif not ranks or not steps:
        prediction_error = "no finished runs with measured steps"
    else:
        top, n = max(ranks), max(steps)
        try:
            for mult, what in ((1, "largest rank of the study"), (2, "2x the largest rank"),
                               (4, "4x the largest rank")):
                res = results.predict(out, float(n), rank=float(top * mult), dataset=ds)
                predictions.append({"label": what, **res})
        except UserError as e:
            prediction_error, predictions = str(e), []

    forget = [r["forget_ce"] for r in mine if r.get("step") and _finite(r.get("forget_ce"))]
    budget = float(statistics.median(forget)) if forget else None
    plan = plan_error = None
    if budget is None:
        plan_error = "no measured forgetting to set a budget from"
    elif not fits:
        plan_error = "no fits stored for this dataset"
    else:
        try:
            plan = results.plan(out, budget, dataset=ds)
        except UserError as e:
            plan_error = str(e)
        if plan is not None and plan.get("rank") is None:
            plan, plan_error = None, str(plan.get("reason"))
    return Headline(
        dataset=ds, n_runs=len({r["run_id"] for r in mine}), linear=linear, laws=laws,
        predictions=predictions, prediction_error=prediction_error, budget=budget,
        plan=plan, plan_error=plan_error,
    )


def _exponents(fit: Mapping[str, Any], target: str) -> list[str]:
    names = [p for p in EXPONENTS if p in fit["params"]]
    if fit.get("law") == "paper":  # Eq. 5 (ft_loss) and Eq. 6 (forget_ce) share only rho
        suffix = {"ft_loss": "_ft", "forget_ce": "_f"}.get(target)
        names = [p for p in names if suffix is None or p == "rho" or p.endswith(suffix)]
    return names


# ---------------------------------------------------------------------------- tables

def _run_order(r: Mapping[str, Any]) -> tuple[str, int, str]:
    return (str(r["dataset"]), int(r["rank"] or 0), str(r["run_id"]))


def _run_row(r: Mapping[str, Any], last: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": r["run_id"], "dataset": r["dataset"], "rank": r["rank"], "P": r["P"], "status": r["status"],
        "error": r.get("error"), "step": last.get("step"), "ft_loss": last.get("ft_loss"),
        "forget_ce": last.get("forget_ce"), "forget_kl": last.get("forget_kl"),
        "forget_ce_se": last.get("forget_ce_se"), "forget_kl_se": last.get("forget_kl_se"),
        "top1_agree": last.get("top1_agree"), "top1_agree_se": last.get("top1_agree_se"),
        "kl_p99": last.get("kl_p99"), "task_kl": last.get("task_kl"), "task_kl_se": last.get("task_kl_se"),
        "seconds": (r.get("timings") or {}).get("total"),
    }  # fmt: skip


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as ``(dotted key, value)`` pairs; lists and scalars shown as JSON.

    Example:
        >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"})
        [('a.b', '1'), ('a.c', '[1, 2]'), ('d', 'x')]
    """
    if isinstance(d, Mapping) and d:
        out = []
        for k in d:
            out.extend(flatten(d[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    if not prefix:
        return []
    return [(prefix, d if isinstance(d, str) else json.dumps(d, sort_keys=True, default=str))]


def _provenance(runs: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    values: dict[str, dict[str, None]] = {}
    for r in runs:
        for k, v in flatten(r.get("provenance") or {}):
            values.setdefault(k, {})[v] = None
    return [(k, " | ".join(vs)) for k, vs in sorted(values.items())]


def _probe_rows(probes: list[Mapping[str, Any]], runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in probes:
        run = runs.get(p["run_id"], {})
        s = p.get("summary") or {}
        out.append({"run_id": p["run_id"], "dataset": run.get("dataset"), "rank": run.get("rank"),
                    "probe": p["probe"], **item_flips(p.get("items") or []),  # flips against the base, intervals
                    **{k: s.get(k) for k in PROBE_COLUMNS}})
    base_first = {True: 0, False: 1}
    return sorted(out, key=lambda r: (r["probe"], base_first[r["dataset"] is None], str(r["dataset"]),
                                      r["rank"] or 0, r["run_id"]))


def _samples(probes: list[Mapping[str, Any]], runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per generation probe: the fine-tuned run that agrees least with the base, its changed answers first."""
    by_probe: dict[str, list[Mapping[str, Any]]] = {}
    for p in probes:
        items = [it for it in p.get("items") or [] if isinstance(it, Mapping) and "generation" in it]
        if p["run_id"] in runs and items:  # a fine-tuned run (the base is not a run) with generations
            by_probe.setdefault(p["probe"], []).append({**p, "items": items})
    out = []
    for probe, cands in sorted(by_probe.items()):

        def agreement(p: Mapping[str, Any]) -> float:
            a = (p.get("summary") or {}).get("agreement")
            return a if _finite(a) else 1.0

        pick = min(cands, key=lambda p: (agreement(p), -int(runs[p["run_id"]].get("rank") or 0), p["run_id"]))
        items = sorted(pick["items"], key=lambda it: bool(it.get("agree", True)))[:SAMPLES_PER_PROBE]
        run = runs[pick["run_id"]]
        out.append({
            "probe": probe, "run_id": pick["run_id"], "dataset": run.get("dataset"), "rank": run.get("rank"),
            "agreement": (pick.get("summary") or {}).get("agreement"),
            "items": [{
                "id": it.get("id"), "prompt": _cut(it.get("prompt")), "reference": _cut(it.get("reference")),
                "base": _cut(it.get("base_generation")), "tuned": _cut(it.get("generation")),
                "base_answer": _answer(it.get("base_answer")), "answer": _answer(it.get("answer")),
                "agree": it.get("agree"),
            } for it in items],
        })  # fmt: skip
    return out


def _answer(v: Any) -> Any:
    # a safety probe's answer is whether the model refused
    return ("refused" if v else "did not refuse") if isinstance(v, bool) else v


def _cut(v: Any) -> str:
    if v is None:
        return ""
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= SAMPLE_CHARS else s[:SAMPLE_CHARS] + " …"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------- formats shared by the renderers

def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, ``-`` for missing.

    Example:
        >>> fmt(1.73341), fmt(2498560), fmt(None), fmt(True)
        ('1.733', '2498560', '-', 'yes')
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(v)


def fmt_ci(d: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``value [lo, hi]`` from a ``{"value", "lo", "hi"}`` mapping (the interval left out when absent).

    Example:
        >>> fmt_ci({"value": 1.7334, "lo": 1.70, "hi": 1.76})
        '1.733 [1.7, 1.76]'
    """
    if not d:
        return "-"
    lo, hi = d.get("lo"), d.get("hi")
    interval = f" [{fmt(lo, digits)}, {fmt(hi, digits)}]" if _finite(lo) and _finite(hi) else ""
    return fmt(d.get("value"), digits) + interval


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage, ``-`` for missing.

    >>> fmt_pct(0.672), fmt_pct(None)
    ('67.2%', '-')
    """
    return f"{100 * v:.3g}%" if _finite(v) else "-"
