"""Predictions and plans from reliable laws, each number with its prediction interval for a new run.

Predictions use reliable laws only (``select.reliability``), the smallest
held-out error first. Forgetting is predicted once: the best reliable law on
``forget_ce`` or ``forget_kl`` (their errors are both relative to
``forget_kl``, so they compare), and the other quantity is derived through the
base entropy (``forget_ce = base_entropy + forget_kl``). Intervals are the
prediction intervals for a new run of ``intervals.py``, on the scale where the
quantity lives (KL is never negative), growing beyond the studied P and N.

Law choice. When another reliable law's held-out error is within the winner's
noise floor of the winner's, the data cannot choose between them: the interval
is widened to cover that law's prediction too, and says so (``widened_for``).
With no reliable law a quantity is ``None`` with a ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from forgetscale.laws.fit import FitResult
from forgetscale.laws.intervals import LEVEL, distance
from forgetscale.laws.select import (
    as_fits,
    candidates,
    choose_forgetting,
    choose_law,
    heldout_error,
    no_law_reason,
    reliability,
)

FORGETTING = ("forget_ce", "forget_kl")
DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
INTERVAL = f"{LEVEL:.0%} prediction interval for a new run"


class PlanError(ValueError):
    """No (rank, steps) candidate meets the forgetting budget, or the fits cannot plan."""


def _shift(target: str, fitted: str, base_entropy: float | None) -> float | None:
    """What to add to a ``fitted`` value to get ``target`` (forget_ce = H + forget_kl)."""
    if target == fitted:
        return 0.0
    if base_entropy is None or not math.isfinite(base_entropy):
        return None
    return base_entropy if target == "forget_ce" else -base_entropy


def _entry(fits: Mapping[str, FitResult], label: str, target: str, p: np.ndarray, n: np.ndarray,
           base_entropy: float | None) -> dict[str, Any]:
    fit = fits[label]
    mean, lo, hi = fit.predict({"P": p, "N": n})
    i = fit.targets.index(target)
    rel = reliability(fit, target)
    err = heldout_error(fit, target)
    cal = fit.calibration
    d = distance(np.array([p, n]), ("P", "N"), fit.domain)
    entry = {
        "value": mean[i], "lo": lo[i], "hi": hi[i], "law": label, "fitted_target": target,
        "state": rel.state, "reliable": bool(rel), "reliability": rel.reason,
        "heldout_error_of_change": err if math.isfinite(err) else None, "noise_floor": rel.noise_floor,
        "limit": rel.limit, "interval": INTERVAL, "level": cal.get("level", LEVEL),
        "coverage": (cal.get("coverage") or {}).get(target),
        "supported_level": (cal.get("supported_level") or {}).get(target),
        "units": cal.get("units", fit.n_groups), "conditional_on": cal.get("conditional_on"),
        "coverage_check": cal.get("coverage_check"),
        "run_variance": ((cal.get("run_variance") or {}).get(target) or {}).get("model"),
        "extrapolated": np.sqrt((d**2).sum(0)) > 0, "distance": np.sqrt((d**2).sum(0)),
        "widened_for": [],
    }
    # law choice: reliable rivals within the winner's noise floor of its error widen the interval
    floor = rel.noise_floor or 0.0
    family = FORGETTING if target in FORGETTING else (target,)
    for k, t in candidates(fits, family):
        if (k, t) == (label, target):
            continue
        shift = _shift(target, t, base_entropy)
        if shift is None or not reliability(fits[k], t) or heldout_error(fits[k], t) > err + floor:
            continue
        other = fits[k].predict({"P": p, "N": n})[0][fits[k].targets.index(t)] + shift
        entry["lo"], entry["hi"] = np.fmin(entry["lo"], other), np.fmax(entry["hi"], other)
        entry["widened_for"].append(f"{k}@{t}" if t != target else k)
    entry["law_choice"] = (f"widened to cover {', '.join(entry['widened_for'])}, as good within the noise"
                           if entry["widened_for"] else "no other reliable law within the noise of this one")
    return entry


def _missing(reason: str) -> dict[str, Any]:
    return {"value": None, "lo": None, "hi": None, "law": None, "state": None, "reliable": False,
            "extrapolated": None, "reason": reason}


def _predict_arrays(fits: Mapping[str, FitResult], p: np.ndarray, n: np.ndarray, laws: Mapping[str, str],
                    base_entropy: float | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    label = choose_law(fits, "ft_loss", laws.get("ft_loss"))
    out["ft_loss"] = (_entry(fits, label, "ft_loss", p, n, base_entropy) if label
                      else _missing(no_law_reason(fits, ["ft_loss"])))  # fmt: skip
    forced = laws.get("forget_ce") or laws.get("forget_kl")
    if forced and "@" not in forced:
        forced += "@" + ("forget_ce" if laws.get("forget_ce") else "forget_kl")
    chosen = choose_forgetting(fits, forced)
    if chosen is None:
        for t in FORGETTING:
            out[t] = _missing(no_law_reason(fits, FORGETTING))
        return out
    label, fitted = chosen
    out[fitted] = _entry(fits, label, fitted, p, n, base_entropy)
    other = "forget_kl" if fitted == "forget_ce" else "forget_ce"
    shift = _shift(other, fitted, base_entropy)
    if shift is None:
        out[other] = _missing(f"derived from {fitted} through the base entropy, which is unknown")
    else:
        out[other] = {**out[fitted], **{k: out[fitted][k] + shift for k in ("value", "lo", "hi")},
                      "derived_from": f"{fitted} {'-' if shift < 0 else '+'} base_entropy ({base_entropy:.6g})"}
    if "forget_kl" in out and out["forget_kl"].get("value") is not None:  # KL >= 0 whatever the law says
        for k in ("lo", "hi"):
            out["forget_kl"][k] = np.fmax(out["forget_kl"][k], 0.0)
    return out


def predict(
    fits: Mapping[str, FitResult | Mapping[str, Any]],
    P: float | Sequence[float] | np.ndarray,
    N: float | Sequence[float] | np.ndarray,
    laws: Mapping[str, str] | None = None,
    base_entropy: float | None = None,
) -> dict[str, Any]:
    """Predict fine-tuning loss and forgetting at new (P, N) with prediction intervals for a new run.

    Args:
        fits: one dataset's fits (``fit_study(...)[dataset]``, or their ``to_dict()``).
        P: trainable parameters (scalar or array).
        N: update steps (scalar or array, broadcast against ``P``).
        laws: force the law per quantity, e.g. ``{"forget_ce": "additive:forget_ce"}``
            (forced laws are used even when not reliable, and say so).
        base_entropy: the forgetting corpus' base entropy, to derive ``forget_ce``
            from ``forget_kl`` or the reverse (None: only the fitted one).

    Returns:
        ``{"P", "N", "ft_loss", "forget_ce", "forget_kl", "line_gap"}``. Each quantity has value, lo,
        hi, ``interval`` (what it is), ``level``, ``coverage`` (the share of an end rank's points inside
        the interval rebuilt without that rank; ``coverage_check`` says how), ``supported_level``
        (``G/(G+1)``), ``units`` (runs), ``conditional_on`` (the shared corpus, held-out examples and
        data orders), ``run_variance`` (how run-to-run variance at the new P was had), the law, its
        ``state``/``reliable``/``reliability``, held-out error, ``noise_floor`` and ``limit``,
        ``extrapolated`` and ``distance`` (log units beyond the data), ``widened_for`` and
        ``law_choice``; or, with no reliable law, ``value: None`` and a ``reason``. ``line_gap``:
        predicted forget_ce minus the ``linear`` law's at the predicted ft_loss (None without
        them). Scalars in, floats out; arrays in, lists out (JSON-ready).
    """
    scalar = np.ndim(P) == 0 and np.ndim(N) == 0
    Pa, Na = np.broadcast_arrays(np.atleast_1d(np.asarray(P, float)), np.atleast_1d(np.asarray(N, float)))
    if np.any(~(Pa > 0)) or np.any(~(Na > 0)):
        raise ValueError("P and N must be positive")
    fr = as_fits(fits)
    res = _predict_arrays(fr, Pa, Na, dict(laws or {}), base_entropy)
    gap = None
    if "linear" in fr and res["ft_loss"].get("value") is not None and res["forget_ce"].get("value") is not None:
        lin = fr["linear"].params
        gap = res["forget_ce"]["value"] - (lin["s_fft"] - lin["c_fft"] * res["ft_loss"]["value"])

    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            vals = [(None if isinstance(e, float) and not math.isfinite(e) else e) for e in v.tolist()]
            return vals[0] if scalar else vals
        return v

    out: dict[str, Any] = {"P": conv(Pa), "N": conv(Na)}
    for target, d in res.items():
        out[target] = {k: conv(v) for k, v in d.items()}
    out["line_gap"] = conv(gap) if gap is not None else None
    return out


def plan(
    fits: Mapping[str, FitResult | Mapping[str, Any]],
    max_forgetting: float,
    P_per_rank: float,
    ranks: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    bound: Literal["upper", "mean"] = "upper",
    metric: Literal["forget_ce", "forget_kl"] = "forget_ce",
    laws: Mapping[str, str] | None = None,
    base_entropy: float | None = None,
    extrapolate: bool = False,
) -> dict[str, Any]:
    """The (rank, steps) that learns most within a forgetting budget.

    Every candidate on the ``ranks x steps`` grid is predicted with the reliable
    laws :func:`predict` uses; it is within budget when its forgetting — the upper
    end of the prediction interval by default (``bound="upper"``: the budget holds
    for a new run unless the law is wrong), or the point prediction
    (``bound="mean"``) — is at most ``max_forgetting``. Only candidates inside the
    studied P and N are chosen unless ``extrapolate``. Among those, the lowest
    predicted ``ft_loss`` wins (ties: fewer parameters, then fewer steps).

    Args:
        fits: one dataset's fits (``fit_study(...)[dataset]`` or their dicts).
        max_forgetting: budget on ``metric`` (nats).
        P_per_rank: trainable parameters per unit of LoRA rank (P = rank * this).
        ranks: candidate ranks; default :data:`DEFAULT_RANKS` and the studied extremes.
        steps: candidate step counts; default 24 log-spaced integers over the
            fitted N range.
        bound: which forgetting estimate must stay within budget.
        metric: ``forget_ce`` (headline) or ``forget_kl``.
        laws: force the law per quantity (see :func:`predict`).
        base_entropy: to derive ``metric`` from a law on the other forgetting quantity.
        extrapolate: allow candidates beyond the studied P and N (flagged ``extrapolated``).

    Returns:
        ``{"rank", "steps", "P", "ft_loss", metric, "bound", "max_forgetting", "laws",
        "extrapolated", "extrapolate", "intervals", "tradeoff"}``: the choice, its predictions
        (value, lo, hi), the laws used, what the intervals are (``intervals[quantity]``: interval,
        level, coverage, units, state), and per rank the largest steps within budget with
        its predictions (None where no steps fit). With no reliable law: rank/steps None and a
        ``reason`` (not an error: the data decide).

    Raises:
        PlanError: no candidate within budget (the message gives the least
            forgetting on the grid), or the chosen law has no interval for ``bound="upper"``.

    Example:
        >>> from forgetscale.laws.rows import fit_study
        >>> rows = [{"run_id": f"r{r}", "dataset": "d", "rank": r, "P": r * 1e5, "step": s,
        ...          "ft_loss": 3.5 if s == 0 else 1 + 30 * (r * 1e5) ** -0.3 + 2 * s ** -0.4,
        ...          "forget_ce": 1.2 if s == 0 else 2.5 - 20 * (r * 1e5) ** -0.3 - 1.5 * s ** -0.4,
        ...          "forget_kl": 0.0 if s == 0 else 1.3 - 20 * (r * 1e5) ** -0.3 - 1.5 * s ** -0.4,
        ...          "base_entropy": 1.2, "forget_top1_ce": None, "data_loss": None}
        ...         for r in (1, 4, 16, 64) for s in (0, 5, 10, 20, 40, 80, 160)]
        >>> fits = fit_study(rows, laws=["additive"], n_boot=0)["d"]
        >>> best = plan(fits, 2.0, 1e5, bound="mean")
        >>> bool(best["forget_ce"]["value"] <= 2.0), best["rank"] in (1, 2, 4, 8, 16, 32, 64), best["extrapolated"]
        (True, True, False)
    """
    if bound not in ("upper", "mean"):
        raise ValueError(f"bound must be 'upper' or 'mean', not {bound!r}")
    if not P_per_rank > 0:
        raise ValueError("P_per_rank must be positive")
    fr = as_fits(fits)
    laws = dict(laws or {})
    probe = _predict_arrays(fr, np.array([P_per_rank]), np.array([1.0]), laws, base_entropy)
    chosen = {t: probe[t]["law"] for t in ("ft_loss", metric)}
    if any(lab is None for lab in chosen.values()):
        reasons = "; ".join(f"{t}: {probe[t].get('reason')}" for t, lab in chosen.items() if lab is None)
        return {"rank": None, "steps": None, "P": None, "ft_loss": None, metric: None, "bound": bound,
                "metric": metric, "max_forgetting": float(max_forgetting), "laws": chosen, "tradeoff": [],
                "extrapolate": extrapolate, "reason": reasons}
    if steps is None:
        lo = max(fr[lab].domain["N"][0] for lab in chosen.values())
        hi = min(fr[lab].domain["N"][1] for lab in chosen.values())
        steps = np.unique(np.round(np.geomspace(max(lo, 1.0), max(hi, lo, 1.0), 24)))
    if ranks is None:
        p_lo = max(fr[lab].domain["P"][0] for lab in chosen.values()) / P_per_rank
        p_hi = min(fr[lab].domain["P"][1] for lab in chosen.values()) / P_per_rank
        ranks = sorted({*DEFAULT_RANKS, *(round(v, 6) for v in (p_lo, p_hi) if v > 0)})
        if not extrapolate:
            ranks = [r for r in ranks if p_lo * (1 - 1e-9) <= r <= p_hi * (1 + 1e-9)]
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
        raise PlanError(f"{chosen[metric]} has no prediction interval: plan with bound='mean'")
    outside = (pred["ft_loss"]["extrapolated"] | forget["extrapolated"]).reshape(R.shape)
    ok = (crit <= max_forgetting) & np.isfinite(loss) & (extrapolate | ~outside)
    if not ok.any():
        k = np.unravel_index(np.nanargmin(np.where(extrapolate | ~outside, crit, np.nan)), crit.shape)
        more = "" if extrapolate else " within the studied ranks and steps (--extrapolate to look beyond)"
        raise PlanError(
            f"no (rank, steps) keeps {metric} ({bound} bound) within {max_forgetting:g}{more}: the least "
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
        entry["extrapolated"] = bool(outside[i, j])
        entry["laws"] = {t: pred[t]["law"] for t in ("ft_loss", metric)}
        return entry

    tradeoff = []
    for i in range(R.shape[0]):
        js = np.flatnonzero(ok[i])
        tradeoff.append(at(i, int(js.max())) if js.size else
                        {"rank": _int(R[i, 0]), "P": float(R[i, 0] * P_per_rank), "steps": None})
    about = {t: {k: pred[t].get(k) for k in ("interval", "level", "coverage", "coverage_check", "supported_level",
                                             "units", "conditional_on", "run_variance", "state", "reliability",
                                             "law_choice")}
             for t in ("ft_loss", metric)}  # fmt: skip
    return {**at(bi, bj), "bound": bound, "metric": metric, "max_forgetting": float(max_forgetting),
            "laws": {t: lab for t, lab in chosen.items()}, "extrapolate": extrapolate, "intervals": about,
            "tradeoff": tradeoff}


def _num(v: Any) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def _int(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)
