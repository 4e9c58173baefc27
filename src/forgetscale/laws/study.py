"""From measurement rows to fitted laws, predictions and plans.

Rows are the store's measurements joined with their run (one dict per run and
step). Every applicable law is fitted per dataset, the bootstrap resamples
runs, and each law is validated by refitting without the largest P and,
separately, without the longest N.

Reliability rule (issue 11). A law is *reliable* for a target when both
held-out splits (largest rank left out; longest N left out) were refitted and
predicted finitely, and the larger of their errors, relative to the change of
the target since step 0 (``heldout_error_of_change``; ``validate.py``), is at
most :data:`RELIABLE_ERROR` (10%). In-sample R² plays no part. Fit warnings
(a parameter on a bound, wide parameter intervals) are reported beside it.

Predictions and plans use reliable laws only, the smallest held-out error
first. Forgetting is predicted once: the best reliable law on ``forget_ce`` or
``forget_kl`` (their errors are both relative to ``forget_kl``, so they
compare), and the other quantity is derived through the base entropy
(``forget_ce = base_entropy + forget_kl``). Intervals are the calibrated
prediction intervals for a new run (``intervals.py``). With no reliable law
a quantity is ``None`` with a ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from forgetscale.laws.fit import FitError, FitResult, fit_law
from forgetscale.laws.forms import LAWS, get_law

ROW_KEYS = ("run_id", "dataset", "rank", "P", "step", "ft_loss", "forget_ce", "forget_kl",
            "base_entropy", "forget_top1_ce", "data_loss")
METRICS = ("ft_loss", "forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")
COLUMNS = ("P", "N", "rank", *METRICS)  # what a law may take as input or target; N is `step`
PREDICTED = ("ft_loss", "forget_ce", "forget_kl")
DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RELIABLE_ERROR = 0.10
"""Largest held-out error, as a fraction of the change since step 0, of a reliable law."""
FORGETTING = ("forget_ce", "forget_kl")


class PlanError(ValueError):
    """No (rank, steps) candidate meets the forgetting budget, or the fits cannot plan."""


@dataclass(frozen=True)
class LawSpec:
    """How the study applies a law form: which row columns are its inputs and targets."""

    label: str
    law: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]


def law_specs(laws: Sequence[str] | None = None) -> list[LawSpec]:
    """The laws a study fits.

    Args:
        laws: labels (``"paper"``, ``"additive:ft_loss"``) or form names
            (``"additive"`` means both of its targets). None: every registered
            form whose columns the rows have, plus ``additive`` on ``forget_ce``
            and ``ft_loss``.

    Returns:
        One :class:`LawSpec` per fit, in a stable order.

    Example:
        >>> [s.label for s in law_specs(["linear", "additive"])]
        ['linear', 'additive:forget_ce', 'additive:ft_loss']
    """
    names = list(laws) if laws is not None else list(LAWS)
    out: list[LawSpec] = []
    for name in names:
        law, _, target = name.partition(":")
        form = get_law(law)
        direct = set(form.inputs) | set(form.outputs) <= set(COLUMNS)
        if direct and not target:
            out.append(LawSpec(law, law, form.inputs, form.outputs))
        elif len(form.outputs) > 1 and target:
            raise ValueError(f"{name!r}: law {law!r} models {form.outputs} together; use {law!r}")
        elif len(form.inputs) == 2 and len(form.outputs) == 1:
            # a generic two-input form: inputs are (P, N), the target is named in the label
            targets = [target] if target else ["forget_ce", "ft_loss"]
            for t in targets:
                if t not in METRICS:
                    raise ValueError(f"{name!r}: unknown target {t!r}; choose from {METRICS}")
                out.append(LawSpec(f"{law}:{t}", law, ("P", "N"), (t,)))
        elif laws is not None:
            raise ValueError(
                f"law {name!r} has inputs {form.inputs} and outputs {form.outputs}, which are not "
                f"study columns {COLUMNS}; name a target as '{law}:<metric>' for a 2-input form"
            )
    return list({s.label: s for s in out}.values())


def rows_to_arrays(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Group measurement rows by dataset into column arrays.

    Args:
        rows: dicts with at least :data:`ROW_KEYS`; missing metric values (None)
            become NaN.

    Returns:
        ``{dataset: {column: array}}`` with ``run_id`` as strings, ``N`` (= ``step``)
        and every metric as floats, in row order.

    Example:
        >>> a = rows_to_arrays([{**dict.fromkeys(ROW_KEYS, 1.0), "run_id": "r", "dataset": "d"}])
        >>> a["d"]["N"], a["d"]["run_id"]
        (array([1.]), array(['r'], dtype='<U1'))
    """
    by_ds: dict[str, list[Mapping[str, Any]]] = {}
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"measurement row {i} lacks {missing} (has {sorted(row)})")
        by_ds.setdefault(str(row["dataset"]), []).append(row)
    out = {}
    for ds, rs in by_ds.items():
        cols: dict[str, np.ndarray] = {"run_id": np.array([str(r["run_id"]) for r in rs])}
        for key, src in (("P", "P"), ("N", "step"), ("rank", "rank"), *((m, m) for m in METRICS)):
            cols[key] = np.array([math.nan if r[src] is None else float(r[src]) for r in rs])
        out[ds] = cols
    return out


