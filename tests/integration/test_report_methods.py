"""The report names the interval method the fits used, read from their own records, in HTML and Markdown.

Each stored fit records how its parameter intervals were made (``inference``) and how its prediction
intervals, the figures' bands, were made (``calibration``). The report must quote those records: change
a record and the rendered text follows; a fit without one is named, not given a method.
"""

from __future__ import annotations

import copy
import dataclasses
import html as html_lib
import re
from pathlib import Path

import pytest

from tests.helpers import build_study

MADE_UP = "leave-two-out sandwich made up for this test"
MADE_UP_BAND = "80% band made up for this test: a formula"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    from forgetscale.report.data import gather

    return gather(build_study(tmp_path_factory.mktemp("methods") / "study"))


def _render(data, fits=None) -> tuple[str, str, dict[str, str]]:
    """``(html header + captions as text, markdown, captions)`` of the report with ``fits`` in place of its own."""
    from forgetscale.report import figures
    from forgetscale.report.html import render_html
    from forgetscale.report.markdown import render_markdown

    d = data if fits is None else dataclasses.replace(data, fits=fits)
    caps = figures.captions(d.fits)
    page = render_html(d, {}, caps)
    header = re.search(r"<header>(.*?)</header>", page, re.S).group(1)
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", header))
    md = render_markdown(d, {}, caps)
    return " ".join(text.split()), md, caps


def _records(fits, key: str) -> list[dict]:
    return [f[key] for by_label in fits.values() for f in by_label.values() if f.get(key)]


def test_default_wording_is_the_fits_own_and_names_the_cluster_robust_variance(data):
    from forgetscale.report.figures import FIGURES

    header, md, caps = _render(data)
    methods = {r["method"] for r in _records(data.fits, "inference")}
    assert methods, "the fitted study records its parameter-interval method"
    for method in methods:
        assert method in header and method in md  # quoted, not paraphrased
    assert "cluster-robust" in header and "cluster-robust" in md
    bands = {r["method"].split(":")[0] for r in _records(data.fits, "calibration")}
    assert bands and all(b in header for b in bands)
    for name, caption in caps.items():
        assert "bootstrap" not in caption.lower(), name
        if "{band}" in FIGURES.get(name, (None, ""))[1]:
            assert any(b in caption for b in bands), name
    assert "bootstrap" not in header.lower()
    intro = md.split("## Summary")[0]
    assert "bootstrap" not in intro.lower() and "cluster-robust" in intro


def test_rendered_text_follows_a_changed_record(data):
    fits = copy.deepcopy(data.fits)
    original = {r["method"] for r in _records(fits, "inference")}
    original_band = {r["method"].split(":")[0] for r in _records(fits, "calibration")}
    for rec in _records(fits, "inference"):
        rec.update(method=MADE_UP, level=0.9, units=7, n_cells=11)
    for rec in _records(fits, "calibration"):
        rec["method"] = MADE_UP_BAND
    header, md, caps = _render(data, fits)
    for text in (header, md):
        assert f"90% {MADE_UP}" in text and "over 7 runs and 11 (data order, step) cells" in text
        assert MADE_UP_BAND in text
        assert not any(m in text for m in original), "the old method is gone with its record"
    assert all(b not in header for b in original_band)
    banded = [c for c in caps.values() if "shaded" in c]
    assert len(banded) >= 3 and all("80% band made up for this test" in c for c in banded)
    assert not any(b in c for c in caps.values() for b in original_band)


def test_a_fit_without_a_record_is_named_not_given_a_method(data):
    fits = copy.deepcopy(data.fits)
    ds = next(iter(fits))
    label = next(iter(fits[ds]))
    del fits[ds][label]["inference"]
    header, md, _ = _render(data, fits)
    for text in (header, md.replace("\\", "")):
        assert f"Parameter intervals of {ds} · {label}: the fit records no method" in text
        others = [k for k in fits[ds] if k != label]
        assert others and all(f"{ds} · {k}" in text for k in others)  # the rest keep their stated method
        assert "cluster-robust" in text


def test_written_report_states_the_method(data, tmp_path: Path):
    """Through the command: the files a reader opens quote the recorded methods, and no caption says bootstrap."""
    from forgetscale.cli import main

    assert main(["report", data.directory, "--out", str(tmp_path / "r.html")]) == 0
    assert main(["report", data.directory, "--format", "md", "--out", str(tmp_path / "r.md")]) == 0
    page = html_lib.unescape((tmp_path / "r.html").read_text(encoding="utf-8"))
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)
    assert len(captions) == 5 and not any("bootstrap" in c.lower() for c in captions)
    bands = {r["method"].split(":")[0] for r in _records(data.fits, "calibration")}
    assert sum(any(b in c for b in bands) for c in captions) == 4  # every figure with a band
    for rec in _records(data.fits, "inference"):
        assert rec["method"] in page and rec["method"] in md
