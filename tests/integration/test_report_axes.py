"""The report's figures stay readable when a law is undecided: axes fit the points, laws are cut and marked.

The store is shaped like the default study (4 ranks x 2 data orders, steps 0, 8, 12, 16, 24, 32,
fit.min_step 8, forgetting between about 2.0 and 2.6 nats, a step shock shared within a data order),
so its (P, N) laws for forgetting are undecided and their bands wide; the linear law is drawn down to
step 0, beyond the points it was fitted on. A second check makes every band explode (1e8 nats wide,
as a law's band did beyond the data) and asks that the scale still follows the points.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from forgetscale.cli import main
from forgetscale.report.panels import BEYOND

STEPS = (0, 8, 12, 16, 24, 32)
RANKS = (1, 4, 16, 64)
PER_RANK = 305_000
BASE = 2.02
SHARE = 0.8  # the points must span at least this share of every axis (margins are 6% a side: 0.89)


def build_default_like(directory: Path) -> Path:
    """A fitted store shaped like the default study (see the module docstring)."""
    from forgetscale.store import open_store

    rng = np.random.default_rng(7)
    shock = {seed: {n: 0.05 * rng.standard_normal() for n in STEPS} for seed in (0, 1)}
    ids = []
    with open_store(directory) as store:
        for seed in (0, 1):
            for rank in RANKS:
                rid = f"news-r{rank}-s{seed}"
                store.register_run(rid, {"rank": rank, "data": {"dataset": "news", "seed": 0},
                                         "train": {"seed": seed}}, "news", rank)  # fmt: skip
                store.start_run(rid, rank * PER_RANK, {"device": "cpu"})
                level = 0.03 * rng.standard_normal()
                for n in STEPS:
                    ft = 2.9 if n == 0 else 1.05 + 0.9 * (n / 8) ** -0.35 + 0.01 * rng.standard_normal()
                    kl = 0.0 if n == 0 else 0.25 + 0.008 * n + 0.02 * math.log(rank) + level + shock[seed][n]
                    store.add_measurement(rid, {"step": n, "tokens": n * 384, "ft_loss": ft, "forget_ce": BASE + kl,
                                                "forget_kl": kl, "base_entropy": BASE, "n_eval_tokens": 2048})
                store.finish_run(rid, {"total": 100.0 * rank})
                ids.append(rid)
        store.set_meta("run_ids", ids)
        store.set_meta("study", {"name": "default-like", "fit": {"n_boot": 20, "min_step": 8},
                                 "sweep": {"lora.rank": list(RANKS), "train.seed": [0, 1]}})
    assert main(["fit", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    from forgetscale.report.data import gather

    return gather(build_default_like(tmp_path_factory.mktemp("axes") / "study"))


def _points(ax) -> np.ndarray:
    """Every scatter point of a panel, ``(n, 2)``."""
    from matplotlib.collections import PathCollection

    pts = [np.asarray(c.get_offsets(), float) for c in ax.collections if isinstance(c, PathCollection)]
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _share(values: np.ndarray, lim: tuple[float, float], log: bool) -> float:
    """How much of the axis ``lim`` the values span (in log units on a log axis)."""
    f = np.log10 if log else (lambda v: v)
    lo, hi = f(np.asarray(lim, float))
    return float((f(values.max()) - f(values.min())) / (hi - lo))


def _check_axes(fig, name: str, law_x: float | None = None) -> None:
    """Every panel with points: they lie inside the axes and span at least SHARE of each (the params
    figure's x axis also holds the law's extrapolation to ``law_x``; observed against predicted shares
    one scale between its axes)."""
    from matplotlib.collections import PolyCollection

    for ax in fig.axes:
        pts = _points(ax)
        if not len(pts):
            continue
        for i, (lim, log) in enumerate(((ax.get_xlim(), ax.get_xscale() == "log"),
                                        (ax.get_ylim(), ax.get_yscale() == "log"))):  # fmt: skip
            v = pts[:, i]
            assert lim[0] <= v.min() and v.max() <= lim[1], (name, i, lim, v.min(), v.max())
            if name == "observed_vs_predicted":  # one scale for both axes, so the diagonal reads true
                v = pts.ravel()
            if i == 0 and law_x is not None:  # the x axis holds the points and the law up to law_x
                assert lim[1] >= law_x, (name, lim, law_x)
                v = np.append(v, law_x)
            assert _share(v, lim, log) >= SHARE, (name, "xy"[i], lim, v.min(), v.max())
        span = ax.get_ylim()[1] - ax.get_ylim()[0]
        for band in (c for c in ax.collections if isinstance(c, PolyCollection)):
            for path in band.get_paths():  # cut near the axes: no 1e8 coordinates in the SVG
                y = path.vertices[:, 1]
                if ax.get_yscale() == "log":
                    y, span = np.log10(y), math.log10(ax.get_ylim()[1] / ax.get_ylim()[0])
                    lo, hi = np.log10(ax.get_ylim())
                else:
                    lo, hi = ax.get_ylim()
                assert np.all((y >= lo - 1.01 * span) & (y <= hi + 1.01 * span)), (name, y.min(), y.max())


def test_axes_fit_the_points_of_an_undecided_study(data):
    from forgetscale.report import figures

    p_max = max(r["P"] for r in data.rows)
    for name, fig in figures.all_figures(data.rows, data.fits).items():
        _check_axes(fig, name, law_x=4 * p_max if name == "params" else None)


def test_axes_fit_the_points_when_every_band_explodes(data, monkeypatch: pytest.MonkeyPatch):
    from forgetscale.laws import FitResult
    from forgetscale.report import figures

    real = FitResult.predict

    def exploding(self, x, *args, **kwargs):
        mean, _, _ = real(self, x, *args, **kwargs)
        return mean, mean - 1e8, mean + 1e8  # a band like the undecided law's beyond the data

    monkeypatch.setattr(FitResult, "predict", exploding)
    p_max = max(r["P"] for r in data.rows)
    drawn = figures.all_figures(data.rows, data.fits)
    from matplotlib.collections import PolyCollection

    bands = [c for fig in drawn.values() for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) >= 10, "the exploding bands are drawn (and cut), not dropped"
    for name, fig in drawn.items():
        _check_axes(fig, name, law_x=4 * p_max if name == "params" else None)


def _styles(ax) -> dict[str, list[np.ndarray]]:
    """x data of a panel's non-empty law lines by line style ('-' or '--'), finite parts only."""
    out: dict[str, list[np.ndarray]] = {"-": [], "--": []}
    for line in ax.lines:
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        ok = np.isfinite(y)
        if ok.sum() >= 2 and line.get_linestyle() in out and line.get_label() != "step 0":
            out[line.get_linestyle()].append(x[ok])
    return out