def fit_study(
    rows: Iterable[Mapping[str, Any]],
    laws: Sequence[str] | None = None,
    min_step: int = 1,
    delta: float = 1e-3,
    n_boot: int = 50,
    seed: int = 0,
    skipped: dict[str, dict[str, str]] | None = None,
) -> dict[str, dict[str, FitResult]]:
    """Fit every applicable law to every dataset of a study.

    Args:
        rows: measurement rows (see :func:`rows_to_arrays`).
        laws: which laws (see :func:`law_specs`); None for all.
        min_step: drop steps below this (the paper dropped the first 50). Step 0
            is always dropped for laws in P and N, since N = 0 is outside them.
        delta: Huber threshold on log-residuals.
        n_boot: bootstrap replicates per fit (resampling runs).
        seed: bootstrap seed.
        skipped: if given, laws that cannot be fitted are recorded here as
            ``skipped[dataset][label] = reason`` and left out; otherwise the
            first such :class:`FitError` is raised, naming dataset and law.

    Returns:
        ``{dataset: {label: FitResult}}``.
    """
    specs = law_specs(laws)
    out: dict[str, dict[str, FitResult]] = {}
    for ds, cols in sorted(rows_to_arrays(rows).items()):
        out[ds] = {}
        for spec in specs:
            try:
                fit = _fit_spec(spec, cols, min_step, delta, n_boot, seed)
            except FitError as e:
                if skipped is None:
                    raise FitError(f"dataset {ds!r}, law {spec.label!r}: {e}") from e
                skipped.setdefault(ds, {})[spec.label] = str(e)
                continue
            out[ds][spec.label] = fit
    return out


def _fit_spec(spec: LawSpec, cols: Mapping[str, np.ndarray], min_step: int, delta: float,
              n_boot: int, seed: int) -> FitResult:
    keep = cols["N"] >= min_step
    if "N" in spec.inputs:
        keep &= cols["N"] > 0
    notes = []
    for c in (*spec.inputs, *spec.targets):
        bad = keep & ~np.isfinite(cols[c])
        if bad.any():
            notes.append(f"dropped {int(bad.sum())} point(s) without {c}")
        keep &= np.isfinite(cols[c])
    for t in spec.targets:
        bad = keep & (cols[t] <= 0)
        if bad.any():
            notes.append(f"dropped {int(bad.sum())} point(s) with {t} <= 0")
        keep &= cols[t] > 0
    if not keep.any():
        raise FitError(f"no usable points (steps >= {min_step}, finite, positive targets)")
    fit = fit_law(
        spec.law, {c: cols[c][keep] for c in spec.inputs}, {t: cols[t][keep] for t in spec.targets},
        groups=cols["run_id"][keep], inputs=spec.inputs, targets=spec.targets, delta=delta,
        n_boot=n_boot, seed=seed, holdout={"P": cols["P"][keep], "N": cols["N"][keep]},
        change={t: change_since_start(cols, t)[keep] for t in spec.targets},
    )
    return replace(fit, warnings=fit.warnings + tuple(notes), settings={**fit.settings, "min_step": min_step})


