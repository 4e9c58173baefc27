"""The benchmark's study-side pieces on a tiny finished study (timings are not asserted, only structure
and the top-K lower bound, which must hold on every adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetscale.cli import main


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    from tests.conftest import TINY_STUDY

    out = tmp_path_factory.mktemp("bench-study")
    args = [a for o in [f"model.name={tiny_model}", *TINY_STUDY] for a in ("--set", o)]
    assert main(["run", "--out", str(out), *args]) == 0
    return out


def test_breakdown_covers_every_phase(tiny_study):
    from bench.breakdown import study_breakdown

    b = study_breakdown(tiny_study)
    names = list(b["phases"])
    # set-up first (the base reference only when it was not already in the shared test cache), then the runs
    setup = names[: names.index("training")]
    assert setup in (["load_model", "forgetting_corpus"], ["load_model", "forgetting_corpus", "base_reference"])
    for phase in ("training", "evaluation", "fit", "report"):
        assert b["phases"][phase] > 0


def test_breakdown_of_a_missing_study_says_so(tmp_path):
    from bench.breakdown import study_breakdown

    assert "make study" in study_breakdown(tmp_path / "nothing")["error"]


def test_topk_gap_is_a_tightening_lower_bound_on_every_adapter(tiny_study):
    from bench.accuracy import topk_gap

    g = topk_gap(tiny_study, ks=(8, 64))
    assert g["n_runs"] == 4
    for kls in g["forget_kl"].values():
        assert 0 < kls["top8"] <= kls["top64"] + 1e-9 <= kls["exact"] + 2e-9
    assert 0 <= g["gaps"]["top64"]["max_rel_gap"] <= g["gaps"]["top8"]["max_rel_gap"]