def test_laws_are_dashed_beyond_the_points_they_were_fitted_on(data):
    from forgetscale.laws import FitResult
    from forgetscale.report import figures

    linear = FitResult.from_dict(data.fits["news"]["linear"])
    lo, hi = linear.domain["ft_loss"]
    fig = figures.forgetting_vs_ft_loss(data.rows, data.fits)
    ax = fig.axes[0]
    styles = _styles(ax)
    step0 = max(r["ft_loss"] for r in data.rows if r["step"] == 0)
    assert step0 > hi  # the base model's loss: above every fitted point's
    assert styles["-"] and all(lo - 1e-9 <= x.min() and x.max() <= hi + 1e-9 for x in styles["-"])
    assert styles["--"] and max(x.max() for x in styles["--"]) == pytest.approx(step0)
    assert all(x.min() >= hi - 1e-9 for x in styles["--"])  # dashed only beyond the fitted range
    assert BEYOND in [t.get_text() for t in ax.get_legend().get_texts()]

    fig = figures.forgetting_vs_params(data.rows, data.fits)
    styles = _styles(fig.axes[0])
    p_max = max(r["P"] for r in data.rows)
    assert styles["--"] and all(x.min() >= p_max * (1 - 1e-9) for x in styles["--"])
    assert max(x.max() for x in styles["--"]) == pytest.approx(4 * p_max)
    assert styles["-"] and all(x.max() <= p_max * (1 + 1e-9) for x in styles["-"])


def test_step_zero_off_the_points_is_noted_not_drawn(data):
    from forgetscale.report import figures

    fig = figures.steps_curves(data.rows, data.fits)
    ft_panel = fig.axes[1]  # fine-tuning loss: the base model's 2.9 lies far above every later point
    notes = " ".join(t.get_text() for t in ft_panel.texts)
    assert "step 0: 2.9 (above the axis)" in notes
    assert not [line for line in ft_panel.lines if line.get_label() == "step 0"]


def test_a_panels_note_and_legend_never_overlap(data):
    """Each panel's note (its law, a step-0 value off the axis) and its legend take different corners: a legend
    placed where it avoids only the data covered the note's text in the forgetting-against-steps panel."""
    from forgetscale.report import figures
    from forgetscale.report.panels import NOTE

    both = 0
    for name, fig in figures.all_figures(data.rows, data.fits).items():
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend, note = ax.get_legend(), next((t for t in ax.texts if t.get_label() == NOTE), None)
            if legend is None or note is None:
                continue
            both += 1
            a, b = legend.get_window_extent(renderer), note.get_window_extent(renderer)
            assert not a.overlaps(b), (name, a, b)
    assert both >= 2  # the forgetting-against-steps and KL panels carry both


@pytest.mark.parametrize("lim", [(1.23e6, 1.51e6), (57_000, 58_200), (8.0, 32.0)])
def test_a_narrow_log_axis_gets_a_few_distinct_readable_labels(lim):
    """One method's single P spans a few percent: every minor tick labelled gave overlapping 1.34e+06 1.35e+06 ..."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from forgetscale.report import panels as pn

    fig, ax = plt.subplots(figsize=(3.2, 2.4))
    ax.set_xscale("log")
    ax.set_xlim(*lim)
    pn.plain_log(ax.xaxis, lim)
    fig.canvas.draw()
    labels = ax.xaxis.get_ticklabels(which="both")
    shown = [t for t in labels if t.get_text() and lim[0] <= t.get_position()[0] <= lim[1]]
    texts = [t.get_text() for t in shown]
    assert 2 <= len(texts) <= 5 and len(set(texts)) == len(texts), texts
    boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), texts  # no two labels overlap
    plt.close(fig)
