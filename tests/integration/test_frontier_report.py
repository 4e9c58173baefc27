"""The mitigations' frontier on a synthetic store: `forgetscale compare` and the report section.

``tests.helpers.build_mitigation_study`` (also read by the browser test) adds to ``build_study``'s store
runs with a known offset from the plain line: KL-to-base below it, replay on it, and a ``rescale``
run whose scaled rows lie above it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetscale.cli import main
from forgetscale.store import open_store
from tests.helpers import INTRUDERS_OFFSET, RANKS, RESCALE_OFFSET, build_mitigation_study, build_study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mitigation_study(tmp_path_factory.mktemp("frontier") / "study")


def test_compare_recovers_the_planted_offsets(study: Path, capsys):
    capsys.readouterr()
    assert main(["compare", str(study), "--json"]) == 0
    rows = {(r["mitigation"], r["strength"]): r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {("kl", 2.0), ("replay", 0.1), ("rescale", 0.5), ("intruders", 0.0)}
    kl, replay, rescale = rows[("kl", 2.0)], rows[("replay", 0.1)], rows[("rescale", 0.5)]
    intruders = rows[("intruders", 0.0)]  # paired with each run's own points: the planted offset, below the line
    assert intruders["verdict"] == "beats_line" and intruders["residual"] == pytest.approx(INTRUDERS_OFFSET, abs=0.01)
    assert kl["verdict"] == "beats_line" and kl["residual"] == pytest.approx(-0.05, abs=0.01)
    assert replay["verdict"] == "on_line" and abs(replay["residual"]) < 0.01
    assert rescale["verdict"] == "worse" and rescale["residual"] == pytest.approx(RESCALE_OFFSET, abs=0.01)
    assert rescale["n_points"] == len(RANKS) and kl["n_runs"] == len(RANKS)
    for r in rows.values():
        assert r["lo"] <= r["residual"] <= r["hi"] and r["dataset"] == "news"
    # the plain fits never saw the mitigated runs nor the scaled rows
    with open_store(study) as store:
        from forgetscale.results import study_rows

        assert not any("-kl-" in r["run_id"] or "-replay-" in r["run_id"] for r in study_rows(store))
        assert all("strength" not in r for r in study_rows(store, mitigated=True))


def test_compare_without_mitigations_says_what_to_do(tmp_path: Path, capsys):
    build_study(tmp_path / "plain")
    assert main(["compare", str(tmp_path / "plain")]) == 2
    assert "mitigation.kind" in capsys.readouterr().err


def test_report_has_the_mitigations_section(study: Path):
    assert main(["report", str(study)]) == 0
    html = (study / "report.html").read_text(encoding="utf-8")
    assert 'id="mitigations"' in html and 'id="figure-frontier"' in html
    assert html.find('id="comparison"') < html.find('id="mitigations"') < html.find('id="runs"')
    assert "beats line" in html and "<svg" in html[html.find('id="figure-frontier"'):]
    assert main(["report", str(study), "--format", "md"]) == 0
    md = (study / "report.md").read_text(encoding="utf-8")
    assert "## Mitigations against plain LoRA's line" in md and "report_figures/frontier.svg" in md
    assert (study / "report_figures" / "frontier.svg").is_file()