def change_since_start(cols: Mapping[str, np.ndarray], target: str) -> np.ndarray:
    """Each point's change of ``target`` since step 0 of its run (NaN where unknown).

    ``forget_kl`` is its own change (0 at step 0); ``forget_ce`` falls back to
    ``forget_kl`` for a run without a step-0 row; other metrics need one.
    """
    y = cols[target]
    if target == "forget_kl":
        return y.copy()
    start = {r: v for r, n, v in zip(cols["run_id"], cols["N"], y, strict=True) if n == 0 and np.isfinite(v)}
    y0 = np.array([start.get(r, np.nan) for r in cols["run_id"]])
    out = y - y0
    if target == "forget_ce":
        out = np.where(np.isfinite(out), out, cols["forget_kl"])
    return out


def heldout_errors(fit: FitResult | Mapping[str, Any], target: str) -> dict[str, float | None]:
    """The held-out error of change of each split (``P``, ``N``): a number, ``inf`` or None.

    ``inf``: the split predicted a non-finite value; None: it has no number (the
    refit was impossible, or the change since step 0 is unknown).
    """
    held = fit.heldout if isinstance(fit, FitResult) else fit["heldout"]
    out: dict[str, float | None] = {}
    for key in ("P", "N"):
        h = held.get(key) or {}
        v = (h.get("error_of_change") or {}).get(target)
        if target in (h.get("nonfinite") or []):
            out[key] = math.inf
        else:
            out[key] = float(v) if v is not None and math.isfinite(float(v)) else None
    return out


def heldout_error(fit: FitResult | Mapping[str, Any], target: str) -> float:
    """``heldout_error_of_change``: the larger of the two splits' errors, ``inf`` if either has none.

    A non-finite or missing split counts against the law (it is never skipped).
    """
    errs = heldout_errors(fit, target).values()
    return math.inf if any(e is None or not math.isfinite(e) for e in errs) else max(errs)  # type: ignore[type-var]


def reliability(fit: FitResult, target: str) -> tuple[bool, str]:
    """Whether ``fit`` is reliable for ``target`` under the rule in the module docstring, and why not."""
    parts = heldout_errors(fit, target)
    for key, what in (("P", "largest P"), ("N", "longest N")):
        e = parts[key]
        if e is None:
            why = (fit.heldout.get(key) or {}).get("error", "change since step 0 unknown")
            return False, f"no held-out error with the {what} left out ({why})"
        if not math.isfinite(e):
            return False, f"non-finite prediction with the {what} left out"
    err = max(parts.values())  # type: ignore[type-var]
    if err > RELIABLE_ERROR:
        return False, f"held-out error {err:.1%} of the change since step 0 exceeds {RELIABLE_ERROR:.0%}"
    if "optimiser did not converge" in fit.warnings:
        return False, "the optimiser did not converge"
    return True, f"held-out error {err:.1%} of the change since step 0"


