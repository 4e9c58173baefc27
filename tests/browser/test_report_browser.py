"""The HTML report in headless Chromium: it renders, shows every section, runs no planted script, loads nothing.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``tests/browser/ensure_chromium.sh``
installs them; ``make test`` runs it first); skipped with the reason otherwise.
The screenshot is kept as ``report.png`` in the test's tmp dir.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from forgetscale.cli import main
from tests.browser.conftest import BROWSER_MARKS
from tests.helpers import SECTIONS, build_study

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = build_study(tmp_path_factory.mktemp("browser") / "study")
    assert main(["report", str(study)]) == 0
    return study / "report.html"


def test_report_renders_safely_in_chromium(report: Path, driver, tmp_path: Path):
    from selenium.webdriver.common.by import By

    _requests(driver)  # drain what the browser did before (its own new-tab page)
    driver.get(report.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"

    # every section is there, in order, and every figure is an inline SVG with content
    for section in SECTIONS:
        assert driver.find_elements(By.ID, section), f"section #{section} missing"
    tops = [driver.find_element(By.ID, s).rect["y"] for s in SECTIONS]
    assert tops == sorted(tops)
    svgs = driver.find_elements(By.CSS_SELECTOR, "#figures figure svg")
    assert len(svgs) == 5
    assert all(s.size["width"] > 300 and s.size["height"] > 150 for s in svgs)
    assert "alert(1)" in driver.find_element(By.ID, "summary").text  # the hostile dataset name, as text
    # the interval methods as the reader sees them: the fits' recorded ones, none called a bootstrap
    header = driver.find_element(By.TAG_NAME, "header").text
    methods = driver.find_elements(By.CSS_SELECTOR, "header p.method")
    assert len(methods) == 2 and all(m.is_displayed() and m.size["height"] > 10 for m in methods)
    assert "cluster-robust" in methods[0].text and "prediction interval" in methods[1].text
    captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#figures figcaption")]
    assert "bootstrap" not in (header + " ".join(captions)).lower()
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    # the planted scripts did not run
    assert driver.execute_script("return window.__pwned === undefined")
    assert driver.title.startswith("forgetscale report") and "pwned" not in driver.title
    assert driver.execute_script("return document.scripts.length") == 0

    # nothing was requested: no resource entries, and the only network activity is the page itself
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    requests = _requests(driver)
    assert not [u for u, _ in requests if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))], requests
    from_page = [u for u, doc in requests if doc == report.as_uri()]
    assert from_page == [report.as_uri()], from_page  # the page itself, and nothing it asked for

    # the page is not blank: several colours and a fair share of ink
    shot = tmp_path / "report.png"
    driver.save_screenshot(str(shot))
    rgb = _pixels(shot.read_bytes())
    colours = np.unique((rgb * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 16
    assert np.mean(rgb.min(axis=-1) < 0.9) > 0.03

    # the figures' part of the page too (below the summary)
    driver.execute_script("document.getElementById('figures').scrollIntoView()")
    figs = tmp_path / "figures.png"
    driver.save_screenshot(str(figs))
    assert np.mean(_pixels(figs.read_bytes()).min(axis=-1) < 0.9) > 0.03


def _requests(driver) -> list[tuple[str, str]]:
    """``(url, document url)`` of every request logged since the last call."""
    import json

    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            out.append((msg["params"]["request"]["url"], msg["params"].get("documentURL", "")))
    return out


def _pixels(png: bytes) -> np.ndarray:
    """RGB in [0, 1], shape (h, w, 3)."""
    from matplotlib.image import imread

    img = imread(io.BytesIO(png), format="png")
    return np.asarray(img, dtype=float)[..., :3]


def test_mitigations_section_renders_in_chromium(tmp_path_factory: pytest.TempPathFactory, driver):
    """The frontier section (`forgetscale compare`'s table and figure) on a study with mitigated runs."""
    from selenium.webdriver.common.by import By

    from tests.helpers import build_mitigation_study

    study = build_mitigation_study(tmp_path_factory.mktemp("browser-mitigations") / "study")
    assert main(["report", str(study)]) == 0
    driver.get((study / "report.html").as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    section = driver.find_element(By.ID, "mitigations")
    rows = section.find_elements(By.CSS_SELECTOR, "table tr")
    assert len(rows) == 1 + 4  # header + kl, replay, rescale, intruders
    assert {"beats line", "on line", "worse"} <= {r.text for r in section.find_elements(By.CSS_SELECTOR, "td")}
    svg = driver.find_element(By.CSS_SELECTOR, "#mitigations figure svg")
    assert svg.size["width"] > 300 and svg.size["height"] > 150
    assert len(driver.find_elements(By.CSS_SELECTOR, "#figures figure svg")) == 5  # the frontier is not among them
    assert driver.execute_script("return document.scripts.length") == 0
    driver.execute_script("document.getElementById('mitigations').scrollIntoView()")
    shot = tmp_path_factory.mktemp("browser-shot") / "mitigations.png"
    driver.save_screenshot(str(shot))
    assert np.mean(_pixels(shot.read_bytes()).min(axis=-1) < 0.9) > 0.03
