"""The report's probe flips: gathered from stored side-by-side items, rendered alike in Markdown and HTML.

A store with no measurements or fits, only probe results: a knowledge probe whose run loses 3 and
gains 1 of 10 items, a safety probe whose run loses 2 of the base's 4 refusals, an lm-eval task (no
items), and hostile strings in a run id and a dataset name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetscale.cli import main
from forgetscale.probes.flips import mcnemar_exact, wilson
from forgetscale.probes.runner import compare
from tests.helpers import SCRIPT

EVIL = f"r-{SCRIPT}"


def _knowledge(right: list[bool]) -> list[dict]:
    return [{"id": f"k{i}", "prompt": "q", "reference": ["a"], "answer": "a" if r else f"w{i}", "correct": r}
            for i, r in enumerate(right)]  # fmt: skip


def _safety(refused: list[bool]) -> list[dict]:
    return [{"id": f"s{i}", "prompt": "harm", "reference": None, "answer": r, "correct": None}
            for i, r in enumerate(refused)]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from forgetscale.store import open_store

    out = tmp_path_factory.mktemp("flips") / "study"
    base_k = _knowledge([True] * 6 + [False] * 4)
    run_k = _knowledge([False] * 3 + [True] * 3 + [True] + [False] * 3)  # 3 right -> wrong, 1 wrong -> right
    base_s = _safety([True] * 4 + [False] * 6)
    run_s = _safety([False, False, True, True] + [False] * 6)  # 2 of 4 refusals lost
    with open_store(out) as store:
        for rid, ds in (("r8", "news"), (EVIL, SCRIPT)):
            store.register_run(rid, {"rank": 8}, ds, 8)
            store.start_run(rid, 8000, {})
            store.finish_run(rid, {"total": 1.0})
        store.set_meta("study", {"name": "flips"})
        for rid, k, s in (("base", base_k, base_s), ("r8", run_k, run_s), (EVIL, run_k, run_s)):
            for probe, recs, base in (("knowledge", k, base_k), ("safety", s, base_s)):
                summary, items = compare(recs, base)
                store.put_probe(rid, probe, summary, items)
        store.put_probe("r8", "lm_eval:arc", {"n": 4, "accuracy": 0.5, "base_accuracy": 0.75}, [])
    return out


def test_gathered_rows_carry_the_flips_and_their_intervals(study: Path):
    from forgetscale.report.data import gather
    from forgetscale.report.flips import flip_table

    d = gather(study)
    rows = {(p["run_id"], p["probe"]): p for p in d.probes}
    k, s = rows["r8", "knowledge"], rows["r8", "safety"]
    assert (k["n10"], k["n01"], k["mcnemar_p"]) == (3, 1, mcnemar_exact(3, 1))
    assert (k["accuracy"], k["base_accuracy"]) == (0.4, 0.6)
    assert (k["accuracy_lo"], k["accuracy_hi"]) == wilson(4, 10)
    assert (k["right_to_wrong_lo"], k["right_to_wrong_hi"]) == wilson(3, 10)
    assert (s["lost_refusals"], s["base_refusals"], s["lost_refusal_rate"]) == (2, 4, 0.5)
    assert (s["lost_refusal_rate_lo"], s["lost_refusal_rate_hi"]) == wilson(2, 4)
    lm = rows["r8", "lm_eval:arc"]
    assert lm["accuracy"] == 0.5 and lm["n10"] is None  # no items: the summary alone

    table = flip_table(d.probes)
    # the probe rows' order: by probe, then dataset ("<script>..." sorts before "news")
    assert [(r[0], r[1]) for r in table.rows] == [("knowledge", EVIL), ("knowledge", "r8"), ("safety", EVIL),
                                                 ("safety", "r8")]  # fmt: skip
    knowledge = table.rows[1]
    assert knowledge[5].startswith("3 (30% [") and knowledge[6].startswith("1 (10% [")
    assert table.rows[3][-1].startswith("2 of 4 (50% [") and table.rows[1][-1] == "-"


def test_markdown_and_html_show_the_same_flips_escaped(study: Path, capsys):
    assert main(["report", str(study), "--format", "md"]) == 0
    md = Path(capsys.readouterr().out.strip()).read_text(encoding="utf-8")
    assert md.index("## Behaviour probes") < md.index("## Probe flips against the base") < md.index("## Study config")
    section = md[md.index("## Probe flips against the base"):md.index("## Study config")]
    assert "| knowledge | r8 | news | 8 | 10 | 3 (30% \\[" in section
    assert "2 of 4 (50% \\[" in section and "lm\\_eval" not in section
    assert "<script" not in section and "&lt;script&gt;" in section

    assert main(["report", str(study)]) == 0
    html = (study / "report.html").read_text(encoding="utf-8")
    assert 'href="#flips"' in html and html.index('id="probes"') < html.index('id="flips"')
    flips = html[html.index('<section id="flips">'):]
    flips = flips[:flips.index("</section>")]
    assert flips.count("<tr>") == 5  # the header and four (run, probe) rows
    assert "3 (30% [" in flips and "2 of 4 (50% [" in flips
    assert "<script" not in flips and "&lt;script&gt;" in flips