def comparison_table(fits: Mapping[str, Mapping[str, FitResult]]) -> list[dict[str, Any]]:
    """One row per dataset, law and target, the smallest held-out error first within a target.

    Args:
        fits: the output of :func:`fit_study`.

    Returns:
        Dicts with dataset, law, target, r2, rmse, ``heldout_error_of_change``
        (the larger of the two splits; None when either has no finite number)
        with its parts ``heldout_P_error_of_change`` and ``heldout_N_error_of_change``,
        the splits' RMSE and mean relative error, ``reliable`` and ``reliability``
        (the rule and the reason), ``fit_warnings``, the prediction interval's
        cross-validated ``coverage`` and n_points; sorted by dataset, target,
        then held-out error (missing last).
    """
    table = []
    for ds, by_label in fits.items():
        for label, fit in by_label.items():
            for t in fit.targets:
                row: dict[str, Any] = {"dataset": ds, "law": label, "target": t,
                                       "r2": fit.r2[t], "rmse": fit.rmse[t]}
                err = heldout_error(fit, t)
                row["heldout_error_of_change"] = err if math.isfinite(err) else None
                for key, e in heldout_errors(fit, t).items():
                    row[f"heldout_{key}_error_of_change"] = e if e is not None and math.isfinite(e) else None
                for key in ("P", "N"):
                    h = fit.heldout.get(key, {})
                    row[f"heldout_{key}_rmse"] = h.get("rmse", {}).get(t)
                    row[f"heldout_{key}_mre"] = h.get("mre", {}).get(t)
                row["reliable"], row["reliability"] = reliability(fit, t)
                row["fit_warnings"] = list(fit.warnings)
                row["coverage"] = (fit.calibration.get("coverage") or {}).get(t)
                row["n_points"] = fit.n_points
                table.append(row)
    return sorted(table, key=lambda r: (r["dataset"], r["target"], r["heldout_error_of_change"] is None,
                                        r["heldout_error_of_change"] or 0.0, r["law"]))


# ---------------------------------------------------------------------------- predict

def _as_fits(fits: Mapping[str, FitResult | Mapping[str, Any]]) -> dict[str, FitResult]:
    return {k: v if isinstance(v, FitResult) else FitResult.from_dict(v) for k, v in fits.items()}


def _candidates(fits: Mapping[str, FitResult], targets: Sequence[str]) -> list[tuple[str, str]]:
    return [(k, t) for k, f in fits.items() if f.inputs == ("P", "N") for t in targets if t in f.targets]


def choose_law(fits: Mapping[str, FitResult], target: str, law: str | None = None,
               reliable_only: bool = True) -> str | None:
    """The label of the reliable (P, N) law with the smallest held-out error for ``target``.

    Args:
        law: force this label (it must model ``target`` from P and N; reliable or not).
        reliable_only: False to fall back to unreliable laws (for drawing, never predicting).

    Returns:
        A label, or None when no law qualifies.
    """
    cands = {k: fits[k] for k, _ in _candidates(fits, [target])}
    if law is not None:
        if law not in cands:
            raise ValueError(f"{law!r} is not a fitted (P, N) law for {target}; have {sorted(cands)}")
        return law
    ok = {k: f for k, f in cands.items() if reliability(f, target)[0] or not reliable_only}
    if not ok:
        return None
    return min(ok, key=lambda k: (not reliability(ok[k], target)[0], heldout_error(ok[k], target), k))


def _choose_forgetting(fits: Mapping[str, FitResult], law: str | None = None) -> tuple[str, str] | None:
    """(label, target) of the forgetting law: forget_ce and forget_kl laws compete on the same error."""
    if law is not None:
        label, _, t = law.partition("@")
        targets = [t] if t else [x for x in FORGETTING if x in fits[label].targets] if label in fits else []
        if not targets or (label, targets[0]) not in _candidates(fits, targets):
            raise ValueError(f"{law!r} is not a fitted (P, N) forgetting law; have "
                             f"{sorted(k for k, _ in _candidates(fits, FORGETTING))}")
        return label, targets[0]
    ok = [(k, t) for k, t in _candidates(fits, FORGETTING) if reliability(fits[k], t)[0]]
    return min(ok, key=lambda kt: (heldout_error(fits[kt[0]], kt[1]), kt[0], kt[1])) if ok else None


def _no_law(fits: Mapping[str, FitResult], targets: Sequence[str]) -> str:
    cands = _candidates(fits, targets)
    if not cands:
        return f"no reliable law: no fitted (P, N) law models {' or '.join(targets)}"
    why = "; ".join(f"{k}: {reliability(fits[k], t)[1]}" for k, t in cands)
    return f"no reliable law (held-out error of change <= {RELIABLE_ERROR:.0%} on both splits): {why}"


