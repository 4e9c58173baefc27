"""The paper's findings F1-F5, checked on a study: a verdict with the numbers behind it.

Each finding is ``{dataset, finding, verdict, evidence}`` with verdict
``supported``, ``not_supported`` or ``undecided``. ``undecided`` is the honest
answer when the data cannot decide; intervals are 95%, over runs (the unit of
replication) or, for probes, over items.

- **F1** inverse linear relation L_f(L_ft): the ``linear`` fit's R² and slope
  ``c_fft`` (bootstrap over runs). Supported: the slope's interval lies above 0
  and R² >= 0.9; not supported: the interval lies at or below 0, or R² < 0.5.
- **F2 / F3** forgetting grows as a power law in P / in N: ``kl_power``'s
  exponent ``a`` / ``b`` (KL = A P^a N^b; forget_ce = H_b + KL is the shifted
  law). Supported: the interval lies above 0 and the law is reliable
  (``study.reliability``); not supported: the interval lies at or below 0, or
  inside ±0.02 (no growth); otherwise undecided.
- **F4** no escape from the line: the test is a regression of forgetting on
  ``ft_loss``, ``log P`` and ``log N`` (least squares, points at or after
  ``min_step``), with a 95% pairs-cluster bootstrap over runs (999 resamples,
  resamples with fewer than 2 distinct P or N redrawn). The effects reported
  are the coefficients times the studied range of log P (log N): the change
  in forgetting at equal ``ft_loss`` across the sweep, compared with the
  spread of forgetting itself (its 5-95% range). Supported: both intervals lie
  within ±25% of that spread; not supported: an interval excludes 0 and its
  point effect exceeds 10% of the spread; otherwise undecided. Fewer than 4
  runs: undecided.
- **F5** probe agreement falls further than accuracy: per (run, item),
  ``d = (1 - agree) - (base_correct - correct)`` (a safety item's "correct" is
  a refusal); the mean over items with a bootstrap over items (2,000
  resamples; an item keeps all its runs). Supported: the interval lies above
  0; not supported: it lies within [-0.02, 0.02]; fewer than 20 items:
  undecided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from forgetscale.laws.fit import FitResult
from forgetscale.laws.study import reliability

Verdict = str
F1_R2, F1_R2_FAIL = 0.9, 0.5
FLAT_EXPONENT = 0.02
F4_TIGHT, F4_MATERIAL, F4_MIN_RUNS, F4_BOOT = 0.25, 0.10, 4, 999
F5_MIN_ITEMS, F5_FLAT, F5_BOOT = 20, 0.02, 2000
MIN_RUNS = 4
"""Fewer runs than this and a bootstrap over runs has too few distinct resamples for a 95% interval: F1-F3
stay undecided, whatever the point estimates say."""


def _finding(ds: str, name: str, verdict: Verdict, **evidence: Any) -> dict[str, Any]:
    return {"dataset": ds, "finding": name, "verdict": verdict, "evidence": evidence}


def _ci(fit: FitResult, p: str) -> dict[str, Any]:
    lo, hi = fit.intervals.get(p, (math.nan, math.nan))
    return {"value": fit.params[p], "lo": lo if math.isfinite(lo) else None, "hi": hi if math.isfinite(hi) else None}


def f1(ds: str, fits: Mapping[str, FitResult]) -> dict[str, Any]:
    """F1 from the ``linear`` fit."""
    lin = fits.get("linear")
    if lin is None:
        return _finding(ds, "F1", "undecided", reason="no linear fit")
    slope, r2 = _ci(lin, "c_fft"), lin.r2["forget_ce"]
    ev = {"claim": "forgetting is an inverse linear function of fine-tuning loss", "r2": r2, "slope_c_fft": slope,
          "n_runs": lin.n_groups, "test": "linear fit, 95% bootstrap over runs"}
    if slope["lo"] is None or lin.n_groups < MIN_RUNS:
        return _finding(ds, "F1", "undecided", reason=f"no interval for the slope from {lin.n_groups} runs", **ev)
    if slope["hi"] <= 0 or r2 < F1_R2_FAIL:
        return _finding(ds, "F1", "not_supported", **ev)
    if slope["lo"] > 0 and r2 >= F1_R2:
        return _finding(ds, "F1", "supported", **ev)
    return _finding(ds, "F1", "undecided", **ev)


def f23(ds: str, fits: Mapping[str, FitResult], which: str) -> dict[str, Any]:
    """F2 (``which="P"``) or F3 (``"N"``) from ``kl_power``'s exponent."""
    name, p = ("F2", "a") if which == "P" else ("F3", "b")
    kl = fits.get("kl_power")
    if kl is None:
        return _finding(ds, name, "undecided", reason="no kl_power fit")
    ok, why = reliability(kl, "forget_kl")
    ev = {"claim": f"forgetting grows with {which} as a (shifted) power law", "law": "kl_power: KL = A P^a N^b",
          f"exponent_{p}": _ci(kl, p), "law_reliable": ok, "reliability": why, "n_runs": kl.n_groups}
    e = ev[f"exponent_{p}"]
    if e["lo"] is None or kl.n_groups < MIN_RUNS:
        return _finding(ds, name, "undecided", reason=f"no interval for the exponent from {kl.n_groups} runs", **ev)
    if e["hi"] <= 0 or (e["lo"] >= -FLAT_EXPONENT and e["hi"] <= FLAT_EXPONENT):
        return _finding(ds, name, "not_supported", **ev)
    if e["lo"] > 0 and ok:
        return _finding(ds, name, "supported", **ev)
    return _finding(ds, name, "undecided", **ev)


