"""The report's figures: store rows and fitted laws in, :class:`matplotlib.figure.Figure` out.

Every function takes the study's measurement rows (``store.measurements()``
dicts: run_id, dataset, rank, P, step, ft_loss, forget_ce, forget_kl,
base_entropy) and its fits (``{dataset: {law label: FitResult or its dict}}``),
draws one panel per dataset, and returns the figure; nothing is written and no
pyplot state is touched (figures are built directly on an Agg canvas). A
missing fit draws the data alone and says "no fit"; no data gives a figure
that says so.

Colours encode the LoRA rank, the same in every figure. Bands are 95%
bootstrap intervals of the fitted law (bootstrap over runs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FIGURES",
    "all_figures",
    "forgetting_vs_ft_loss",
    "forgetting_vs_params",
    "frontier_figure",
    "kl_vs_steps",
    "observed_vs_predicted",
    "steps_curves",
]

PANEL = (4.6, 3.4)  # inches per panel
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
    fig, axes = _panels(len(data))
    if not data:
        return _empty(fig, axes, "no measurements with both fine-tuning loss and forgetting")
    colours = _rank_colours(rows)
    for ax, (ds, rs) in zip(axes[0], data.items(), strict=False):
        for rank, group in _by_rank(rs):
            ax.scatter([r["ft_loss"] for r in group], [r["forget_ce"] for r in group], s=16,
                       color=colours[rank], label=f"r = {rank}", zorder=3)
        fit = _fit(fits, ds, "linear")
        x = np.array([r["ft_loss"] for r in rs], float)
        if fit is None:
            _no_fit(ax)
        else:
            grid = np.linspace(x.min(), x.max(), 50) if np.ptp(x) > 0 else x[:1]
            mean, lo, hi = _predict(fit, {"ft_loss": grid}, "forget_ce")
            c, s = fit.params.get("c_fft", math.nan), fit.params.get("s_fft", math.nan)
            r2 = fit.r2.get("forget_ce", math.nan)
            ax.plot(grid, mean, color="black", lw=1.4, zorder=4,
                    label=f"L_f = -{_g(c)} L_ft + {_g(s)}\nR² = {_g(r2, 3)}")
            _band(ax, grid, lo, hi, "black")
        _decorate(ax, ds, LABELS["ft_loss"], LABELS["forget_ce"])
    _legend(axes[0][0])
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
    fig, axes = _panels(len(data), nrows=2)
    if not data:
        return _empty(fig, axes, "no measurements")
    colours = _rank_colours(rows)
    for col, (ds, rs) in enumerate(data.items()):
        objs = _fits(fits, ds)
        for row, target in enumerate(targets):
            ax = axes[row][col]
            label = _choose(objs, target)
            pts = [r for r in rs if _ok(r.get(target))]
            zero = [r[target] for r in pts if r["step"] == 0]
            if zero:
                ax.axhline(float(np.mean(zero)), color="grey", ls="--", lw=0.9, label="step 0")
            for rank, group in _by_rank([r for r in pts if r["step"] > 0]):
                ax.scatter([r["step"] for r in group], [r[target] for r in group], s=14,
                           color=colours[rank], label=f"r = {rank}", zorder=3)
                if label is None:
                    continue
                n = np.geomspace(min(r["step"] for r in group), max(r["step"] for r in group), 60)
                for p in sorted({r["P"] for r in group if _ok(r.get("P"))}):
                    mean, lo, hi = _predict(objs[label], {"P": np.full_like(n, p), "N": n}, target)
                    ax.plot(n, mean, color=colours[rank], lw=1.2, zorder=2)
                    _band(ax, n, lo, hi, colours[rank])
            if label is None:
                _no_fit(ax)
            else:
                _note(ax, f"law: {label}")
            _log_steps(ax)
            _decorate(ax, ds if row == 0 else None, "steps N" if row == 1 else None, LABELS[target])
    _legend(axes[0][0])
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
    fig, axes = _panels(len(data))
    if not data:
        return _empty(fig, axes, "no measurements with forgetting and a parameter count")
    wanted = None if steps is None else sorted({int(s) for s in steps})
    for ax, (ds, rs) in zip(axes[0], data.items(), strict=False):
        objs = _fits(fits, ds)
        label = _choose(objs, "forget_ce")
        chosen = wanted if wanted is not None else _fixed_steps(rs)
        cmap = _colormap("plasma")
        p_all = np.array([r["P"] for r in rs], float)
        for i, step in enumerate(chosen):
            colour = cmap(0.85 * i / max(len(chosen) - 1, 1))
            pts = sorted((r for r in rs if r["step"] == step), key=lambda r: r["P"])
            if not pts:
                continue
            ax.scatter([r["P"] for r in pts], [r["forget_ce"] for r in pts], s=18, color=colour,
                       label=f"N = {step}", zorder=3)
            if label is None or step <= 0:
                continue
            lo_p, hi_p = p_all.min(), p_all.max()
            inside = np.geomspace(lo_p, hi_p, 40)
            beyond = np.geomspace(hi_p, 4 * hi_p, 20)
            for grid, style in ((inside, "-"), (beyond, "--")):
                mean, lo, hi = _predict(objs[label], {"P": grid, "N": np.full_like(grid, step)}, "forget_ce")
                ax.plot(grid, mean, color=colour, lw=1.2, ls=style, zorder=2)
                _band(ax, grid, lo, hi, colour)
        if label is None:
            _no_fit(ax)
        else:
            _note(ax, f"law: {label} (dashed: beyond the data)")
        ax.set_xscale("log")
        _decorate(ax, ds, "trainable parameters P", LABELS["forget_ce"])
        _legend(ax)
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
    fig, axes = _panels(len(data), nrows=2, square=True)
    if not data:
        return _empty(fig, axes, "no measurements")
    colours = _rank_colours(rows)
    for col, (ds, rs) in enumerate(data.items()):
        objs = _fits(fits, ds)
        for row, target in enumerate(targets):
            ax = axes[row][col]
            label = _choose(objs, target)
            pts = [r for r in rs if r["step"] > 0 and _ok(r.get(target))]
            if label is None or not pts:
                _no_fit(ax)
                _decorate(ax, ds if row == 0 else None, f"predicted {target}", f"observed {target}")
                continue
            fit = objs[label]
            n_min = fit.domain.get("N", (0.0, 0.0))[0]
            pts = [r for r in pts if r["step"] >= n_min]
            pred = _predict(fit, {"P": [r["P"] for r in pts], "N": [r["step"] for r in pts]}, target)[0]
            obs = np.array([r[target] for r in pts], float)
            top = max(r["P"] for r in pts)
            for rank, idx in _rank_index(pts):
                ax.scatter(pred[idx], obs[idx], s=14, color=colours[rank], label=f"r = {rank}", zorder=3)
            held = [i for i, r in enumerate(pts) if r["P"] == top]
            ax.scatter(pred[held], obs[held], s=46, facecolors="none", edgecolors="crimson", lw=1.2,
                       label="largest P (held out)", zorder=4)
            both = np.concatenate([pred[np.isfinite(pred)], obs])
            lim = (both.min(), both.max()) if both.size else (0.0, 1.0)
            ax.plot(lim, lim, color="grey", lw=0.9, ls=":", zorder=1)
            mre = ((fit.heldout.get("P") or {}).get("mre") or {}).get(target)
            _note(ax, f"law: {label}\nheld-out (largest P) error: " + ("-" if mre is None else f"{100 * mre:.2g}%"))
            _decorate(ax, ds if row == 0 else None, f"predicted {target}", f"observed {target}")
    _legend(axes[0][0])
    return fig


def kl_vs_steps(rows: Rows, fits: Fits) -> Any:
    """KL to the base against steps on log-log axes (step 0, where KL = 0, left out), with the KL power law.

    Returns:
        A Figure with one panel per dataset.
    """
    data = _by_dataset([r for r in rows if (r.get("step") or 0) > 0 and _ok(r.get("forget_kl"))
                        and r["forget_kl"] > 0], ("forget_kl",))
    fig, axes = _panels(len(data))
    if not data:
        return _empty(fig, axes, "no positive KL measurements after step 0")
    colours = _rank_colours(rows)
    for ax, (ds, rs) in zip(axes[0], data.items(), strict=False):
        objs = _fits(fits, ds)
        label = "kl_power" if "kl_power" in objs else _choose(objs, "forget_kl")
        for rank, group in _by_rank(rs):
            ax.scatter([r["step"] for r in group], [r["forget_kl"] for r in group], s=14,
                       color=colours[rank], label=f"r = {rank}", zorder=3)
            if label is None:
                continue
            n = np.geomspace(min(r["step"] for r in group), max(r["step"] for r in group), 40)
            for p in sorted({r["P"] for r in group if _ok(r.get("P"))}):
                mean, lo, hi = _predict(objs[label], {"P": np.full_like(n, p), "N": n}, "forget_kl")
                ax.plot(n, mean, color=colours[rank], lw=1.2, zorder=2)
                _band(ax, n, lo, hi, colours[rank])
        if label is None:
            _no_fit(ax)
        elif objs[label].law == "kl_power":
            pr = objs[label].params
            _note(ax, f"KL = A P^a N^b: a = {_g(pr['a'], 3)}, b = {_g(pr['b'], 3)}")
        else:
            _note(ax, f"law: {label}")
        _log_steps(ax)
        ax.set_yscale("log")
        _decorate(ax, ds, "steps N", LABELS["forget_kl"])
    _legend(axes[0][0])
    return fig


FIGURES: dict[str, tuple[Callable[[Rows, Fits], Any], str]] = {
    "forget_vs_ft_loss": (
        forgetting_vs_ft_loss,
        "Forgetting against fine-tuning loss, every measured step of every run (colour: LoRA rank), with the "
        "fitted linear law L_f = -c_fft L_ft + s_fft and its 95% band (the paper's Figure 2).",
    ),
    "steps": (
        steps_curves,
        "Forgetting (top) and fine-tuning loss (bottom) against update steps per rank, with the fitted law "
        "used for predictions and its 95% bootstrap band; the dashed line is step 0.",
    ),
    "params": (
        forgetting_vs_params,
        "Forgetting against the number of trainable parameters P at fixed steps; the law is extrapolated "
        "to 4x the largest P (dashed).",
    ),
    "observed_vs_predicted": (
        observed_vs_predicted,
        "Observed against predicted (fit to all points); circled: the largest-P points, which the "
        "validation holds out (its error, from a refit without them, is quoted in each panel).",
    ),
    "kl": (
        kl_vs_steps,
        "KL divergence from the base against steps, log-log (step 0, where KL = 0, is left out), with the "
        "power law KL = A P^a N^b.",
    ),
}
"""Figure name -> (function, caption), in report order."""


FRONTIER_CAPTION = (
    "Mitigations against plain LoRA's line: forgetting against fine-tuning loss, plain LoRA's points (grey; "
    "plainly trained runs' own points) and its fitted line (solid over their range, dashed beyond), "
    "each mitigation in its colour, one marker per strength. Below the line: less forgetting at equal "
    "fine-tuning loss. Steps below fit.min_step are left out."
)
MITIGATION_COLOURS = {"replay": "tab:blue", "kl": "tab:orange", "rescale": "tab:green", "intruders": "tab:red"}


def frontier_figure(frontier: Mapping[str, Any]) -> Any:
    """Plain LoRA's points and line with every mitigated point (:func:`forgetscale.results.compare` output).

    Returns:
        A Figure with one panel per dataset that has a line.
    """
    lines = frontier.get("lines") or {}
    fig, axes = _panels(len(lines))
    if not lines:
        return _empty(fig, axes, "no mitigated runs to compare")
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
                           label=f"{kind} {_g(strength, 3)}")
        _decorate(ax, ds, LABELS["ft_loss"], LABELS["forget_ce"])
        _legend(ax)
    return fig


def all_figures(rows: Rows, fits: Fits) -> dict[str, Any]:
    """Every figure of :data:`FIGURES`, by name."""
    return {name: fn(rows, fits) for name, (fn, _) in FIGURES.items()}


# ---------------------------------------------------------------------------- helpers

def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _by_dataset(rows: Rows, need: Sequence[str]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if _ok(r.get("step")) and all(_ok(r.get(k)) for k in need):
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


def _predict(fit: Any, x: Mapping[str, Any], target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, lo, hi)`` of one target; intervals are NaN without bootstrap samples."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # a bootstrap replicate may overflow far from the data; nanpercentile warns on all-NaN columns
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = fit.predict(x)
    i = fit.targets.index(target)
    return mean[i], lo[i], hi[i]


def _band(ax: Any, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: Any) -> None:
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() >= 2:
        ax.fill_between(np.asarray(x)[ok], lo[ok], hi[ok], color=colour, alpha=0.15, lw=0, zorder=1)


def _panels(n: int, nrows: int = 1, square: bool = False) -> tuple[Any, list[list[Any]]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(n, 1)
    w, h = (PANEL[1] + 0.4, PANEL[1]) if square else PANEL
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas of its own: no pyplot, no global figure manager
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [list(row) for row in axes]


def _empty(fig: Any, axes: list[list[Any]], why: str) -> Any:
    for row in axes:
        for ax in row:
            ax.set_axis_off()
    axes[0][0].text(0.5, 0.5, why, ha="center", va="center", transform=axes[0][0].transAxes, color="grey")
    return fig


def _no_fit(ax: Any) -> None:
    ax.text(0.97, 0.04, "no fit", ha="right", va="bottom", transform=ax.transAxes, color="crimson",
            fontsize=9, zorder=5)


def _note(ax: Any, text: str) -> None:
    ax.text(0.97, 0.04, text, ha="right", va="bottom", transform=ax.transAxes, fontsize=7.5, color="#333",
            parse_math=False, zorder=5, bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none",
                                              "alpha": 0.8})


def _log_steps(ax: Any) -> None:
    """A log axis for steps with plain-number ticks at powers of 2 (10 beyond three decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.dataLim.intervalx
    base = 2 if math.isfinite(lo) and lo > 0 and hi / lo < 1e3 else 10
    ax.xaxis.set_major_locator(LogLocator(base=base))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _decorate(ax: Any, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
    if title is not None:
        ax.set_title(title, parse_math=False, fontsize=10)  # a dataset name is data: never mathtext
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):  # 5.9843, not 0.0003 with "+5.984" in the corner
        formatter = axis.get_major_formatter()
        if isinstance(formatter, ScalarFormatter):
            formatter.set_useOffset(False)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", alpha=0.25, lw=0.6)


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=True):
        seen.setdefault(lab, h)
    leg = ax.legend(list(seen.values()), list(seen), fontsize=7, loc="best", framealpha=0.85)
    for t in leg.get_texts():
        t.set_parse_math(False)


def _g(v: float, digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"