def _predict_arrays(fits: Mapping[str, FitResult], p: np.ndarray, n: np.ndarray, laws: Mapping[str, str],
                    base_entropy: float | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def entry(label: str, target: str) -> dict[str, Any]:
        fit = fits[label]
        mean, lo, hi = fit.predict({"P": p, "N": n})
        i = fit.targets.index(target)
        (p_lo, p_hi), (n_lo, n_hi) = fit.domain["P"], fit.domain["N"]
        ok, why = reliability(fit, target)
        err = heldout_error(fit, target)
        return {
            "value": mean[i], "lo": lo[i], "hi": hi[i], "law": label, "fitted_target": target,
            "reliable": ok, "reliability": why, "heldout_error_of_change": err if math.isfinite(err) else None,
            "interval": "95% prediction interval for a new run",
            "coverage": (fit.calibration.get("coverage") or {}).get(target),
            "extrapolated": (p < p_lo) | (p > p_hi) | (n < n_lo) | (n > n_hi),
        }

    def missing(reason: str) -> dict[str, Any]:
        return {"value": None, "lo": None, "hi": None, "law": None, "reliable": False, "extrapolated": None,
                "reason": reason}

    label = choose_law(fits, "ft_loss", laws.get("ft_loss"))
    out["ft_loss"] = entry(label, "ft_loss") if label else missing(_no_law(fits, ["ft_loss"]))
    forced = laws.get("forget_ce") or laws.get("forget_kl")
    if forced and "@" not in forced:
        forced += "@" + ("forget_ce" if laws.get("forget_ce") else "forget_kl")
    chosen = _choose_forgetting(fits, forced)
    if chosen is None:
        for t in FORGETTING:
            out[t] = missing(_no_law(fits, FORGETTING))
        return out
    label, fitted = chosen
    out[fitted] = entry(label, fitted)
    other = "forget_kl" if fitted == "forget_ce" else "forget_ce"
    if base_entropy is None or not math.isfinite(base_entropy):
        out[other] = missing(f"derived from {fitted} through the base entropy, which is unknown")
    else:
        shift = -base_entropy if other == "forget_kl" else base_entropy
        out[other] = {**out[fitted], **{k: out[fitted][k] + shift for k in ("value", "lo", "hi")},
                      "derived_from": f"{fitted} {'-' if shift < 0 else '+'} base_entropy ({base_entropy:.6g})"}
    return out


def predict(
    fits: Mapping[str, FitResult | Mapping[str, Any]],
    P: float | Sequence[float] | np.ndarray,
    N: float | Sequence[float] | np.ndarray,
    laws: Mapping[str, str] | None = None,
    base_entropy: float | None = None,
) -> dict[str, Any]:
    """Predict fine-tuning loss and forgetting at new (P, N) with 95% prediction intervals.

    Args:
        fits: one dataset's fits (``fit_study(...)[dataset]``, or their ``to_dict()``).
        P: trainable parameters (scalar or array).
        N: update steps (scalar or array, broadcast against ``P``).
        laws: force the law per quantity, e.g. ``{"forget_ce": "additive:forget_ce"}``
            (forced laws are used even when unreliable, and say so).
        base_entropy: the forgetting corpus' base entropy, to derive ``forget_ce``
            from ``forget_kl`` or the reverse (None: only the fitted one).

    Returns:
        ``{"P", "N", "ft_loss", "forget_ce", "forget_kl"}``, each quantity with
        value, lo, hi (the calibrated prediction interval), the law, its
        held-out error of change and reliability, the interval's cross-validated
        coverage, and whether the point lies outside the fitted data; or, with
        no reliable law, ``value: None`` and a ``reason``. Scalars in, floats
        out; arrays in, lists out (JSON-ready).
    """
    scalar = np.ndim(P) == 0 and np.ndim(N) == 0
    Pa, Na = np.broadcast_arrays(np.atleast_1d(np.asarray(P, float)), np.atleast_1d(np.asarray(N, float)))
    if np.any(~(Pa > 0)) or np.any(~(Na > 0)):
        raise ValueError("P and N must be positive")
    res = _predict_arrays(_as_fits(fits), Pa, Na, dict(laws or {}), base_entropy)

    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            vals = [(None if isinstance(e, float) and not math.isfinite(e) else e) for e in v.tolist()]
            return vals[0] if scalar else vals
        return v

    out: dict[str, Any] = {"P": conv(Pa), "N": conv(Na)}
    for target, d in res.items():
        out[target] = {k: conv(v) for k, v in d.items()}
    return out


# ---------------------------------------------------------------------------- plan

def plan(
    fits: Mapping[str, FitResult | Mapping[str, Any]],
    max_forgetting: float,
    P_per_rank: float,
    ranks: Sequence[int] = DEFAULT_RANKS,
    steps: Sequence[int] | None = None,
    bound: Literal["upper", "mean"] = "upper",
    metric: Literal["forget_ce", "forget_kl"] = "forget_ce",
    laws: Mapping[str, str] | None = None,
    base_entropy: float | None = None,
) -> dict[str, Any]:
    """The (rank, steps) that learns most within a forgetting budget.

    Every candidate on the ``ranks x steps`` grid is predicted with the reliable
    laws :func:`predict` uses; it is within
    budget when its forgetting — the upper end of the 95% prediction interval by default
    (``bound="upper"``: conservative, the budget holds unless the law is wrong),
    or the point prediction (``bound="mean"``) — is at most ``max_forgetting``.
    Among those, the lowest predicted ``ft_loss`` wins (ties: fewer parameters,
    then fewer steps).

    Args:
        fits: one dataset's fits (``fit_study(...)[dataset]`` or their dicts).
        max_forgetting: budget on ``metric`` (nats).
        P_per_rank: trainable parameters per unit of LoRA rank (P = rank * this).
        ranks: candidate ranks.
        steps: candidate step counts; default 24 log-spaced integers over the
            fitted N range (no extrapolation in N).
        bound: which forgetting estimate must stay within budget.
        metric: ``forget_ce`` (headline) or ``forget_kl``.
        laws: force the law per quantity (see :func:`predict`).
        base_entropy: to derive ``metric`` from a law on the other forgetting quantity.

    Returns:
        ``{"rank", "steps", "P", "ft_loss", metric, "bound", "max_forgetting",
        "laws", "extrapolated", "tradeoff"}``: the choice, its predictions
        (value, lo, hi), the laws used, and per rank the largest steps within
        budget with its predictions (None where no steps fit). With no reliable
        law: rank/steps None and a ``reason`` (not an error: the data decide).

    Raises:
        PlanError: no candidate within budget (the message gives the least
            forgetting on the grid), or the chosen law has no interval for ``bound="upper"``.

    Example:
        >>> import numpy as np
        >>> from forgetscale.laws.fit import fit_law
        >>> P, N = np.repeat([1e5, 4e5, 1.6e6, 6.4e6], 6), np.tile([5., 10., 20., 40., 80., 160.], 4)
        >>> ft = 1.0 + 30 * P ** -0.3 + 2 * N ** -0.4
        >>> fg = 2.5 - 20 * P ** -0.3 - 1.5 * N ** -0.4
        >>> change = {"ft_loss": 3.5 - ft, "forget_ce": fg - 1.2}  # since step 0: ft_loss 3.5, forget_ce 1.2
        >>> fits = {f"additive:{t}": fit_law("additive", {"P": P, "N": N}, {t: y}, inputs=("P", "N"),
        ...     targets=(t,), n_boot=0, groups=np.repeat([0, 1, 2, 3], 6), change={t: change[t]})
        ...     for t, y in (("ft_loss", ft), ("forget_ce", fg))}
        >>> best = plan(fits, 2.0, 1e5, ranks=[1, 4, 16], bound="mean")
        >>> bool(best["forget_ce"]["value"] <= 2.0), best["rank"] in (1, 4, 16), best["laws"]["forget_ce"]
        (True, True, 'additive:forget_ce')
    """
    if bound not in ("upper", "mean"):
        raise ValueError(f"bound must be 'upper' or 'mean', not {bound!r}")
    if not P_per_rank > 0:
        raise ValueError("P_per_rank must be positive")
    fr = _as_fits(fits)
    laws = dict(laws or {})
    probe = _predict_arrays(fr, np.array([P_per_rank]), np.array([1.0]), laws, base_entropy)
    chosen = {t: probe[t]["law"] for t in ("ft_loss", metric)}
    if any(lab is None for lab in chosen.values()):
        reasons = "; ".join(f"{t}: {probe[t].get('reason')}" for t, lab in chosen.items() if lab is None)
        return {"rank": None, "steps": None, "P": None, "ft_loss": None, metric: None, "bound": bound,
                "metric": metric, "max_forgetting": float(max_forgetting), "laws": chosen, "tradeoff": [],
                "reason": reasons}
    if steps is None:
        lo = max(fr[lab].domain["N"][0] for lab in chosen.values())
        hi = min(fr[lab].domain["N"][1] for lab in chosen.values())
        steps = np.unique(np.round(np.geomspace(max(lo, 1.0), max(hi, lo, 1.0), 24)))
    r_arr = np.asarray(ranks, dtype=float)
    s_arr = np.asarray(steps, dtype=float)
    if r_arr.size == 0 or s_arr.size == 0 or np.any(r_arr <= 0) or np.any(s_arr <= 0):
        raise ValueError("ranks and steps must be non-empty and positive")
    R, S = np.meshgrid(r_arr, s_arr, indexing="ij")
    pred = _predict_arrays(fr, (R * P_per_rank).ravel(), S.ravel(), laws, base_entropy)
    loss = pred["ft_loss"]["value"].reshape(R.shape)
    forget = pred[metric]
    crit = (forget["hi"] if bound == "upper" else forget["value"]).reshape(R.shape)
    if bound == "upper" and np.all(np.isnan(crit)):
        raise PlanError(f"{chosen[metric]} has no calibrated prediction interval: plan with bound='mean'")
    ok = (crit <= max_forgetting) & np.isfinite(loss)
    if not ok.any():
        k = np.unravel_index(np.nanargmin(crit), crit.shape)
        raise PlanError(
            f"no (rank, steps) keeps {metric} ({bound} bound) within {max_forgetting:g}: the least "
            f"on the grid is {crit[k]:.4g} at rank {R[k]:g}, {S[k]:g} steps; raise the budget or "
            "try smaller ranks or fewer steps"
        )
    flat = [(loss[i, j], R[i, j], S[i, j], i, j) for i, j in zip(*np.nonzero(ok), strict=True)]
    _, _, _, bi, bj = min(flat)

    def at(i: int, j: int) -> dict[str, Any]:
        k = i * S.shape[1] + j
        entry = {"rank": _int(R[i, j]), "P": float(R[i, j] * P_per_rank), "steps": _int(S[i, j])}
        for t in ("ft_loss", metric):
            entry[t] = {f: _num(pred[t][f][k]) for f in ("value", "lo", "hi")}
        entry["extrapolated"] = bool(pred["ft_loss"]["extrapolated"][k] | forget["extrapolated"][k])
        entry["laws"] = {t: pred[t]["law"] for t in ("ft_loss", metric)}
        return entry

    tradeoff = []
    for i in range(R.shape[0]):
        js = np.flatnonzero(ok[i])
        tradeoff.append(at(i, int(js.max())) if js.size else
                        {"rank": _int(R[i, 0]), "P": float(R[i, 0] * P_per_rank), "steps": None})
    return {**at(bi, bj), "bound": bound, "metric": metric, "max_forgetting": float(max_forgetting),
            "laws": {t: lab for t, lab in chosen.items()}, "tradeoff": tradeoff}


def _num(v: Any) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def _int(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)