def f4(ds: str, cols: Mapping[str, np.ndarray], min_step: float, seed: int = 0) -> dict[str, Any]:
    """F4: regression of forgetting on ft_loss, log P, log N with a run-cluster bootstrap."""
    keep = (cols["N"] >= max(min_step, 1)) & np.isfinite(cols["ft_loss"]) & np.isfinite(cols["forget_ce"])
    keep &= np.isfinite(cols["P"]) & (cols["P"] > 0)
    y, ft, lp, ln = cols["forget_ce"][keep], cols["ft_loss"][keep], np.log(cols["P"][keep]), np.log(cols["N"][keep])
    runs = cols["run_id"][keep]
    labels = np.unique(runs)
    test = ("least squares forget_ce ~ ft_loss + log P + log N; effect = coefficient x studied range; "
            f"95% pairs-cluster bootstrap over runs ({F4_BOOT} resamples)")
    ev: dict[str, Any] = {"claim": "at equal fine-tuning loss, forgetting does not depend on P or N", "test": test,
                          "n_runs": int(len(labels)), "n_points": int(y.size)}
    if len(labels) < F4_MIN_RUNS or len(np.unique(lp)) < 2 or len(np.unique(ln)) < 2:
        return _finding(ds, "F4", "undecided", reason=f"needs >= {F4_MIN_RUNS} runs with 2+ P and N values", **ev)
    spans = np.array([np.ptp(lp), np.ptp(ln)])
    spread = float(np.subtract(*np.percentile(y, [95, 5])))

    def effects(idx: np.ndarray) -> np.ndarray | None:
        if len(np.unique(lp[idx])) < 2 or len(np.unique(ln[idx])) < 2:
            return None
        design = np.stack([np.ones(idx.size), ft[idx], lp[idx] - lp.mean(), ln[idx] - ln.mean()], axis=1)
        coef, _, rank, _ = np.linalg.lstsq(design, y[idx], rcond=None)
        return coef[2:] * spans if rank == 4 else None

    point = effects(np.arange(y.size))
    if point is None:
        return _finding(ds, "F4", "undecided", reason="ft_loss, log P and log N are collinear", **ev)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(runs == g) for g in labels]
    boot = []
    for _ in range(20 * F4_BOOT):
        if len(boot) == F4_BOOT:
            break
        e = effects(np.concatenate([members[k] for k in rng.integers(0, len(labels), len(labels))]))
        if e is not None:
            boot.append(e)
    lo, hi = np.percentile(np.array(boot), [2.5, 97.5], axis=0)
    for i, key in enumerate(("log_P", "log_N")):
        ev[f"effect_{key}"] = {"value": float(point[i]), "lo": float(lo[i]), "hi": float(hi[i])}
    ev["forgetting_spread"] = spread
    tight = all(-F4_TIGHT * spread <= lo[i] and hi[i] <= F4_TIGHT * spread for i in range(2))
    escapes = any((lo[i] > 0 or hi[i] < 0) and abs(point[i]) > F4_MATERIAL * spread for i in range(2))
    verdict = "not_supported" if escapes else "supported" if tight else "undecided"
    return _finding(ds, "F4", verdict, **ev)


