"""Methods compared at equal fine-tuning loss: each method against a reference method's line, and F7.

A method's learning rate and steps move it along its own line between fine-tuning loss and forgetting, so
a single point per method ranks nothing. What separates two methods is the distance between their lines at
the same fine-tuning loss. Here the reference method's (LoRA's) points give the line (``frontier.fit_line``);
a method's points whose fine-tuning loss lies in the range both methods cover give its residuals; the
difference is the mean over the method's runs of each run's mean residual, in nats of forget_ce. Its
interval is the frontier test's for a trained level (:func:`forgetscale.laws.frontier.frontier`): a
prediction interval for as many new reference runs at the method's fine-tuning loss, from the reference
runs' leave-one-run-out residuals and the line's jackknife variance, on Satterthwaite's df. The method's own
runs are assumed to spread as the reference's do; each row reports both spreads.

Verdicts, against a margin of :data:`MARGIN` of the reference's forgetting at the compared points (its
forget_ce there less the base's):

- ``same``: the 90% interval lies inside ±margin (two one-sided 5% tests: the difference is immaterial).
  The margin is counted from the same fitted line as the difference, so each one-sided test adds the
  part of the line's error that the margin shares (``se_above``, ``se_below``): without it a method
  exactly at +margin was ``same`` more often than 5% (``tests/sim/test_sim_methods.py``);
- ``forgets_less`` / ``forgets_more``: otherwise, the 95% interval lies below / above 0;
- ``undecided``, with a reason: the interval contains 0 and reaches past the margin; too few runs; no
  common range of fine-tuning loss.

F7, the paper's claim carried across methods ("at equal fine-tuning loss the method does not change
forgetting"): ``supported`` when every method is ``same`` (an intersection-union test: each at 5% is a 5%
test of all); ``not_supported`` when a method's interval at the Bonferroni level over the m methods,
1 - 0.05/m, lies entirely beyond ±margin (a material difference, as F4 judges one); ``undecided`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from forgetscale.laws.frontier import LEVEL, fit_line, frontier

Array = np.ndarray
MARGIN = 0.2
"""A difference within 20% of the reference method's forgetting (forget_ce above the base's) is immaterial."""
VERDICTS = ("forgets_less", "same", "forgets_more", "undecided")


def overlap(a: Array, b: Array) -> tuple[float, float] | None:
    """The range of fine-tuning loss both point sets cover; None when they do not meet.

    >>> overlap(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0]))
    (2.5, 3.0)
    """
    lo, hi = max(float(np.min(a)), float(np.min(b))), min(float(np.max(a)), float(np.max(b)))
    return (lo, hi) if lo <= hi else None


def compare_method(ref: Mapping[str, Array], other: Mapping[str, Array], base_ce: float,
                   margin: float = MARGIN, level: float = LEVEL) -> dict[str, Any]:
    """One method's difference in forgetting from the reference method's line at equal fine-tuning loss.

    Args:
        ref, other: the two methods' points: ``ft_loss``, ``forget_ce``, ``run_id`` and ``step`` arrays.
        base_ce: the base model's forget_ce (every run's step 0), from which forgetting is counted.
        margin: the share of the reference's forgetting within which a difference is immaterial.
        level: the level of the interval reported (``lo``, ``hi``); verdicts use 95% and 90%.

    Returns:
        ``difference`` (nats of forget_ce; negative: forgets less), ``lo``, ``hi``, ``lo90``, ``hi90``,
        ``margin`` (nats), ``relative`` (the difference over the reference's forgetting there),
        ``verdict``, ``reason`` (None unless undecided), ``range`` (the common ft_loss range), ``n_points``,
        ``n_runs``, ``n_reference_runs``, ``df``, ``own_run_sd``, ``model_run_sd`` and ``test``; once judged,
        ``se`` (the interval's) and ``se_above``, ``se_below`` (of the distance to the upper and the lower
        margin, which shares the line's error).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.tile([1.0, 1.5, 2.0], 4); runs = np.repeat(list("abcd"), 3)
        >>> ref = {"ft_loss": x, "forget_ce": 4.0 - x + rng.normal(0, 0.01, 12), "run_id": runs,
        ...        "step": np.tile([4, 8, 16], 4)}
        >>> oth = {"ft_loss": x[:6], "forget_ce": 3.0 - x[:6] + rng.normal(0, 0.01, 6), "run_id": runs[:6],
        ...        "step": np.tile([4, 8, 16], 2)}
        >>> out = compare_method(ref, oth, base_ce=1.0)
        >>> out["verdict"], round(out["difference"], 1)
        ('forgets_less', -1.0)
    """
    rx, ox = np.asarray(ref["ft_loss"], float), np.asarray(other["ft_loss"], float)
    res: dict[str, Any] = {"difference": None, "lo": None, "hi": None, "lo90": None, "hi90": None, "margin": None,
                           "relative": None, "verdict": "undecided", "reason": None, "range": None, "n_points": 0,
                           "n_runs": len(np.unique(np.asarray(other["run_id"]).astype(str))),
                           "n_reference_runs": len(np.unique(np.asarray(ref["run_id"]).astype(str))), "df": None,
                           "test": "mean run residual from the reference method's line at the method's own "
                                   "fine-tuning losses (within the range both cover), against a prediction "
                                   "interval for as many new reference runs there"}  # fmt: skip
    common = overlap(rx, ox) if rx.size and ox.size else None
    if common is None:
        res["reason"] = "the two methods' fine-tuning losses do not overlap: there is no equal fine-tuning loss"
        return res
    inside = (ox >= common[0]) & (ox <= common[1])
    pts = {k: np.asarray(v)[inside] for k, v in other.items() if k in ("ft_loss", "forget_ce", "run_id", "step")}
    res.update(range=[common[0], common[1]], n_points=int(inside.sum()),
               n_runs=len(np.unique(pts["run_id"].astype(str))))
    try:
        line = fit_line(rx, np.asarray(ref["forget_ce"], float))
    except ValueError as e:
        res["reason"] = f"the reference method's line cannot be fitted ({e})"
        return res
    ref_cols = {k: ref[k] for k in ("ft_loss", "forget_ce", "run_id", "step")}  # no P: methods' P are not one axis
    judged = frontier(ref_cols, pts, [("method", 0.0)] * int(inside.sum()))[0]
    est = judged["residual"]
    forgetting = float(np.mean(line["s_fft"] - line["c_fft"] * pts["ft_loss"])) - base_ce
    m = margin * abs(forgetting)
    res.update(difference=est, margin=m, relative=est / forgetting if forgetting else None, df=judged.get("df"),
               own_run_sd=judged.get("own_run_sd"), model_run_sd=judged.get("model_run_sd"))
    if judged["reason"] is not None:
        res["reason"] = judged["reason"].replace("plain runs", "reference runs").replace("plain run", "reference run")
        return res
    se = (judged["hi"] - judged["lo"]) / (2 * float(stats.t.ppf(0.5 + LEVEL / 2, judged["df"])))
    res["se"] = se
    half = float(stats.t.ppf(0.5 + level / 2, judged["df"])) * se
    h90 = float(stats.t.ppf(0.95, judged["df"])) * se
    res.update(lo=est - half, hi=est + half, lo90=est - h90, hi90=est + h90)
    h95 = float(stats.t.ppf(0.975, judged["df"])) * se
    # The margin is counted from the same fitted line as the difference: a line too low by d raises the
    # difference by d and lowers the margin by margin x d, so the distance to the upper margin errs by
    # (1 + margin) d and to the lower by (1 - margin) d. Each one-sided test of `same` (and F7's test of a
    # material difference) takes its own share of the line's variance; with the interval's alone, `same` at
    # the upper margin was said more often than 5%.
    sign = 1.0 if forgetting >= 0 else -1.0
    ry, rruns = np.asarray(ref["forget_ce"], float), np.asarray(ref["run_id"]).astype(str)
    v = _line_var(rx, ry, rruns, float(np.mean(pts["ft_loss"])))
    se_above = math.sqrt(max(se**2 + ((1 + margin * sign) ** 2 - 1) * v, 0.0))
    se_below = math.sqrt(max(se**2 + ((1 - margin * sign) ** 2 - 1) * v, 0.0))
    res.update(se_above=se_above, se_below=se_below)
    t90 = float(stats.t.ppf(0.95, judged["df"]))
    if -m < est - t90 * se_below and est + t90 * se_above < m:
        res["verdict"] = "same"
    elif est + h95 < 0:
        res["verdict"] = "forgets_less"
    elif est - h95 > 0:
        res["verdict"] = "forgets_more"
    else:
        res["reason"] = (f"the 95% interval [{est - h95:.3g}, {est + h95:.3g}] contains 0 and its 90% interval "
                         f"reaches past the margin ±{m:.3g}: neither a difference nor its absence is shown")
    return res


def f7(ds: str, rows: Sequence[Mapping[str, Any]], reference: str) -> dict[str, Any]:
    """F7 for one dataset from its methods' comparison rows (:func:`compare_method`, each with ``method``)."""
    m = len(rows)
    names = ", ".join(str(r["method"]) for r in rows)
    ev: dict[str, Any] = {"reference": reference, "methods": [
        {k: r.get(k) for k in ("method", "difference", "lo", "hi", "margin", "verdict", "reason", "df", "se",
                               "se_above", "se_below")}
        for r in rows], "margin": {"fraction": MARGIN, "definition": f"{MARGIN:.0%} of the reference method's "
                                   "forgetting (forget_ce above the base's) at the compared points"},
        "test": "supported: every method equivalent to the reference within the margin (two one-sided 5% tests "
                "each; all must pass); not supported: a method's interval at the Bonferroni level 1 - 0.05/m "
                "entirely beyond the margin", "multiplicity": f"{m} methods against one reference"}
    alpha = 0.05 / max(m, 1)
    material = []
    for r in rows:
        se, df = r.get("se"), r.get("df")
        if se is None or df is None or r.get("difference") is None:
            continue
        q = float(stats.t.ppf(1 - alpha / 2, df))
        lo, hi = r["difference"] - q * se, r["difference"] + q * se
        # beyond the margin: each side with the share of the line's error that the margin shares (compare_method)
        above, below = r["difference"] - q * (r.get("se_above") or se), r["difference"] + q * (r.get("se_below") or se)
        if above > r["margin"] or below < -r["margin"]:
            material.append(f"{r['method']} ({r['difference']:+.3g} nats, {1 - alpha:.1%} interval "
                            f"[{lo:.3g}, {hi:.3g}] beyond ±{r['margin']:.3g})")
    if m == 0:
        verdict, why = "undecided", "no method besides the reference"
    elif material:
        verdict, why = "not_supported", "at equal fine-tuning loss forgetting differs by method: " + "; ".join(material)
    elif all(r["verdict"] == "same" for r in rows):
        verdict, why = "supported", f"{names}: each forgets as {reference} does at equal ft_loss, within the margin"
    else:
        open_ = [f"{r['method']} ({r['verdict']}{': ' + r['reason'] if r.get('reason') else ''})"
                 for r in rows if r["verdict"] != "same"]
        why = "not every method is shown equivalent, and none materially different: " + "; ".join(open_)
        verdict = "undecided"
    ev = {"claim": "at equal fine-tuning loss, the fine-tuning method does not change forgetting", **ev,
          "reason": why}
    return {"dataset": ds, "finding": "F7", "verdict": verdict, "evidence": ev}


def _line_var(x: Array, y: Array, runs: Array, at: float) -> float:
    """Jackknife variance over leave-one-reference-run-out lines of the line's value at ft_loss ``at``."""
    vals = []
    for g in np.unique(runs):
        keep = runs != g
        if len(np.unique(x[keep])) >= 2:
            ln = fit_line(x[keep], y[keep])
            vals.append(ln["s_fft"] - ln["c_fft"] * at)
    if len(vals) < 2:
        return 0.0
    v = np.array(vals)
    return float((v.size - 1) / v.size * np.sum((v - v.mean()) ** 2))


def base_ce_of(steps: Array, forget_ce: Array) -> float:
    """The base model's forget_ce: the median over step-0 points (every run starts as the base); NaN if none."""
    zero = np.asarray(steps) == 0
    return float(np.median(np.asarray(forget_ce, float)[zero])) if zero.any() else math.nan


def method_rows(rows: Sequence[Mapping[str, Any]], runs: Mapping[str, Mapping[str, Any]], min_step: float,
                reference: str = "lora") -> list[dict[str, Any]]:
    """Each method against ``reference`` at equal fine-tuning loss, per dataset, from plainly trained runs.

    Args:
        rows: measurement rows with ``data`` (the dataset; else ``dataset``), ``method``, ``run_id``, ``step``,
            ``ft_loss`` and ``forget_ce`` (step 0 included: it gives the base's forget_ce).
        runs: per run id, ``P``, ``lr`` and ``seconds_per_step`` (any may be None).
        min_step: points before this step are left out of the comparison (the onset is not on a line).

    Returns:
        One row per dataset and method other than ``reference``: ``dataset``, ``method``, ``reference``,
        :func:`compare_method`'s keys, and the method's ``P`` and ``lr`` (sorted distinct values over its
        runs) and ``seconds_per_step`` (mean). Datasets with one method, or without the reference, give none.
    """
    def method(r: Mapping[str, Any]) -> str:
        return str(r.get("method") or reference)

    usable = [r for r in rows if r.get("ft_loss") is not None and r.get("forget_ce") is not None]
    out = []
    for data in sorted({str(r.get("data", r["dataset"])) for r in usable}):
        mine = [r for r in usable if str(r.get("data", r["dataset"])) == data]
        methods = sorted({method(r) for r in mine})
        if len(methods) < 2 or reference not in methods:
            continue
        base = base_ce_of(np.array([r["step"] for r in mine]), np.array([r["forget_ce"] for r in mine], float))
        cols = {}
        for m in methods:
            pts = [r for r in mine if method(r) == m and r["step"] >= min_step]
            cols[m] = {c: np.array([r[c] for r in pts], dtype=float if c in ("ft_loss", "forget_ce") else None)
                       for c in ("ft_loss", "forget_ce", "run_id", "step")}  # fmt: skip
        for m in methods:
            if m == reference:
                continue
            info = [runs.get(i) or {} for i in sorted({r["run_id"] for r in mine if method(r) == m})]
            secs = [x["seconds_per_step"] for x in info if x.get("seconds_per_step") is not None]
            out.append({"dataset": data, "method": m, "reference": reference,
                        **compare_method(cols[reference], cols[m], base),
                        "P": sorted({int(x["P"]) for x in info if x.get("P")}),
                        "lr": sorted({float(x["lr"]) for x in info if x.get("lr") is not None}),
                        "seconds_per_step": float(np.mean(secs)) if secs else None})  # fmt: skip
    return out
