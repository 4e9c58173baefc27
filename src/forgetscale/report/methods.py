"""How the report's intervals were made, in words read from the fits' own records.

A stored fit says how its parameter intervals were made (``inference``: method,
level, runs, (data order, step) cells, what they are conditional on) and how its
prediction intervals were made (``calibration``: method, level, runs). The report
quotes those records instead of describing the method itself, so its wording
follows the fitting code whenever that changes; a fit stored without a record is
named as such, never given a method it may not have used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["band_text", "interval_methods"]

Fits = Mapping[str, Mapping[str, Mapping[str, Any]]]
RECORDS = (("inference", "Parameter intervals"), ("calibration", "Prediction intervals (and the figures' bands)"))
"""``(record key, what its intervals are)``, in the order the report states them."""


def interval_methods(fits: Fits) -> list[str]:
    """One sentence per record kind and method: how the stored fits' intervals were made.

    Args:
        fits: ``{dataset: {law label: fit dict}}`` as stored (``FitResult.to_dict``).

    Returns:
        Sentences, parameter intervals first; empty without fits.

    Example:
        >>> rec = {"method": "t interval on a jackknife variance", "level": 0.95, "units": 4, "n_cells": 6,
        ...        "conditional_on": "one data order"}
        >>> interval_methods({"news": {"linear": {"inference": rec}}})[0]
        'Parameter intervals: 95% t interval on a jackknife variance; over 4 runs and 6 (data order, step) cells, ...'
    """
    out = []
    for key, what in RECORDS:
        groups: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
        for ds, by_label in fits.items():
            for label, fit in by_label.items():
                rec = fit.get(key) or {}
                groups.setdefault(_method(rec), []).append((ds, label, rec))
        several = len(groups) > 1
        for method, members in groups.items():
            who = f" of {', '.join(f'{ds} · {label}' for ds, label, _ in members)}" if several else ""
            if not method:
                out.append(f"{what}{who}: the fit records no method (stored before it did); refit the study to "
                           "have it stated here.")
                continue
            scopes = {ds: _scope(rec) for ds, _, rec in members}
            if len(set(scopes.values())) == 1:
                scope = next(iter(scopes.values()))
            else:
                scope = "; ".join(f"{ds}: {s}" for ds, s in scopes.items() if s)
            out.append(f"{what}{who}: {method}" + (f"; {scope}" if scope else "") + ".")
    return out


def band_text(fits: Fits) -> str:
    """What the figures' shaded bands are: the name of the stored fits' prediction-interval method.

    The name is the method's text before its first colon (the formula after it is in the report's
    header). Fits that record none give "interval (method not recorded with the fit)".

    Example:
        >>> band_text({"news": {"paper": {"calibration": {"method": "95% prediction interval: t x sd"}}}})
        '95% prediction interval'
    """
    names = []
    for by_label in fits.values():
        for fit in by_label.values():
            name = _method(fit.get("calibration") or {}).split(":")[0].strip()
            name = name or "interval (method not recorded with the fit)"
            if name not in names:
                names.append(name)
    return " or ".join(names) if names else "interval"


def _method(rec: Mapping[str, Any]) -> str:
    """The record's method with its level in front (unless the method already starts with it)."""
    method = str(rec.get("method") or "").strip()
    if not method:
        return ""
    level = rec.get("level")
    if isinstance(level, (int, float)) and not method.startswith(f"{level:.0%}"):
        method = f"{level:.0%} {method}"
    return method


def _scope(rec: Mapping[str, Any]) -> str:
    """Over how many runs and cells, conditional on what: as the record says."""
    units = [f"{rec['units']} runs"] if rec.get("units") is not None else []
    if rec.get("n_cells") is not None:
        units.append(f"{rec['n_cells']} (data order, step) cells")
    scope = f"over {' and '.join(units)}" if units else ""
    if rec.get("conditional_on"):
        scope += (", " if scope else "") + f"conditional on {rec['conditional_on']}"
    return scope
