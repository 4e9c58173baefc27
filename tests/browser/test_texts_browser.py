"""The report's most-forgotten texts in headless Chromium: in its place, hostile texts shown as text.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``tests/browser/ensure_chromium.sh``); skipped otherwise.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.browser.conftest import BROWSER_MARKS
from tests.helpers import PWN, SCRIPT, build_study

pytestmark = BROWSER_MARKS

N_SEQ = 12


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic study, with per-sequence KL stored for one run at two steps and hostile corpus texts."""
    study = build_study(tmp_path_factory.mktemp("browser-texts") / "study")
    con = sqlite3.connect(study / "study.sqlite")
    with con:
        prov = json.loads(con.execute("SELECT provenance FROM runs WHERE run_id = 'news-r8'").fetchone()[0])
        con.execute("UPDATE runs SET provenance = ? WHERE run_id = 'news-r8'",
                    (json.dumps({**prov, "corpus_fingerprint": "c0"}),))  # fmt: skip
        for step, scale in ((2, 0.1), (32, 1.0)):
            kl = [scale * (i + 1) / N_SEQ if i != 3 else 5.0 * scale for i in range(N_SEQ)]
            con.execute("INSERT INTO sequence_kl (run_id, step, kl) VALUES ('news-r8', ?, ?)", (step, json.dumps(kl)))
        texts = [f"text {i}: {PWN if i == 3 else SCRIPT}\nsecond line" for i in range(N_SEQ)]
        con.execute("INSERT INTO corpus_texts (corpus, texts) VALUES ('c0', ?)", (json.dumps(texts),))
    con.close()
    assert main(["report", str(study)]) == 0
    return study / "report.html"


def test_forgotten_texts_render_as_text_in_chromium(report: Path, driver):
    from selenium.webdriver.common.by import By

    driver.get(report.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    section = driver.find_element(By.ID, "texts")
    ys = [driver.find_element(By.ID, s).rect["y"] for s in ("samples", "texts", "config")]
    assert ys == sorted(ys)  # after the generations, before the config
    assert driver.find_element(By.CSS_SELECTOR, 'nav a[href="#texts"]').text == "Forgotten texts"
    tables = section.find_elements(By.CSS_SELECTOR, "table")
    assert len(tables) == 2
    for table in tables:
        rows = table.find_elements(By.CSS_SELECTOR, "tr")
        assert len(rows) == 1 + 10  # header and the 10 largest
        first = rows[1].find_elements(By.CSS_SELECTOR, "td")
        assert first[1].text == "3"  # sequence 3 is both the largest and the fastest-growing
        assert first[-1].text.startswith("text 3: <script>") and first[-1].text.endswith("…")  # cut to a snippet
        second = rows[2].find_elements(By.CSS_SELECTOR, "td")[-1]
        assert second.text.endswith(f"{SCRIPT}\\nsecond line")  # the line break escaped: one line
        assert first[-1].size["height"] < 40 and second.size["height"] < 40  # one line on the page too
    assert SCRIPT in section.text  # the planted markup is shown as text
    assert driver.execute_script("return window.__pwned === undefined")
    assert driver.execute_script("return document.scripts.length") == 0
    assert "pwned" not in driver.title
