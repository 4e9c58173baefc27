"""Headless Chromium for the browser tier: the marks, the skip (or failure under CI), and one driver fixture.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``tests/browser/ensure_chromium.sh`` installs them;
``make test`` runs it first). Without them the tests are skipped with the reason, except under CI
(``CI=true``), where they fail: a browser tier that silently vanished would leave the run green
(:mod:`tests.browser.tier` decides).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.tier import CHROMEDRIVER, CHROMIUM, decide, missing

BROWSER_MARKS = [pytest.mark.browser, pytest.mark.usefixtures("browser_tier")]
"""Every browser test module's ``pytestmark``."""


@pytest.fixture(scope="session")
def browser_tier() -> None:
    """Skip a browser test that cannot run here; fail it instead under CI. Session-scoped, so that it
    acts before the modules' own (study-building) fixtures are set up."""
    action, reason = decide(os.environ, missing())
    if action == "fail":
        pytest.fail(reason, pytrace=False)
    if action == "skip":
        pytest.skip(reason)


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A headless Chromium with its own profile, offline, logging network events (``performance``)."""
    from selenium import webdriver  # present: browser_tier checked it
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must not look for (or download) a driver of its own
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
