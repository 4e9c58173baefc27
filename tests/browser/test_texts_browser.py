"""The report's most-forgotten texts in headless Chromium: in its place, hostile texts shown as text.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``tests/browser/ensure_chromium.sh``); skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import PWN, SCRIPT, build_study

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="needs /usr/bin/chromium and /usr/bin/chromedriver: run tests/browser/ensure_chromium.sh",
    ),
]

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


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        opts.add_argument(arg)
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must not look for (or download) a driver of its own
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


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
