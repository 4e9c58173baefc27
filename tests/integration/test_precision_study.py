"""`auto` precision is resolved once, when a study is created, and recorded: resume does not re-decide it."""

from __future__ import annotations

import json
import sqlite3

from forgetscale import precision
from forgetscale.cli import main


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_auto_is_fixed_when_the_study_is_created(tiny_overrides, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    sets = _sets([*tiny_overrides, "train.precision=auto", "sweep.data.dataset=[news]"])
    # machine A measures fp32 faster
    monkeypatch.setattr(precision, "machine_key", lambda: "machine A")
    monkeypatch.setattr(precision, "time_kernels", lambda: (1.0, 3.0))
    assert main(["run", "--out", str(out), *sets]) == 0
    con = sqlite3.connect(out / "study.sqlite")
    try:
        study = json.loads(con.execute("SELECT value FROM meta WHERE key='study'").fetchone()[0])
        configs = [json.loads(c) for (c,) in con.execute("SELECT config FROM runs")]
        provenance = [json.loads(p) for (p,) in con.execute("SELECT provenance FROM runs")]
    finally:
        con.close()
    assert study["train"]["precision"] == "fp32"
    assert {c["train"]["precision"] for c in configs} == {"fp32"}  # so the run ids hash "fp32", not "auto"
    assert {p["train_precision"] for p in provenance} == {"fp32"}
    capsys.readouterr()
    # resumed on machine B, which measures bf16 faster: the study keeps fp32, its runs are recognised as done
    monkeypatch.setattr(precision, "machine_key", lambda: "machine B")
    monkeypatch.setattr(precision, "time_kernels", lambda: (1.0, 0.2))
    assert precision.resolve("auto") == "bf16"
    assert main(["run", "--out", str(out), *sets]) == 0
    assert "2 of 2 runs already done" in capsys.readouterr().err
    # and an explicit fp32 study is the same study: the same run ids
    assert main(["run", "--out", str(out), *sets, "--set", "train.precision=fp32", "--dry-run"]) == 0
    ids = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert ids == {c for c in _run_ids(out)}


def _run_ids(out):
    con = sqlite3.connect(out / "study.sqlite")
    try:
        return [r for (r,) in con.execute("SELECT run_id FROM runs")]
    finally:
        con.close()