def f5(ds: str, probe_items: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, Any]:
    """F5 from per-(run, item) probe records: ``{"probe", "run_id", "id", "agree", "correct", "base_correct",
    "answer", "base_answer"}``."""
    ev: dict[str, Any] = {"claim": "agreement with the base falls further than accuracy",
                          "test": f"mean of (1 - agree) - (base_correct - correct), 95% bootstrap over items "
                                  f"({F5_BOOT} resamples)"}
    by_item: dict[tuple[str, str], list[float]] = {}
    agree_drop, acc_drop = [], []
    for it in probe_items:
        correct, base_correct = it.get("correct"), it.get("base_correct")
        if correct is None and isinstance(it.get("answer"), bool):  # safety: a refusal is the right answer
            correct, base_correct = it.get("answer"), it.get("base_answer")
        if correct is None or base_correct is None or it.get("agree") is None:
            continue
        a, c = 1.0 - float(bool(it["agree"])), float(bool(base_correct)) - float(bool(correct))
        agree_drop.append(a)
        acc_drop.append(c)
        by_item.setdefault((str(it.get("probe")), str(it.get("id"))), []).append(a - c)
    ev["n_items"], ev["n_records"] = len(by_item), len(agree_drop)
    if len(by_item) < F5_MIN_ITEMS:
        return _finding(ds, "F5", "undecided", reason=f"{len(by_item)} scored probe items (< {F5_MIN_ITEMS})", **ev)
    ev["agreement_drop"], ev["accuracy_drop"] = float(np.mean(agree_drop)), float(np.mean(acc_drop))
    groups = list(by_item.values())
    sums, counts = np.array([sum(g) for g in groups]), np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), (F5_BOOT, len(groups)))
    boot = sums[idx].sum(1) / counts[idx].sum(1)
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    ev["difference"] = {"value": float(sums.sum() / counts.sum()), "lo": lo, "hi": hi}
    if lo > 0:
        return _finding(ds, "F5", "supported", **ev)
    if lo >= -F5_FLAT and hi <= F5_FLAT:
        return _finding(ds, "F5", "not_supported", **ev)
    return _finding(ds, "F5", "undecided", **ev)


def findings(
    cols: Mapping[str, Mapping[str, np.ndarray]],
    fits: Mapping[str, Mapping[str, FitResult]],
    probe_items: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    min_step: float = 1,
) -> list[dict[str, Any]]:
    """F1-F5 for every dataset (F5 only where probe items exist).

    Args:
        cols: ``laws.study.rows_to_arrays`` output.
        fits: ``{dataset: {label: FitResult}}``.
        probe_items: ``{dataset: [item records]}`` of fine-tuned runs (see :func:`f5`).
        min_step: the fits' ``min_step`` (F4 uses the same points).

    Returns:
        The list of findings, datasets sorted, F1..F5 within each.
    """
    out = []
    for ds in sorted(set(cols) | set(fits)):
        f = fits.get(ds, {})
        out += [f1(ds, f), f23(ds, f, "P"), f23(ds, f, "N")]
        if ds in cols:
            out.append(f4(ds, cols[ds], min_step))
        if probe_items and probe_items.get(ds):
            out.append(f5(ds, probe_items[ds]))
    return out
