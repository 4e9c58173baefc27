"""The public API: ``import forgetscale`` loads no torch; names resolve lazily (its examples run as doctests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import forgetscale


def test_import_does_not_load_torch():
    code = (
        "import sys, forgetscale\n"
        "assert 'torch' not in sys.modules, 'import forgetscale'\n"
        # the API that needs no model stays light too
        "forgetscale.load_results, forgetscale.fit_laws, forgetscale.ForgettingResult, forgetscale.measure_forgetting\n"
        "assert 'torch' not in sys.modules, 'the torch-free API'\n"
        "forgetscale.ForgettingCallback\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_exports():
    assert set(forgetscale.__all__) == {*forgetscale._EXPORTS, "__version__"}
    assert set(forgetscale._EXPORTS) <= set(dir(forgetscale))
    from forgetscale import api  # the package's lazy list and the API's own cannot drift apart

    assert set(forgetscale._EXPORTS) == set(api.__all__) - {"flatten_fit"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        forgetscale.nope  # noqa: B018


def test_fit_laws_takes_a_frame_and_skips_what_the_rows_cannot_fit():
    pd = pytest.importorskip("pandas")
    rows = [{"run_id": f"r{i % 3}", "dataset": "news", "rank": 4, "P": 1e4, "step": 10 * (i + 1),
             "ft_loss": 2.0 - 0.1 * i, "forget_ce": 3.1285 - 1.0615 * (2.0 - 0.1 * i), "forget_kl": float("nan"),
             "base_entropy": None, "forget_top1_ce": None, "data_loss": None} for i in range(9)]  # fmt: skip
    fits = forgetscale.fit_laws(pd.DataFrame(rows), ["linear"], n_boot=0)
    assert fits["news"]["linear"].params["c_fft"] == pytest.approx(1.0615, rel=1e-4)
    with pytest.warns(UserWarning, match="not fitted"):
        every = forgetscale.fit_laws(rows, n_boot=0)
    assert "linear" in every["news"]
