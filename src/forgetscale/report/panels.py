"""Drawing one panel of a report figure: axes fitted to the points, a law cut and marked, a note, a legend.

The figures (:mod:`~forgetscale.report.figures`) decide what to draw; these helpers decide how, the same
way in every figure. Axes fit the measured points with :data:`MARGIN` on each side, never a law: a band
that explodes where a law is undecided, or beyond the data, would otherwise set the scale and flatten
the points into a line. A law's curve and band are cut near the axes (so the SVG holds no coordinates
like 1e190) and drawn dashed over a lighter band beyond the range of the points it was fitted on
(``FitResult.domain``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

PANEL = (4.6, 3.4)  # inches per panel
MARGIN = 0.06  # of the points' span (in log units on a log axis), on each side
BEYOND = "law beyond its fitted data"  # legend label of the dashed parts
NOTE = "_note"  # label of a panel's note box (a leading underscore: never in a legend)


def finite(v: Any) -> bool:
    """A real, finite number (not a bool, not None)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def predict(fit: Any, x: Mapping[str, Any], target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, lo, hi)`` of one target: the law and its prediction interval (NaN where the fit has none)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # far from the data a law or its interval may overflow; a NaN there is drawn as a gap, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = fit.predict(x)
    i = fit.targets.index(target)
    return mean[i], lo[i], hi[i]


def span(values: Iterable[Any], log: bool = False) -> tuple[float, float] | None:
    """Axis limits that hold ``values`` with :data:`MARGIN` on each side; None without a finite value.

    Example:
        >>> span([2.0, 2.5]), span([1.0, 100.0], log=True)
        ((1.97, 2.53), (0.7585775750291838, 131.82567385564073))
    """
    v = np.array([x for x in values if finite(x) and (x > 0 or not log)], float)
    if not v.size:
        return None
    if log:
        v = np.log10(v)
    lo, hi = float(v.min()), float(v.max())
    width = hi - lo or (0.2 if log else abs(lo) * 0.1 or 1.0)  # one value: a window around it
    lo, hi = lo - MARGIN * width, hi + MARGIN * width
    return (10**lo, 10**hi) if log else (lo, hi)


def step_zero(ax: Any, value: float, ylim: tuple[float, float] | None) -> None:
    """Step 0's value: a dashed line when it lies within the points' range, else a note at that edge.

    Step 0 has no place on a log step axis, and stretching the axis to it (the base model's fine-tuning
    loss is often far above every later point) would flatten the points the laws describe.
    """
    if ylim is None or ylim[0] <= value <= ylim[1]:
        ax.axhline(value, color="grey", ls="--", lw=0.9, label="step 0")
        return
    note(ax, f"step 0: {fmt_g(value, 4)} ({'above' if value > ylim[1] else 'below'} the axis)")


def set_limits(ax: Any, xlim: tuple[float, float] | None, ylim: tuple[float, float] | None) -> None:
    """Fit the axes to the points (:func:`span`), then move the note where it hides least."""
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    settle(ax)


def draw_law(ax: Any, fit: Any, along: str, grid: np.ndarray, fixed: Mapping[str, float], target: str, colour: Any,
         ylim: tuple[float, float] | None, log_y: bool = False, lw: float = 1.2, zorder: int = 2,
         label: str | None = None, shade: float = 0.15) -> None:
    """A law's mean and band along one input, the others ``fixed``: solid over the domain it was fitted on,
    dashed over a lighter band beyond it; values clipped to a window around ``ylim``."""
    lo_d, hi_d = fit.domain.get(along, (-math.inf, math.inf))
    grid = np.unique(np.concatenate([grid, [b for b in (lo_d, hi_d) if grid.min() < b < grid.max()]]))
    x = {along: grid, **{k: np.full_like(grid, v) for k, v in fixed.items()}}
    mean, lo, hi = (clip(v, ylim, log_y) for v in predict(fit, x, target))
    tol = 1e-9 * max(abs(lo_d), abs(hi_d), 1.0) if math.isfinite(lo_d) and math.isfinite(hi_d) else 0.0
    fixed_in = all(fit.domain.get(k, (v, v))[0] - tol <= v <= fit.domain.get(k, (v, v))[1] + tol
                   for k, v in fixed.items())
    inside = (grid >= lo_d - tol) & (grid <= hi_d + tol) & fixed_in
    # beyond: each side on its own (NaN elsewhere breaks the line), sharing the boundary point with the inside
    sides = [grid <= lo_d + tol, grid >= hi_d - tol] if fixed_in else [np.ones_like(grid, bool)]
    parts = [(inside, "-", shade, 1.0, label)] + [(m, "--", shade / 2.5, 0.75, BEYOND) for m in sides if m.sum() >= 2]
    for mask, style, shade, alpha, name in parts:
        if mask.sum() < 1:
            continue
        ax.plot(grid, np.where(mask, mean, np.nan), color=colour, lw=lw, ls=style, alpha=alpha, zorder=zorder,
                label=name)
        ok = mask & np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() >= 2:
            ax.fill_between(grid, lo, hi, where=ok, color=colour, alpha=shade, lw=0, zorder=1)


def clip(v: np.ndarray, lim: tuple[float, float] | None, log: bool) -> np.ndarray:
    """``v`` cut to the axis window widened by its own width each side (log units on a log axis).

    The axes clip what lies outside anyway; cutting the values too keeps the SVG free of coordinates like
    1e190, which an exploding band otherwise writes into the path.
    """
    if lim is None:
        return v
    a, b = (math.log10(lim[0]), math.log10(lim[1])) if log else lim
    w = b - a
    with np.errstate(all="ignore"):
        if log:
            return np.where(v > 0, 10 ** np.clip(np.log10(np.where(v > 0, v, 1.0)), a - w, b + w), np.nan)
        return np.clip(v, a - w, b + w)


