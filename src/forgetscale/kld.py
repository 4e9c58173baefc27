"""The text ``forgetscale forgetting`` prints: the forgetting metrics, then llama.cpp's KL-divergence summary.

People who compare a model with its base know the summary of llama.cpp's ``llama-perplexity
--kl-divergence``; these lines follow its layout, from :meth:`forgetscale.forgetting.Evaluation.summary`'s
numbers, Δp as llama.cpp defines it: the fine-tune's probability of the corpus' own next token minus the base's.
One difference, said under the table: standard errors are over the corpus' sequences (positions within a
sequence are not independent), not over positions. The same difference at the base's top token follows on a line
of its own. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgetscale.console import format_pm, metric_digits
from forgetscale.schema import FORGETTING_METRICS

_LABELS = {"max": "Maximum", "median": "Median ", "min": "Minimum"}
NOTE = "(± standard errors over the corpus' sequences; Δp = p_ft - p_base of the corpus' next token, as llama.cpp)"


def percentile_label(name: str, what: str = "KLD") -> str:
    """llama.cpp's label of a percentile row.

    >>> percentile_label("max"), percentile_label("99.9%"), percentile_label("5%"), percentile_label("median")
    ('Maximum KLD', '99.9%   KLD', ' 5.0%   KLD', 'Median  KLD')
    >>> percentile_label("75%", "Δp"), percentile_label("min", "Δp")
    ('75.0%   Δp', 'Minimum Δp')
    """
    if name in _LABELS:
        return f"{_LABELS[name]} {what}"
    return f"{float(name.rstrip('%')):4.1f}%   {what}"


def _pct(v: float | None, se: float | None = None) -> str:
    """A share in percent as llama.cpp prints Δp and same top p: ``%6.3f ± %5.3f %``."""
    if v is None:
        return "-"
    return f"{100 * v:6.3f}" + (f" ± {100 * se:5.3f}" if se is not None and se == se else "") + " %"


def summary_lines(r: Mapping[str, Any]) -> list[str]:
    """``forgetscale forgetting``'s text from its result (:meth:`forgetscale.ForgettingResult.as_dict`).

    >>> lines = summary_lines({"forget_kl": 0.2, "forget_kl_se": 0.01, "kl_percentiles": {"max": 1.5, "min": 0.0},
    ...                        "top1_agree": 0.9, "top1_agree_se": 0.01, "n_tokens": 100, "dp_mean": -0.025,
    ...                        "dp_mean_se": 0.004, "dp_percentiles": {"max": 0.5, "median": -0.001, "min": -0.9},
    ...                        "dp_rms": 0.185, "dp_rms_se": 0.01, "dp_top1_mean": -0.085, "dp_top1_rms": 0.245})
    >>> for line in lines:  # doctest: +NORMALIZE_WHITESPACE
    ...     print(line)
           forget_kl  0.20000 ± 0.01000
            n_tokens  100
    <BLANKLINE>
    ====== KL divergence statistics (llama.cpp style) ======
    Mean    KLD:   0.200000 ±   0.010000
    Maximum KLD:   1.500000
    Minimum KLD:   0.000000
    <BLANKLINE>
    ====== Token probability statistics ======
    Mean    Δp: -2.500 ± 0.400 %
    Maximum Δp: 50.000%
    Median  Δp: -0.100%
    Minimum Δp: -90.000%
    RMS Δp    : 18.500 ± 1.000 %
    Same top p: 90.000 ± 1.000 %
    (± standard errors over the corpus' sequences; Δp = p_ft - p_base of the corpus' next token, as llama.cpp)
    At the base's top token: mean Δp -8.500 %, RMS Δp 24.500 %
    """
    out = []
    for k in (*FORGETTING_METRICS, "forget_rkl"):
        if r.get(k) is not None:
            out.append(f"{k:>16}  {format_pm(r[k], r.get(f'{k}_se'), metric_digits(k))}")
    for k in ("n_tokens", "n_sequences", "reference"):
        if r.get(k) is not None:
            out.append(f"{k:>16}  {r[k]}")
    pct = r.get("kl_percentiles") or {}
    if pct:
        se = r.get("forget_kl_se")
        out += ["", "====== KL divergence statistics (llama.cpp style) ======",
                f"Mean    KLD: {r['forget_kl']:10.6f}" + (f" ± {se:10.6f}" if se is not None and se == se else "")]
        out += [f"{percentile_label(name)}: {v:10.6f}" for name, v in pct.items()]
    if r.get("top1_agree") is not None:
        out += ["", "====== Token probability statistics ======"]
        if r.get("dp_mean") is not None:
            out.append(f"Mean    Δp: {_pct(r['dp_mean'], r.get('dp_mean_se'))}")
            dpp = r.get("dp_percentiles") or {}
            out += [f"{percentile_label(name, 'Δp')}: {100 * v:6.3f}%" for name, v in dpp.items()]
            out.append(f"RMS Δp    : {_pct(r.get('dp_rms'), r.get('dp_rms_se'))}")
        out += [f"Same top p: {_pct(r['top1_agree'], r.get('top1_agree_se'))}", NOTE]
        if r.get("dp_top1_mean") is not None:
            out.append(f"At the base's top token: mean Δp {_pct(r['dp_top1_mean'])}, "
                       f"RMS Δp {_pct(r.get('dp_top1_rms'))}")
    return out
