"""The smoke preset on the real embedded model (SmolLM2-135M-Instruct): conversion, sampling, training."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from forgetscale.cli import main
from forgetscale.config import load_config
from forgetscale.models import cache_dir
from forgetscale.precision import pin_for_study

pytestmark = pytest.mark.slow


def test_smoke_preset_on_the_default_model(tmp_path: Path):
    out = tmp_path / "smoke"
    assert main(["run", "--preset", "smoke", "--out", str(out)]) == 0
    # run ids hash the precision the study recorded when it was created (`auto` resolved once)
    runs = pin_for_study(load_config(preset="smoke"), out, cache_dir()).runs()
    con = sqlite3.connect(out / "study.sqlite")
    rows = con.execute("SELECT run_id, step, forget_ce, forget_kl, base_entropy, ft_loss FROM measurements").fetchall()
    assert {(r[0], r[1]) for r in rows} == {(r.run_id, s) for r in runs for s in r.eval_schedule()}
    for _run_id, step, ce, kl, h, ft in rows:
        assert kl >= 0 and ft > 0
        if step == 0:
            assert abs(kl) < 1e-5 and ce == pytest.approx(h, abs=1e-5)
    for r in runs:
        kls = [kl for rid, _, _, kl, _, _ in sorted(rows, key=lambda x: x[1]) if rid == r.run_id]
        assert kls[-1] > kls[0]
    # probes ran for the base and every run (the smoke preset enables them)
    probed = {r for (r,) in con.execute("SELECT DISTINCT run_id FROM probes")}
    assert probed == {"base"} | {r.run_id for r in runs}
    assert (out / "report.html").is_file() and (out / "fits.json").is_file()
    # the model was converted once into the cache and the second study reuses everything
    assert main(["run", "--preset", "smoke", "--out", str(out)]) == 0
    assert con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == len(rows)
