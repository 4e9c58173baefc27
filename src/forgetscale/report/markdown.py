"""The report as Markdown, for a paper appendix or a pull request.

Same content and order as the HTML report. Figures are not inlined: each is an
SVG file in a folder next to the Markdown file (``report_figures/<name>.svg``
for ``report.md``), referenced with a relative link, so the document renders
on GitHub and in most Markdown viewers. Strings from the store or the config
are escaped for Markdown *and* HTML (Markdown renderers pass raw HTML through).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from forgetscale.report.data import ReportData, fmt, fmt_ci, fmt_pct
from forgetscale.report.flips import flip_table, rate_text
from forgetscale.report.methods import band_text, interval_methods
from forgetscale.report.texts import text_tables

__all__ = ["esc", "render_markdown"]

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # with [ ] escaped, ( ) ! # + - cannot start a link, image or block


def esc(v: Any) -> str:
    """Text safe in a Markdown table cell: HTML and Markdown specials escaped, one line.

    Example:
        >>> esc("<script>a|b*</script>")
        '&lt;script&gt;a\\\\|b\\\\*&lt;/script&gt;'
    """
    s = str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _SPECIAL.sub(r"\\\1", s)
    return " ".join(s.split()) if s.strip() else ""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _methods(d: ReportData, figure: str | None, caption: str) -> list[str]:
    """Each method against LoRA at equal fine-tuning loss (``forgetscale compare``): the table, the figure."""
    rows = [r for r in (d.frontier or {}).get("rows") or [] if "mitigation" not in r]
    if not rows:
        return []
    out = ["## Methods against LoRA at equal fine-tuning loss", "",
           "Difference: the method's forget_ce minus LoRA's line at the method's own fine-tuning losses, within the "
           "range both cover, the mean over its runs (negative: it forgets less). 95% prediction interval for as "
           "many new LoRA runs. same: the 90% interval inside ±margin (20% of LoRA's forgetting there); forgets "
           "less / more: the 95% interval below / above 0; undecided says why.", ""]  # fmt: skip
    out += _table(["dataset", "method", "P", "learning rate", "difference", "95% low", "95% high", "margin",
                   "verdict", "runs", "s / step", "reason"],
                  [[esc(r["dataset"]), esc(r["method"]), ", ".join(fmt(p) for p in r.get("P") or []),
                    ", ".join(fmt(x) for x in r.get("lr") or []), fmt(r["difference"]), fmt(r["lo"]), fmt(r["hi"]),
                    fmt(r["margin"]), r["verdict"].replace("_", " "), r["n_runs"], fmt(r.get("seconds_per_step")),
                    esc(r.get("reason") or "")] for r in rows])  # fmt: skip
    if figure and figure.startswith("error: "):
        out += [f"The methods figure could not be drawn: {esc(figure[7:])}", ""]
    elif figure:
        out += [f"![Methods at equal fine-tuning loss]({figure})", "", f"*{caption}*", ""]
    return out


def _mitigations(d: ReportData, figure: str | None, caption: str) -> list[str]:
    """The frontier test (``forgetscale compare``): plain LoRA's line per dataset, the table, the figure."""
    if not d.frontier or not any("mitigation" in r for r in d.frontier["rows"]):
        return []
    out = ["## Mitigations against plain LoRA's line", "",
           "Residual: forget_ce minus plain LoRA's line at the same fine-tuning loss (negative: less forgetting), "
           "the mean over the level's runs of each run's mean residual at or after fit.min_step. Trained kinds "
           "(replay, kl): a 95% prediction interval for as many new plain runs at the same fine-tuning loss. "
           "Post-hoc kinds (rescale, intruders): the paired contrast with each run's own points, t interval "
           "over runs. beats_line: the interval lies below 0, worse: above, on_line: it contains 0; undecided "
           "says why. Overhead: extra wall time as a fraction of plain training. Outside: points beyond the "
           "plain runs' ft_loss range.", ""]  # fmt: skip
    for ds, line in sorted(d.frontier["lines"].items()):
        lo, hi = line["ft_loss_range"]
        out += [f"{esc(ds)}: forget_ce = {fmt(line['s_fft'])} - {fmt(line['c_fft'])} · ft_loss over ft_loss "
                f"{fmt(lo)}-{fmt(hi)}, R² {fmt(line['r2'])}, {line['n_points']} points from {line['n_runs']} runs.", ""]
    out += _table(["dataset", "mitigation", "strength", "residual", "95% low", "95% high", "verdict", "overhead",
                   "points", "runs", "outside", "reason"],
                  [[esc(r["dataset"]), esc(r["mitigation"]), fmt(r["strength"]), fmt(r["residual"]), fmt(r["lo"]),
                    fmt(r["hi"]), r["verdict"].replace("_", " "), fmt(r.get("overhead")), r["n_points"], r["n_runs"],
                    r["n_outside"], esc(r.get("reason") or "")]
                   for r in d.frontier["rows"] if "mitigation" in r])  # fmt: skip
    if figure and figure.startswith("error: "):
        out += [f"The frontier figure could not be drawn: {esc(figure[7:])}", ""]
    elif figure:
        out += [f"![Mitigations against plain LoRA's line]({figure})", "", f"*{caption}*", ""]
    return out


