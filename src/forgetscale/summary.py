"""A study's fits and findings as lines of text, for the terminal and the report.

Numbers go through :mod:`forgetscale.console`'s one formatter (:func:`~forgetscale.console.fmt`,
:func:`~forgetscale.console.format_interval`), so the CLI and the report print them alike. This module
sits above the laws (it states their reliability limit); ``console`` stays light for ``--help``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgetscale.console import fmt, format_interval
from forgetscale.laws.select import RELIABLE_ERROR

RELIABILITY_LEGEND = (
    f"reliable: the one-sided 95% upper bound of the held-out error of change is <= {RELIABLE_ERROR:.0%} of the "
    "change since step 0 on both splits (a law biased by the limit passes at most 5% of the time); unreliable: a "
    "split's 97.5% lower bound exceeds it, or a refit failed; undecided: the bounds straddle it (such a law still "
    "predicts, and says so). Bounds from the run, step and point variation the fit itself estimates"
)
"""What the three reliability states of ``forgetscale fit``'s comparison table mean."""


def pct(v: Any) -> str:
    """A fraction as a percentage to one decimal, ``-`` when unknown.

    >>> pct(0.1234), pct(None)
    ('12.3%', '-')
    """
    return "-" if v is None else f"{v:.1%}"


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """What ``forgetscale run`` ends with: each dataset's headline laws and findings, one line each.

    Args:
        result: what :func:`forgetscale.results.fit` returns (and writes to ``fits.json``).

    >>> summary_lines({"fits": {}, "skipped": {"news": {"*": "only mitigated runs"}}})
    ['dataset news: no laws fitted: only mitigated runs']
    """
    lines = [f"dataset {ds}: no laws fitted: {why['*']}" for ds, why in sorted((result.get("skipped") or {}).items())
             if "*" in why]  # fmt: skip
    for ds in sorted(result.get("fits") or {}):
        lines.append(f"dataset {ds}:")
        linear = result["fits"][ds].get("linear") or {}
        if linear.get("params"):
            c, s = linear["params"]["c_fft"], linear["params"]["s_fft"]
            r2 = (linear.get("r2") or {}).get("forget_ce")
            lines.append(f"  linear law: forget_ce = -{fmt(c['value'])} * ft_loss + {fmt(s['value'])}  "
                         f"(c_fft 95% [{fmt(c['lo'])}, {fmt(c['hi'])}], R2 {fmt(r2)})")
        for target in ("ft_loss", "forget_ce", "forget_kl"):
            rows = [r for r in result.get("comparison") or [] if r["dataset"] == ds and r["target"] == target]
            best = next((r for r in rows if r["reliable"]), None)
            if best:
                err, upper = pct(best["heldout_error_of_change"]), pct(best.get("error_upper"))
                lines.append(f"  {target}: {best['law']} reliable (held-out error {err} of the change since step 0, "
                             f"95% upper bound {upper})")
            elif rows:
                lines.append(f"  {target}: no reliable law (best: {rows[0]['law']}, {rows[0].get('state')}: "
                             f"{rows[0].get('reliability')})")
        lines += [f"  {f['finding']} {f['verdict']}: {finding_text(f)}" for f in result.get("findings") or []
                  if f["dataset"] == ds]  # fmt: skip
    return lines


def finding_text(f: Mapping[str, Any]) -> str:
    """One line of a finding's evidence (``laws.findings``): its numbers with their 95% intervals.

    >>> finding_text({"finding": "F1", "evidence": {"r2": 0.95, "slope_c_fft": {"value": 0.8, "lo": 0.7, "hi": 0.9}}})
    'R2 0.9500, slope c_fft 0.8000 [0.7000, 0.9000]'
    """
    ev = f.get("evidence") or {}

    def ci(d: Any) -> str:
        return format_interval(d.get("value"), d.get("lo"), d.get("hi")) if isinstance(d, Mapping) else "-"

    parts = []
    if f["finding"] == "F1" and "r2" in ev:
        parts.append(f"R2 {fmt(ev['r2'])}, slope c_fft {ci(ev.get('slope_c_fft'))}")
    for key in ("exponent_a", "exponent_b"):
        if key in ev:
            parts.append(f"{key.split('_')[1]} = {ci(ev[key])}")
    form = ev.get("form")
    if isinstance(form, Mapping) and "heldout_error" in form:  # F1-F3: the law against a flexible curve
        err = form["heldout_error"]
        parts.append(f"form {form.get('result')}: held-out error {fmt(err['law'])} vs flexible "
                     f"{fmt(err['alternative'])} (margin {form['margin']['fraction']:.0%}, {form.get('n_runs')} runs)")
    if ev.get("reliability") and ev.get("reliability") != "reliable":  # F2/F3: reported, no longer decisive
        parts.append(f"kl_power {ev['reliability']} for forecasts")
    if "effect_log_P" in ev:  # F4: one contrast, at equal ft_loss; WCR interval over runs
        parts.append(f"log P effect at equal ft_loss {ci(ev['effect_log_P'])} nats (95%, {ev.get('n_runs')} runs) "
                     f"vs margin ±{fmt((ev.get('margin') or {}).get('value'))}")
    if "made_up" in ev:  # F5: intervals over items
        parts.append(f"agreement drop {ci(ev['agreement_drop'])} vs accuracy drop {ci(ev['accuracy_drop'])}; "
                     f"share of changed right answers not lost to accuracy {ci(ev['made_up'])} "
                     f"(95%, {ev['n_items']} items) vs margin {fmt(ev.get('margin'))}")
    if "statistic" in ev:  # F6: held-out errors of both predictors, leave-one-run-out
        err = ev["heldout_error"]
        parts.append(f"held-out error of forget_kl from task_kl {fmt(err['task_kl']['value'])} vs ft_loss "
                     f"{fmt(err['ft_loss']['value'])} nats, difference {ci(ev['error_difference'])} "
                     f"(95%, {ev['n_runs']} runs) vs margin {fmt(ev['margin']['value'])}")
    for m in ev.get("methods") or []:  # F7: each method against the reference at equal ft_loss
        parts.append(f"{m['method']} {m['verdict']}: {format_interval(m.get('difference'), m.get('lo'), m.get('hi'))} "
                     f"nats vs margin ±{fmt(m.get('margin'))}")
    if "lost_share" in (ev.get("safety") or {}):
        s = ev["safety"]
        parts.append(f"safety: {s['lost_refusals']} of {s['base_refusals']} refusals lost, share {ci(s['lost_share'])}")
    if "reason" in ev:
        parts.append(str(ev["reason"]))
    return "; ".join(parts) or "-"
