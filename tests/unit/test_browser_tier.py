"""The browser tier's skip-or-fail decision, without Chromium: a missing browser skips on a developer's
machine and fails under CI, so that ``make test`` on CI cannot go green with the tier skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.tier import decide, missing, under_ci


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " true "])
def test_ci_values_that_mean_ci(value):
    assert under_ci({"CI": value})


@pytest.mark.parametrize("env", [{}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}, {"OTHER": "true"}])
def test_values_that_do_not(env):
    assert not under_ci(env)


def _files(tmp_path: Path, *names: str) -> list[Path]:
    for n in names:
        (tmp_path / n).write_text("")
    return [tmp_path / "chromium", tmp_path / "chromedriver"]


def test_missing_names_each_absent_file(tmp_path):
    chromium, driver = _files(tmp_path, "chromium")
    reason = missing(chromium, driver, selenium=True)
    assert reason is not None and str(driver) in reason and str(chromium) not in reason
    (tmp_path / "chromium").unlink()
    reason = missing(chromium, driver, selenium=True)
    assert str(chromium) in reason and str(driver) in reason


def test_missing_selenium_and_nothing_missing(tmp_path):
    chromium, driver = _files(tmp_path, "chromium", "chromedriver")
    assert "selenium" in missing(chromium, driver, selenium=False)
    assert missing(chromium, driver, selenium=True) is None


def test_a_tier_that_cannot_run_skips_locally_and_fails_under_ci(tmp_path):
    reason = missing(tmp_path / "chromium", tmp_path / "chromedriver", selenium=True)
    assert decide({}, reason) == ("skip", reason)
    action, why = decide({"CI": "true"}, reason)
    assert action == "fail" and reason in why and "CI" in why
    assert decide({"CI": "true"}, None) == ("run", "")
    assert decide({}, None) == ("run", "")


def test_the_fixture_fails_under_ci_when_chromium_is_absent(monkeypatch):
    """The conftest's fixture turns the decision into pytest's outcome: failed under CI, skipped without."""
    import tests.browser.conftest as conftest

    fixture = conftest.browser_tier.__wrapped__  # the function under pytest's fixture wrapper
    monkeypatch.setattr(conftest, "missing", lambda: "needs /nowhere/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI"):
        fixture()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="nowhere"):
        fixture()
    monkeypatch.setattr(conftest, "missing", lambda: None)
    monkeypatch.setenv("CI", "true")
    fixture()  # a tier that can run: no outcome raised