def new_panels(n: int, nrows: int = 1, square: bool = False) -> tuple[Any, list[list[Any]]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(n, 1)
    w, h = (PANEL[1] + 0.4, PANEL[1]) if square else PANEL
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas of its own: no pyplot, no global figure manager
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [list(row) for row in axes]


def empty(fig: Any, axes: list[list[Any]], why: str) -> Any:
    for row in axes:
        for ax in row:
            ax.set_axis_off()
    axes[0][0].text(0.5, 0.5, why, ha="center", va="center", transform=axes[0][0].transAxes, color="grey")
    return fig


def no_fit(ax: Any) -> None:
    note(ax, "no fit", colour="crimson")


def note(ax: Any, text: str, colour: str = "#333") -> None:
    """The panel's one note box (a second note joins the first); :func:`set_limits` moves it to a free corner."""
    for t in ax.texts:
        if t.get_label() == NOTE:
            t.set_text(f"{t.get_text()}\n{text}")
            return
    ax.text(0.97, 0.04, text, ha="right", va="bottom", transform=ax.transAxes, fontsize=7.5, color=colour,
            parse_math=False, zorder=5, label=NOTE,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none", "alpha": 0.8})


CORNERS = ((0.97, 0.04, "right", "bottom"), (0.97, 0.96, "right", "top"),
           (0.03, 0.04, "left", "bottom"), (0.03, 0.96, "left", "top"))  # fmt: skip
"""The corners a note or a legend may take, as (x, y, ha, va) in axes fractions."""
_LEGEND_LOC = {("right", "bottom"): "lower right", ("right", "top"): "upper right",
               ("left", "bottom"): "lower left", ("left", "top"): "upper left"}  # fmt: skip


def crowding(ax: Any) -> list[tuple[float, tuple[float, float, str, str]]]:
    """Each corner with what is drawn there (points, and curves at a tenth of the weight), emptiest first."""
    from matplotlib.collections import PathCollection

    to_axes = ax.transData + ax.transAxes.inverted()
    xy = [np.asarray(c.get_offsets(), float) for c in ax.collections if isinstance(c, PathCollection)]
    weights = [np.ones(len(a)) for a in xy]
    for line in ax.lines:
        d = np.column_stack([np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)])
        xy.append(d)
        weights.append(np.full(len(d), 0.1))
    pts = np.concatenate(xy) if xy else np.zeros((0, 2))
    w = np.concatenate(weights) if weights else np.zeros(0)
    ok = np.all(np.isfinite(pts), axis=1)
    with np.errstate(all="ignore"):
        frac = to_axes.transform(pts[ok]) if ok.any() else np.zeros((0, 2))
    w = w[ok]
    out = []
    for corner in CORNERS:
        _, _, ha, va = corner
        in_x = frac[:, 0] >= 0.5 if ha == "right" else frac[:, 0] <= 0.5
        in_y = frac[:, 1] <= 0.3 if va == "bottom" else frac[:, 1] >= 0.7
        out.append((float(np.sum(w[in_x & in_y])), corner))
    return sorted(out, key=lambda c: c[0])  # stable: ties keep CORNERS' order


def settle(ax: Any) -> None:
    """Put the note in the corner with the least drawn there."""
    note = next((t for t in ax.texts if t.get_label() == NOTE), None)
    if note is None:
        return
    x, y, ha, va = crowding(ax)[0][1]
    note.set_position((x, y))
    note.set_horizontalalignment(ha)
    note.set_verticalalignment(va)


def log_steps(ax: Any) -> None:
    """A log axis for steps with plain-number ticks at powers of 2 (10 beyond three decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.dataLim.intervalx
    base = 2 if math.isfinite(lo) and lo > 0 and hi / lo < 1e3 else 10
    ax.xaxis.set_major_locator(LogLocator(base=base))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plain_log(axis: Any, lim: tuple[float, float] | None) -> None:
    """Within one decade, a few plain numbers on a log axis (0.4 0.6 0.8, not 4x10^-1 or none).

    At most about four labelled ticks, three significant digits each: a narrow range (one method's single P,
    1.37e6 give or take 10%) labelled at every minor tick gave a row of overlapping 1.34e+06 1.35e+06 ...
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator

    if lim is not None and lim[1] / lim[0] < 10:
        axis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())


def decorate(ax: Any, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
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


def legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=True):
        seen.setdefault(lab, h)
    if BEYOND in seen:  # one neutral entry for every law's dashed part, whatever its colour
        from matplotlib.lines import Line2D

        seen[BEYOND] = Line2D([], [], color="0.35", lw=1.2, ls="--")
        seen[BEYOND] = seen.pop(BEYOND)  # listed last
    # the emptiest corner the note has not taken: a legend placed by "best" avoids the data but not the note
    note = next((t for t in ax.texts if t.get_label() == NOTE), None)
    taken = None if note is None else (note.get_horizontalalignment(), note.get_verticalalignment())
    free = [c for _, c in crowding(ax) if (c[2], c[3]) != taken]
    leg = ax.legend(list(seen.values()), list(seen), fontsize=7, loc=_LEGEND_LOC[free[0][2], free[0][3]],
                    framealpha=0.85)  # fmt: skip
    for t in leg.get_texts():
        t.set_parse_math(False)


def fmt_g(v: float, digits: int = 4) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"
