"""Whether the browser tier can run here, and what to do when it cannot: skip, or fail under CI.

On a developer's machine without Chromium the browser tests skip with the reason. On a CI machine
(``CI`` set to a true value, as CI services do) a skipped tier would leave the run green while the
report was never opened in a browser, so there the same reason fails the tests instead.
Pure: no browser, no selenium import; tests/unit/test_browser_tier.py checks it without Chromium.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def under_ci(env: Mapping[str, str]) -> bool:
    """``CI`` is set to a true value (``true``, ``1``, ``yes``, any case)."""
    return env.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER, selenium: bool | None = None) -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if selenium is None:
        selenium = importlib.util.find_spec("selenium") is not None
    absent = [str(p) for p in (chromium, chromedriver) if not p.is_file()]
    if absent:
        return f"needs {' and '.join(absent)}: run tests/browser/ensure_chromium.sh"
    if not selenium:
        return "needs selenium (the dev extra: pip install -e '.[dev]')"
    return None


def decide(env: Mapping[str, str], reason: str | None) -> tuple[str, str]:
    """``("run", "")``, ``("skip", reason)`` or, under CI, ``("fail", reason)`` for a tier that cannot run."""
    if reason is None:
        return "run", ""
    if under_ci(env):
        return "fail", f"the browser tier cannot run under CI ({reason})"
    return "skip", reason
