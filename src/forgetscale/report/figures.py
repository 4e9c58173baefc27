"""The report's figures: store rows and fitted laws in, :class:`matplotlib.figure.Figure` out.

Every function takes the study's measurement rows (``store.measurements()``
dicts: run_id, dataset, rank, P, step, ft_loss, forget_ce, forget_kl,
base_entropy) and its fits (``{dataset: {law label: FitResult or its dict}}``),
draws one panel per dataset, and returns the figure; nothing is written and no
pyplot state is touched (figures are built directly on an Agg canvas). A
missing fit draws the data alone and says "no fit"; no data gives a figure
that says so.

Colours encode the LoRA rank, the same in every figure. Bands are the fitted
law's prediction intervals for a new run (``FitResult.predict``); what they are
is read from the fits' own records (:func:`captions`).

Axes fit the measured points, never a law, and a law is dashed beyond the
points it was fitted on: how a panel is drawn is :mod:`~forgetscale.report.panels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from forgetscale.report import panels as pn

__all__ = [
    "FIGURES",
    "all_figures",
    "captions",
    "forgetting_vs_ft_loss",
    "forgetting_vs_params",
    "frontier_figure",
    "methods_figure",
    "kl_vs_steps",
    "observed_vs_predicted",
    "steps_curves",
]

LABELS = {
    "forget_ce": "forgetting L_f (nats)",
    "ft_loss": "fine-tuning loss L_ft (nats)",
    "forget_kl": "KL(base || fine-tuned) (nats)",
}
Rows = Sequence[Mapping[str, Any]]
Fits = Mapping[str, Mapping[str, Any]]


# ---------------------------------------------------------------------------- figures

def forgetting_vs_ft_loss(rows: Rows, fits: Fits) -> Any:
    """Forgetting against fine-tuning loss, one colour per rank, with the Eq. 4 line (the paper's Fig. 2).

    Args:
        rows: measurement rows.
        fits: ``{dataset: {label: FitResult | dict}}``; uses ``linear``.

    Returns:
        A Figure with one panel per dataset.
    """
    data = _by_dataset(rows, ("ft_loss", "forget_ce"))
    fig, axes = pn.new_panels(len(data))
    if not data:
        return pn.empty(fig, axes, "no measurements with both fine-tuning loss and forgetting")
    colours = _rank_colours(rows)
    for ax, (ds, rs) in zip(axes[0], data.items(), strict=False):
        for rank, group in _by_rank(rs):
            ax.scatter([r["ft_loss"] for r in group], [r["forget_ce"] for r in group], s=16,
                       color=colours[rank], label=f"r = {rank}", zorder=3)
        fit = _fit(fits, ds, "linear")
        x = np.array([r["ft_loss"] for r in rs], float)
        ylim = pn.span([r["forget_ce"] for r in rs])
        if fit is None:
            pn.no_fit(ax)
        else:
            grid = np.linspace(x.min(), x.max(), 50) if np.ptp(x) > 0 else x[:1]
            c, s = fit.params.get("c_fft", math.nan), fit.params.get("s_fft", math.nan)
            r2 = fit.r2.get("forget_ce", math.nan)
            pn.draw_law(ax, fit, "ft_loss", grid, {}, "forget_ce", "black", ylim, lw=1.4, zorder=4,
                 label=f"L_f = -{pn.fmt_g(c)} L_ft + {pn.fmt_g(s)}\nR² = {pn.fmt_g(r2, 3)}")
        pn.decorate(ax, ds, LABELS["ft_loss"], LABELS["forget_ce"])
        pn.set_limits(ax, pn.span(x), ylim)
    pn.legend(axes[0][0])
    return fig


def steps_curves(rows: Rows, fits: Fits) -> Any:
    """Forgetting (top) and fine-tuning loss (bottom) against steps, per rank, with the fitted law.

    The law per quantity is the one predictions use (``laws.select.choose_law``:
    reliable first, then the smallest held-out error), e.g. ``paper`` or
    ``additive:forget_ce``. Steps are on a log axis, so step 0 is drawn as a
    dashed line at its value.

    Returns:
        A Figure: rows forgetting / fine-tuning loss, one column per dataset.
    """
    targets = ("forget_ce", "ft_loss")
    data = _by_dataset(rows, ())
    fig, axes = pn.new_panels(len(data), nrows=2)
    if not data:
        return pn.empty(fig, axes, "no measurements")
    colours = _rank_colours(rows)
    for col, (ds, rs) in enumerate(data.items()):
        objs = _fits(fits, ds)
        for row, target in enumerate(targets):
            ax = axes[row][col]
            label = _choose(objs, target)
            pts = [r for r in rs if pn.finite(r.get(target))]
            later = [r for r in pts if r["step"] > 0]
            ylim = pn.span([r[target] for r in later])
            zero = [r[target] for r in pts if r["step"] == 0]
            if zero:
                pn.step_zero(ax, float(np.mean(zero)), ylim)
            for rank, group in _by_rank(later):
                ax.scatter([r["step"] for r in group], [r[target] for r in group], s=14,
                           color=colours[rank], label=f"r = {rank}", zorder=3)
                if label is None:
                    continue
                n = np.geomspace(min(r["step"] for r in group), max(r["step"] for r in group), 60)
                for p in sorted({r["P"] for r in group if pn.finite(r.get("P"))}):
                    pn.draw_law(ax, objs[label], "N", n, {"P": p}, target, colours[rank], ylim, shade=0.08)
            if label is None:
                pn.no_fit(ax)
            else:
                pn.note(ax, f"law: {label}")
            pn.log_steps(ax)
            pn.decorate(ax, ds if row == 0 else None, "steps N" if row == 1 else None, LABELS[target])
            pn.set_limits(ax, pn.span([r["step"] for r in later], log=True), ylim)
    pn.legend(axes[0][0])
    return fig


def forgetting_vs_params(rows: Rows, fits: Fits, steps: Iterable[int] | None = None) -> Any:
    """Forgetting against trainable parameters P at fixed steps, with the law extrapolated to 4x the largest P.

    Args:
        rows: measurement rows.
        fits: as above; the forgetting law is chosen as in :func:`steps_curves`.
        steps: which steps; default per dataset: the last step every run
            measured and up to two earlier ones about 4x and 16x smaller.

    Returns:
        A Figure with one panel per dataset; the law is dashed beyond the data.
    """
    data = _by_dataset(rows, ("forget_ce", "P"))
    fig, axes = pn.new_panels(len(data))
    if not data:
        return pn.empty(fig, axes, "no measurements with forgetting and a parameter count")
    wanted = None if steps is None else sorted({int(s) for s in steps})
    for ax, (ds, rs) in zip(axes[0], data.items(), strict=False):
        objs = _fits(fits, ds)
        label = _choose(objs, "forget_ce")
        chosen = wanted if wanted is not None else _fixed_steps(rs)
        cmap = _colormap("plasma")
        p_all = np.array([r["P"] for r in rs], float)
        shown = [r for r in rs if r["step"] in chosen]
        ylim = pn.span([r["forget_ce"] for r in shown])
        grid = np.geomspace(p_all.min(), 4 * p_all.max(), 60)
        for i, step in enumerate(chosen):
            colour = cmap(0.85 * i / max(len(chosen) - 1, 1))
            pts = sorted((r for r in shown if r["step"] == step), key=lambda r: r["P"])
            if not pts:
                continue
            ax.scatter([r["P"] for r in pts], [r["forget_ce"] for r in pts], s=18, color=colour,
                       label=f"N = {step}", zorder=3)
            if label is not None and step > 0:
                pn.draw_law(ax, objs[label], "P", grid, {"N": step}, "forget_ce", colour, ylim)
        if label is None:
            pn.no_fit(ax)
        else:
            pn.note(ax, f"law: {label}")
        ax.set_xscale("log")
        pn.decorate(ax, ds, "trainable parameters P", LABELS["forget_ce"])
        xlim = pn.span([r["P"] for r in shown] + ([grid[-1]] if label is not None else []), log=True)
        pn.set_limits(ax, xlim, ylim)
        pn.plain_log(ax.xaxis, xlim)
        pn.legend(ax)
    return fig


def observed_vs_predicted(rows: Rows, fits: Fits) -> Any:
    """Observed against predicted values of the laws used for predictions; the largest-P points marked.

    Predictions come from the fit to all points; the largest-P points are the
    held-out split of the validation, and each panel quotes the error of the
    refit without them (from the stored fit).

    Returns:
        A Figure: rows forgetting / fine-tuning loss, one column per dataset.
    """
    targets = ("forget_ce", "ft_loss")
    data = _by_dataset(rows, ("P",))
    fig, axes = pn.new_panels(len(data), nrows=2, square=True)
    if not data:
        return pn.empty(fig, axes, "no measurements")
    colours = _rank_colours(rows)
    for col, (ds, rs) in enumerate(data.items()):
        objs = _fits(fits, ds)
        for row, target in enumerate(targets):
            ax = axes[row][col]
            label = _choose(objs, target)
            pts = [r for r in rs if r["step"] > 0 and pn.finite(r.get(target))]
            if label is None or not pts:
                pn.no_fit(ax)
                pn.decorate(ax, ds if row == 0 else None, f"predicted {target}", f"observed {target}")
                continue
            fit = objs[label]
            n_min = fit.domain.get("N", (0.0, 0.0))[0]
            pts = [r for r in pts if r["step"] >= n_min]
            pred = pn.predict(fit, {"P": [r["P"] for r in pts], "N": [r["step"] for r in pts]}, target)[0]
            obs = np.array([r[target] for r in pts], float)
            top = max(r["P"] for r in pts)
            for rank, idx in _rank_index(pts):
                ax.scatter(pred[idx], obs[idx], s=14, color=colours[rank], label=f"r = {rank}", zorder=3)
            held = [i for i, r in enumerate(pts) if r["P"] == top]
            ax.scatter(pred[held], obs[held], s=46, facecolors="none", edgecolors="crimson", lw=1.2,
                       label="largest P (held out)", zorder=4)
            lim = pn.span(np.concatenate([pred[np.isfinite(pred)], obs]))
            if lim is not None:
                ax.plot(lim, lim, color="grey", lw=0.9, ls=":", zorder=1)
            mre = ((fit.heldout.get("P") or {}).get("mre") or {}).get(target)
            pn.note(ax, f"law: {label}\nheld-out (largest P) error: " + ("-" if mre is None else f"{100 * mre:.2g}%"))
            pn.decorate(ax, ds if row == 0 else None, f"predicted {target}", f"observed {target}")
            pn.set_limits(ax, lim, lim)
    pn.legend(axes[0][0])
    return fig


def kl_vs_steps(rows: Rows, fits: Fits) -> Any:
    """KL to the base against steps on log-log axes (step 0, where KL = 0, left out), with the KL power law.

    Returns:
        A Figure with one panel per dataset.
    """
    data = _by_dataset([r for r in rows if (r.get("step") or 0) > 0 and pn.finite(r.get("forget_kl"))
                        and r["forget_kl"] > 0], ("forget_kl",))
    fig, axes = pn.new_panels(len(data))
    if not data:
        return pn.empty(fig, axes, "no positive KL measurements after step 0")
    colours = _rank_colours(rows)
    for ax, (ds, rs) in zip(axes[0], data.items(), strict=False):
        objs = _fits(fits, ds)
        label = "kl_power" if "kl_power" in objs else _choose(objs, "forget_kl")
        ylim = pn.span([r["forget_kl"] for r in rs], log=True)
        for rank, group in _by_rank(rs):
            ax.scatter([r["step"] for r in group], [r["forget_kl"] for r in group], s=14,
                       color=colours[rank], label=f"r = {rank}", zorder=3)
            if label is None:
                continue
            n = np.geomspace(min(r["step"] for r in group), max(r["step"] for r in group), 40)
            for p in sorted({r["P"] for r in group if pn.finite(r.get("P"))}):
                pn.draw_law(ax, objs[label], "N", n, {"P": p}, "forget_kl", colours[rank], ylim, log_y=True, shade=0.08)
        if label is None:
            pn.no_fit(ax)
        elif objs[label].law == "kl_power":
            pr = objs[label].params
            pn.note(ax, f"KL = A P^a N^b: a = {pn.fmt_g(pr['a'], 3)}, b = {pn.fmt_g(pr['b'], 3)}")
        else:
            pn.note(ax, f"law: {label}")
        pn.log_steps(ax)
        ax.set_yscale("log")
        pn.decorate(ax, ds, "steps N", LABELS["forget_kl"])
        pn.set_limits(ax, pn.span([r["step"] for r in rs], log=True), ylim)
        pn.plain_log(ax.yaxis, ylim)
    pn.legend(axes[0][0])
    return fig


FIGURES: dict[str, tuple[Callable[[Rows, Fits], Any], str]] = {
    "forget_vs_ft_loss": (
        forgetting_vs_ft_loss,
        "Forgetting against fine-tuning loss, every measured step of every run (colour: LoRA rank), with the "
        "fitted linear law L_f = -c_fft L_ft + s_fft and, shaded, its {band} (the paper's Figure 2).",
    ),
    "steps": (
        steps_curves,
        "Forgetting (top) and fine-tuning loss (bottom) against update steps per rank, with the fitted law "
        "used for predictions and, shaded, its {band}; the grey dashed line is step 0 (noted at the edge when it "
        "lies outside the later points).",
    ),
    "params": (
        forgetting_vs_params,
        "Forgetting against the number of trainable parameters P at fixed steps, with the law used for "
        "predictions and, shaded, its {band}, extrapolated to 4x the largest P.",
    ),
    "observed_vs_predicted": (
        observed_vs_predicted,
        "Observed against predicted (fit to all points); circled: the largest-P points, which the "
        "validation holds out (its error, from a refit without them, is quoted in each panel).",
    ),
    "kl": (
        kl_vs_steps,
        "KL divergence from the base against steps, log-log (step 0, where KL = 0, is left out), with the "
        "power law KL = A P^a N^b and, shaded, its {band}.",
    ),
}
"""Figure name -> (function, caption), in report order; ``{band}`` in a caption is filled by :func:`captions`."""

AXES_NOTE = ("Axes fit the measured points; a curve or band that leaves them is cut at the edge. Dashed over a "
             "lighter band: the law beyond the range of the points it was fitted on.")


def captions(fits: Fits) -> dict[str, str]:
    """Every figure's caption (:data:`FIGURES`, then ``frontier``), its band named from the fits' own records.

    Args:
        fits: ``{dataset: {label: fit dict}}`` as stored; what a band is comes from each fit's
            ``calibration`` record (:func:`forgetscale.report.methods.band_text`).
    """
    from forgetscale.report.methods import band_text

    band = band_text({ds: {k: f.to_dict(samples=False) if hasattr(f, "to_dict") else f for k, f in by.items()}
                      for ds, by in fits.items()})
    out = {name: caption.replace("{band}", band) + ("" if name == "observed_vs_predicted" else " " + AXES_NOTE)
           for name, (_, caption) in FIGURES.items()}
    out["frontier"] = FRONTIER_CAPTION
    out["methods"] = METHODS_CAPTION
    return out


FRONTIER_CAPTION = (
    "Mitigations against plain LoRA's line: forgetting against fine-tuning loss, plain LoRA's points (grey; "
    "plainly trained runs' own points) and its fitted line (solid over their range, dashed beyond), "
    "each mitigation in its colour, one marker per strength. Below the line: less forgetting at equal "
    "fine-tuning loss. Steps below fit.min_step are left out."
)
MITIGATION_COLOURS = {"replay": "tab:blue", "kl": "tab:orange", "rescale": "tab:green", "intruders": "tab:red"}
METHODS_CAPTION = (
    "Methods at equal fine-tuning loss: forgetting against fine-tuning loss, each run's curve (its points "
    "joined in step order) in its method's colour, and LoRA's fitted line (solid over LoRA's range, dashed "
    "beyond). Below the line: less forgetting than LoRA at equal fine-tuning loss. Steps below fit.min_step "
    "are left out."
)


def frontier_figure(frontier: Mapping[str, Any]) -> Any:
    """Plain LoRA's points and line with every mitigated point (:func:`forgetscale.results.compare` output).

    Returns:
        A Figure with one panel per dataset that has a line.
    """
    lines = frontier.get("lines") or {}
    fig, axes = pn.new_panels(len(lines))
    if not lines:
        return pn.empty(fig, axes, "no mitigated runs to compare")
    markers = "os^Dv<>P*X"
    for ax, (ds, line) in zip(axes[0], sorted(lines.items()), strict=True):
        pts = [p for p in frontier.get("points") or [] if p["dataset"] == ds]
        plain = [p for p in pts if p["mitigation"] == "none"]
        ax.scatter([p["ft_loss"] for p in plain], [p["forget_ce"] for p in plain], s=18, color="0.55",
                   label="plain LoRA", zorder=3)
        xs = np.array([p["ft_loss"] for p in pts])
        lo, hi = line["ft_loss_range"]
        for a, b, style in ((min(xs.min(), lo), lo, "--"), (lo, hi, "-"), (hi, max(xs.max(), hi), "--")):
            if b > a:
                x = np.linspace(a, b, 20)
                ax.plot(x, line["s_fft"] - line["c_fft"] * x, style, color="0.25", lw=1.1, zorder=2)
        for kind in sorted({p["mitigation"] for p in pts} - {"none"}):
            mine = [p for p in pts if p["mitigation"] == kind]
            for i, strength in enumerate(sorted({p["strength"] for p in mine})):
                sel = [p for p in mine if p["strength"] == strength]
                ax.scatter([p["ft_loss"] for p in sel], [p["forget_ce"] for p in sel], s=26, zorder=4,
                           marker=markers[i % len(markers)], color=MITIGATION_COLOURS.get(kind, "tab:purple"),
                           label=f"{kind} {pn.fmt_g(strength, 3)}")
        pn.decorate(ax, ds, LABELS["ft_loss"], LABELS["forget_ce"])
        pn.set_limits(ax, pn.span(xs), pn.span([p["forget_ce"] for p in pts]))
        pn.legend(ax)
    return fig


def methods_figure(frontier: Mapping[str, Any]) -> Any:
    """Each method's runs as curves on the plane of fine-tuning loss and forgetting, with LoRA's line
    (:func:`forgetscale.results.compare` output: its plainly trained points carry ``data`` and ``method``).

    Returns:
        A Figure with one panel per dataset trained by several methods.
    """
    pts = [p for p in frontier.get("points") or [] if p["mitigation"] == "none"]
    datasets = sorted({r["dataset"] for r in frontier.get("rows") or [] if "mitigation" not in r})
    fig, axes = pn.new_panels(len(datasets))
    if not datasets:
        return pn.empty(fig, axes, "no second method to compare")
    lines = frontier.get("lines") or {}
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [p for p in pts if p["data"] == ds]
        methods = sorted({p["method"] for p in mine}, key=lambda m: (m != "lora", m))
        for i, m in enumerate(methods):
            colour = "0.25" if m == "lora" else f"C{i % 10}"
            for j, run in enumerate(sorted({p["run_id"] for p in mine if p["method"] == m})):
                curve = sorted((p for p in mine if p["run_id"] == run), key=lambda p: p["step"])
                ax.plot([p["ft_loss"] for p in curve], [p["forget_ce"] for p in curve], "o-", ms=3.5, lw=1.0,
                        color=colour, alpha=0.85, label=m if j == 0 else None, zorder=3)
        ref = [p for p in mine if p["method"] == "lora"]
        line = lines.get(ds)
        if line is None and len({p["ft_loss"] for p in ref}) >= 2:
            from forgetscale.laws.frontier import fit_line

            line = fit_line(np.array([p["ft_loss"] for p in ref]), np.array([p["forget_ce"] for p in ref]))
        xs = np.array([p["ft_loss"] for p in mine])
        if line is not None:
            lo, hi = line["ft_loss_range"]
            for a, b, style in ((min(xs.min(), lo), lo, "--"), (lo, hi, "-"), (hi, max(xs.max(), hi), "--")):
                if b > a:
                    x = np.linspace(a, b, 20)
                    ax.plot(x, line["s_fft"] - line["c_fft"] * x, style, color="0.1", lw=0.9, zorder=2)
        pn.decorate(ax, ds, LABELS["ft_loss"], LABELS["forget_ce"])
        pn.set_limits(ax, pn.span(xs), pn.span([p["forget_ce"] for p in mine]))
        pn.legend(ax)
    return fig


def all_figures(rows: Rows, fits: Fits) -> dict[str, Any]:
    """Every figure of :data:`FIGURES`, by name."""
    return {name: fn(rows, fits) for name, (fn, _) in FIGURES.items()}


# ---------------------------------------------------------------------------- helpers

def _by_dataset(rows: Rows, need: Sequence[str]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if pn.finite(r.get("step")) and all(pn.finite(r.get(k)) for k in need):
            out.setdefault(str(r["dataset"]), []).append(r)
    return dict(sorted(out.items()))


def _by_rank(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, list[Mapping[str, Any]]]]:
    out: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(int(r.get("rank") or 0), []).append(r)
    return sorted(out.items())


def _rank_index(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, list[int]]]:
    out: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(int(r.get("rank") or 0), []).append(i)
    return sorted(out.items())


def _colormap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name]


def _rank_colours(rows: Rows) -> dict[int, Any]:
    ranks = sorted({int(r.get("rank") or 0) for r in rows})
    cmap = _colormap("viridis")
    return {rk: cmap(0.9 * i / max(len(ranks) - 1, 1)) for i, rk in enumerate(ranks)}


def _fixed_steps(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    by_run: dict[str, set[int]] = {}
    for r in rows:
        by_run.setdefault(str(r["run_id"]), set()).add(int(r["step"]))
    common = sorted(set.intersection(*by_run.values()) - {0}) if by_run else []
    if not common:
        return sorted({max(s) for s in by_run.values()})[-1:]
    last = common[-1]
    picks = [last]
    for div in (4, 16):
        near = min(common, key=lambda s: abs(math.log(s) - math.log(last / div)))
        if near not in picks:
            picks.append(near)
    return sorted(picks)


def _fits(fits: Fits, ds: str) -> dict[str, Any]:
    """One dataset's fits as FitResults; an unreadable fit is left out (the report notes it)."""
    from forgetscale.laws import FitResult

    out = {}
    for label, f in (fits.get(ds) or {}).items():
        if isinstance(f, FitResult):
            out[label] = f
            continue
        try:
            out[label] = FitResult.from_dict(f)
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _fit(fits: Fits, ds: str, label: str) -> Any:
    return _fits(fits, ds).get(label)


def _choose(objs: Mapping[str, Any], target: str) -> str | None:
    from forgetscale.laws.select import choose_law

    return choose_law(objs, target, reliable_only=False) if objs else None