def render_markdown(data: ReportData, figure_files: Mapping[str, str], captions: Mapping[str, str]) -> str:
    """The report as a Markdown document.

    Args:
        data: what :func:`forgetscale.report.data.gather` returns.
        figure_files: figure name -> relative path of its SVG file (or an error
            message prefixed ``"error: "`` when it could not be drawn).
        captions: figure name -> caption.

    Returns:
        The Markdown text.
    """
    d = data
    out = [f"# Forgetting study: {esc(d.name)}", ""]
    out += [f"Study directory `{_code(d.directory)}`; {len(d.runs)} run(s); dataset(s): "
            f"{esc(', '.join(d.datasets)) or 'none'}. Forgetting L_f is the cross-entropy of the fine-tuned "
            "model against the base model's own next-token distribution (nats); laws after Kalajdzievski (2024), "
            "arXiv 2401.05605.", ""]
    out += [x for m in interval_methods(d.fits) for x in (esc(m), "")]
    out += ["## Summary", ""]
    out += [f"- {esc(n)}" for n in d.notes] + ([""] if d.notes else [])
    if d.findings:
        out += ["### The paper's findings", ""]
        out += _table(["dataset", "finding", "verdict", "claim", "evidence"],
                      [[esc(f["dataset"]), f["finding"], f["verdict"].replace("_", " "),
                        esc(f["evidence"].get("claim", "")), esc(f["text"])] for f in d.findings])
    if not d.headlines:
        out += ["No finished runs and no fits in this study yet.", ""]
    for h in d.headlines:
        out += [f"### {esc(h.dataset)} ({h.n_runs} finished run(s))", ""]
        if h.linear:
            lin = h.linear
            out += [f"**Linear law:** forget = -{fmt(lin['c_fft']['value'])} · ft_loss + {fmt(lin['s_fft']['value'])}; "
                    f"c_fft = {fmt_ci(lin['c_fft'])}, s_fft = {fmt_ci(lin['s_fft'])}, R² = {fmt(lin['r2'])}"
                    + ("" if lin["fit_clean"] else " (fit warnings: " + esc("; ".join(lin["warnings"])) + ")"), ""]
        else:
            out += ["Linear law: no fit.", ""]
        if h.laws:
            out += ["Laws used for predictions (reliable: held-out error ≤ 15% of the change since step 0 on both "
                    "splits; undecided: above, but within what run and step noise alone give; intervals: "
                    f"{esc(band_text(d.fits))}, with its coverage check):", ""]
            out += _table(
                ["quantity", "law", "held-out error of change", "coverage", "R²", "exponents [95%]"],
                [[law["target"], esc(law["law"]) + ("" if law["reliable"] else f" ({law.get('state', 'unreliable')})"),
                  fmt_pct(law["heldout_error_of_change"]), fmt_pct(law["coverage"]), fmt(law["r2"]),
                  "; ".join(f"{esc(n)} = {fmt_ci(p, 3)}" for n, p in law["exponents"])]
                 for law in h.laws],
            )  # fmt: skip
        if h.predictions:
            out += [f"Predictions at N = {fmt(h.predictions[0]['N'])} steps:", ""]
            out += _table(
                ["where", "rank", "P", "ft_loss", "forget_ce", "forget_kl"],
                [[p["label"] + (" (extrapolated)" if (p.get("forget_ce") or {}).get("extrapolated") else ""),
                  fmt(p["rank"]), fmt(p["P"]), *(fmt_ci(p.get(t)) for t in ("ft_loss", "forget_ce", "forget_kl"))]
                 for p in h.predictions],
            )  # fmt: skip
        else:
            out += [f"Predictions: {esc(h.prediction_error)}", ""]
        if h.plan:
            pl = h.plan
            out += [f"**Plan** for forget_ce ≤ {fmt(h.budget)} nats (the median observed forgetting; the "
                    f"{pl['bound']} 95% bound must stay within it): rank {fmt(pl['rank'])}, {fmt(pl['steps'])} steps "
                    f"→ ft_loss {fmt_ci(pl['ft_loss'])}, forget_ce {fmt_ci(pl['forget_ce'])}.", ""]
        else:
            out += [f"Plan: {esc(h.plan_error)}", ""]

    out += ["## Figures", ""]
    for i, (name, path) in enumerate(((n, p) for n, p in figure_files.items() if n not in ("frontier", "methods")), 1):
        caption = captions.get(name, "")
        if path.startswith("error: "):
            out += [f"Figure {i} could not be drawn: {esc(path[7:])}", ""]
        else:
            out += [f"![Figure {i}: {esc(name)}]({path})", "", f"*Figure {i}.* {caption}", ""]

    out += ["## Fitted laws", ""]
    if not d.fits:
        out += ["No fits stored; run `forgetscale fit` on the study directory.", ""]
    for ds, by_law in d.fits.items():
        for label, f in by_law.items():
            r2 = ", ".join(f"{esc(t)} {fmt(v)}" for t, v in sorted(f["r2"].items()))
            clean = f.get("fit_clean", f.get("reliable"))
            out += [f"### {esc(ds)} · {esc(label)}" + ("" if clean else " (fit warnings)"), "",
                    f"{f['n_points']} points from {f['n_groups']} runs; R² {r2}.", ""]
            out += _table(["parameter", "value", "95% low", "95% high", ""],
                          [[esc(n), fmt(p["value"], 6), fmt(p["lo"], 6), fmt(p["hi"], 6),
                            "pinned (gauge)" if p.get("pinned") else ""] for n, p in f["params"].items()])
            out += [f"- {esc(w)}" for w in f.get("warnings") or []] + ([""] if f.get("warnings") else [])

    out += ["## Law comparison", ""]
    if d.comparison:
        out += _table(
            ["dataset", "quantity", "law", "R²", "RMSE", "held-out P", "held-out N", "held-out error of change",
             "reliable", "interval coverage", "points"],
            [[esc(r["dataset"]), r["target"], esc(r["law"]), fmt(r["r2"]), fmt(r["rmse"]),
              fmt_pct(r["heldout_P_error_of_change"]), fmt_pct(r["heldout_N_error_of_change"]),
              fmt_pct(r["heldout_error_of_change"]), fmt(r["reliable"]), fmt_pct(r["coverage"]), r["n_points"]]
             for r in d.comparison],
        )  # fmt: skip
    else:
        out += ["No fits to compare.", ""]
    out += _methods(d, figure_files.get("methods"), captions.get("methods", ""))
    out += _mitigations(d, figure_files.get("frontier"), captions.get("frontier", ""))

    out += ["## Runs", ""]
    if d.other_runs:
        out += [f"{d.other_runs} other run(s) in the store are not part of this study and are not shown.", ""]
    out += _table(
        ["run", "dataset", "rank", "P", "status", "last step", "ft_loss", "forget_ce", "forget_kl", "same top 1",
         "KL p99", "task_kl", "seconds"],
        [[f"`{_code(r['run_id'])}`", esc(r["dataset"]), fmt(r["rank"]), fmt(r["P"]),
          esc(r["status"]) + (f": {esc(r['error'])}" if r["error"] else ""), fmt(r["step"]), fmt(r["ft_loss"]),
          fmt(r["forget_ce"]), fmt(r["forget_kl"]), fmt(r.get("top1_agree")), fmt(r.get("kl_p99")),
          fmt(r.get("task_kl")), fmt(r["seconds"], 3)] for r in d.runs],
    )  # fmt: skip

    if d.probes:
        out += ["## Behaviour probes", "", "Rates with 95% Wilson score intervals over items.", ""]
        out += _table(
            ["probe", "run", "dataset", "rank", "items", "accuracy", "base accuracy", "agreement with base",
             "refusals", "base refusals"],
            [[esc(p["probe"]), f"`{_code(p['run_id'])}`",
              esc(p["dataset"]) if p["dataset"] is not None else "base model",
              fmt(p["rank"]), fmt(p["n"]), *(rate_text(p, k) for k in ("accuracy", "base_accuracy", "agreement",
                                                                         "refusal_rate", "base_refusal_rate"))]
             for p in d.probes],
        )  # fmt: skip
        flips = flip_table(d.probes)
        if flips.rows:
            out += [f"## {flips.title}", "", esc(flips.note), ""]
            out += _table(flips.header, [[esc(c) for c in row] for row in flips.rows])
    if d.samples:
        out += ["## Sample generations, base vs fine-tuned", ""]
        for s in d.samples:
            out += [f"### {esc(s['probe'])}: run `{_code(s['run_id'])}` ({esc(s['dataset'])}, rank {fmt(s['rank'])}), "
                    f"agreement with base {fmt_pct(s['agreement'])}", ""]
            out += _table(
                ["item", "prompt", "reference", "base", "fine-tuned"],
                [[esc(it["id"]) + (" (changed)" if it["agree"] is False else ""), esc(it["prompt"]),
                  esc(it["reference"]), f"{esc(it['base'])} → {esc(fmt(it['base_answer']))}",
                  f"{esc(it['tuned'])} → {esc(fmt(it['answer']))}"] for it in s["items"]],
            )  # fmt: skip

    texts = text_tables(d.texts)
    if texts is not None:
        out += [f"## {texts.title}", "", esc(texts.note), ""]
        for caption, header, rows in texts.tables:
            out += [f"### {esc(caption)}", "", *_table(header, [[esc(c) for c in row] for row in rows])]
    out += ["## Study config", ""]
    out += _table(["key", "value"], [[f"`{_code(k)}`", esc(v)] for k, v in d.config]) if d.config else \
        ["The store holds no study config.", ""]
    out += ["## Provenance", "", f"Report written by forgetscale {esc(d.version)}.", ""]
    out += _table(["key", "value"], [[f"`{_code(k)}`", esc(v)] for k, v in d.provenance]) if d.provenance else \
        ["No provenance recorded.", ""]
    return "\n".join(out).rstrip() + "\n"


def _code(v: Any) -> str:
    """Text for inside a code span: no backticks, pipes or line breaks to break out of it."""
    return " ".join(str(v).replace("`", "'").replace("|", "/").split())
