"""The study report on a synthetic store: figures, a self-contained escaped HTML page, Markdown, bad input.

The store holds runs measured from a known law, fits made by `forgetscale fit`,
a dataset added after the fit (so it has no fits), a failed run, probe results,
and hostile strings planted in a dataset name, a run error, the config and a
generation (``tests.helpers.build_study``, which the browser test also reads).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import HOSTILE, PER_RANK, SCRIPT, SECTIONS, STEPS, build_study, truth


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_study(tmp_path_factory.mktemp("report") / "study")


@pytest.fixture(scope="module")
def html(study: Path) -> str:
    assert main(["report", str(study)]) == 0
    return (study / "report.html").read_text(encoding="utf-8")


def test_figures_draw_data_and_tolerate_missing_fits_and_data(study: Path):
    from matplotlib.figure import Figure

    from forgetscale.report import figures
    from forgetscale.report.data import gather

    data = gather(study)
    drawn = figures.all_figures(data.rows, data.fits)
    assert list(drawn) == list(figures.FIGURES)
    for name, fig in drawn.items():
        assert isinstance(fig, Figure), name
        assert any(ax.has_data() for ax in fig.axes), f"{name}: no data drawn"
        texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "no fit" in texts, f"{name}: the hostile dataset has no fit, and the figure should say so"
    for name, (fn, _) in figures.FIGURES.items():
        fig = fn(data.rows, {})  # no fits at all: data only (observed vs predicted has nothing to draw)
        assert any(ax.has_data() for ax in fig.axes) or name == "observed_vs_predicted", name
        assert "no fit" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts), name
        empty = fn([], {})
        assert isinstance(empty, Figure) and not any(ax.has_data() for ax in empty.axes), name


def test_headline_numbers(study: Path):
    from forgetscale.report.data import gather

    data = gather(study)
    assert data.datasets == sorted(["news", HOSTILE])
    news = next(h for h in data.headlines if h.dataset == "news")
    assert news.linear["c_fft"]["value"] == pytest.approx(0.8, rel=0.05)
    assert news.linear["s_fft"]["value"] == pytest.approx(4.0, rel=0.05)
    assert news.linear["c_fft"]["lo"] <= news.linear["c_fft"]["value"] <= news.linear["c_fft"]["hi"]
    assert {law["target"] for law in news.laws} == {"ft_loss", "forget_ce", "forget_kl"}
    assert [p["rank"] for p in news.predictions] == [8, 16, 32]
    assert all(p["N"] == STEPS[-1] for p in news.predictions)
    ft, forget, _ = truth(8 * PER_RANK, STEPS[-1])
    assert news.predictions[0]["ft_loss"]["value"] == pytest.approx(ft, rel=0.03)
    assert news.predictions[0]["forget_ce"]["value"] == pytest.approx(forget, rel=0.03)
    assert news.plan is not None or news.plan_error
    if news.plan is not None:
        assert news.plan["forget_ce"]["hi"] <= news.budget
    hostile = next(h for h in data.headlines if h.dataset == HOSTILE)
    assert hostile.linear is None and not hostile.predictions and "no fits" in hostile.prediction_error
    assert {r["status"] for r in data.runs} == {"done", "failed"}
    assert {p["probe"] for p in data.probes} == {"knowledge", "safety"}
    knowledge = next(s for s in data.samples if s["probe"] == "knowledge")
    assert knowledge["run_id"] == "news-r8" and knowledge["items"][0]["agree"] is False  # changed answers first


def test_html_is_self_contained_and_ordered(html: str):
    low = html.lower()
    assert "http://" not in low and "https://" not in low
    assert "<link" not in low and "<script" not in low and "<iframe" not in low and "@import" not in low
    assert "url(" not in low.replace("url(#", "")  # only references inside an SVG
    tags = _tags(html)
    assert not {t for t, _ in tags} & {"script", "link", "iframe", "img", "object", "embed", "base", "image"}
    refs = [v for _, attrs in tags for k, v in attrs if k in ("src", "href", "xlink:href", "action", "srcset")]
    assert refs and all(v.startswith("#") for v in refs), [v for v in refs if not v.startswith("#")]
    positions = [html.find(f'id="{s}"') for s in SECTIONS]
    assert all(p > 0 for p in positions), dict(zip(SECTIONS, positions, strict=True))
    assert positions == sorted(positions)
    assert html.count("<svg") == 5 and "could not be drawn" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids are unique across the inline SVGs"
    assert "Linear law" in html and "Predictions at N = 32 steps" in html and "4x the largest rank" in html


def _tags(html: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every start tag of the page with its attributes, as a browser's parser sees them."""
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[tuple[str, list[tuple[str, str]]]] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, [(k, v or "") for k, v in attrs]))

    parser = Collect()
    parser.feed(html)
    return parser.tags


def test_html_escapes_every_planted_string(html: str):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the dataset name, shown
    assert "alert(1)</script>" not in html
    assert "&lt;img src=x onerror=" in html and "<img" not in html  # the run error and the generation
    assert "{{ d }}" in html  # jinja syntax in data is shown, not evaluated
    assert "&lt;script&gt;window.__pwned=1;document.title=&#39;pwned&#39;&lt;/script&gt;" in html


def test_matplotlib_escapes_text_in_svg_and_report_strips_it():
    import io

    from matplotlib.figure import Figure

    from forgetscale.report.html import inline_svg

    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2], [1, 2], label=SCRIPT)
    ax.set_title(SCRIPT, parse_math=False)
    ax.legend()
    raw = io.StringIO()
    fig.savefig(raw, format="svg")
    assert "<script" not in raw.getvalue() and "&lt;script&gt;" in raw.getvalue()  # as an escaped comment
    svg = inline_svg(fig, "t")
    assert svg.startswith("<svg") and "script" not in svg and "<!--" not in svg and "http" not in svg


def test_markdown(study: Path, capsys):
    assert main(["report", str(study), "--format", "md"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == study / "report.md"
    md = path.read_text(encoding="utf-8")
    for heading in ("## Summary", "## Figures", "## Fitted laws", "## Law comparison", "## Runs",
                    "## Behaviour probes", "## Sample generations", "## Study config", "## Provenance"):  # fmt: skip
        assert heading in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5 and all((study / link).is_file() for link in links)
    assert all((study / link).read_text().lstrip().startswith("<svg") for link in links)
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_out_option_and_atomic_write(study: Path, tmp_path: Path, capsys):
    dest = tmp_path / "elsewhere.html"
    assert main(["report", str(study), "--out", str(dest)]) == 0
    assert dest.is_file() and dest.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert main(["report", str(study), "--out", str(tmp_path / "nope" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_store_exits_2(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("forgetscale: error:") and "no study.sqlite" in err and "\n" not in err
    assert not (tmp_path / "missing").exists()


def test_help_imports_neither_matplotlib_nor_torch():
    code = (
        "import sys\nfrom forgetscale.cli import _parser\n_parser()\n"
        "heavy = [m for m in ('matplotlib', 'torch', 'jinja2') if m in sys.modules]\nassert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
