"""One runner per study directory: a second `forgetscale run` is refused, readers are not, kill -9 frees it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgetscale.cli import main
from forgetscale.lock import StudyBusy, hold
from tests.helpers import count_rows, held_elsewhere


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _rows(out: Path) -> list[tuple]:
    con = sqlite3.connect(out / "study.sqlite", timeout=30)
    try:
        return con.execute("SELECT * FROM measurements ORDER BY run_id, step").fetchall()
    finally:
        con.close()




def _wait_for(what, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_second_hold_is_refused_and_names_the_holder(tmp_path):
    import os

    busy = rf"in use by another forgetscale run \(pid {os.getpid()} on .*since"
    with hold(tmp_path), pytest.raises(StudyBusy, match=busy), hold(tmp_path):
        pass
    with hold(tmp_path):  # released at the end of the block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    # the holder is killed with SIGKILL on exit: no cleanup code runs
    with held_elsewhere(tmp_path) as holder, pytest.raises(StudyBusy, match=f"pid {holder.pid} "), hold(tmp_path):
        pass
    with hold(tmp_path):  # the OS dropped the lock with the process
        pass


_PAUSE_AFTER_TWO_ROWS = """
import sys, time
from pathlib import Path
from forgetscale import store
from forgetscale.cli import main

gate, stock, added = Path(sys.argv[1]), store.Store.add_measurement, []

def add_measurement(self, run_id, row):
    stock(self, run_id, row)
    added.append(row)
    while len(added) == 2 and not gate.exists():
        time.sleep(0.02)

store.Store.add_measurement = add_measurement
sys.exit(main(sys.argv[2:]))
"""


def test_second_runner_exits_2_and_leaves_the_first_intact(tiny_overrides, tmp_path):
    """Two `forgetscale run` on one directory: the second gets one line and exit 2 while the first goes on."""
    out, ref_out = tmp_path / "busy", tmp_path / "alone"
    sets = _sets(tiny_overrides)
    cmd = [sys.executable, "-m", "forgetscale.cli", "run", *sets]
    assert subprocess.run([*cmd, "--out", str(ref_out)], capture_output=True, timeout=600).returncode == 0
    gate = tmp_path / "go-on"
    # the first runner pauses after its second row until the test opens the gate, so the second runner
    # meets it mid-study on any machine (a fast one would otherwise finish the tiny study first)
    first = subprocess.Popen(
        [sys.executable, "-c", _PAUSE_AFTER_TWO_ROWS, str(gate), "run", *sets, "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: count_rows(out) >= 2)  # mid-study
        second = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600)
        gate.touch()
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("forgetscale: error:"), second.stderr
        assert f"pid {first.pid} " in lines[0] and "in use" in lines[0]
        assert first.wait(timeout=600) == 0
    finally:
        first.kill()
        first.wait(timeout=60)
    got, expected = _rows(out), _rows(ref_out)
    assert [r[:2] for r in got] == [r[:2] for r in expected]  # every row, none twice, none lost
    for a, b in zip(got, expected, strict=True):
        assert [x is None for x in a] == [x is None for x in b]  # a figure the reference cannot give is None in both
        values = [(x, y) for x, y in zip(a[2:], b[2:], strict=True) if x is not None]
        assert [x for x, _ in values] == pytest.approx([y for _, y in values], rel=1e-6, abs=1e-9)  # same code path


def test_readers_work_while_a_study_runs(tiny_overrides, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["run", "--out", str(out), *_sets(tiny_overrides)]) == 0
    capsys.readouterr()
    with hold(out):  # as a running `forgetscale run` holds it
        assert main(["run", "--out", str(out), *_sets(tiny_overrides)]) == 2
        assert "in use by another forgetscale run" in capsys.readouterr().err
        assert main(["fit", str(out), "--json"]) == 0
        assert main(["report", str(out)]) == 0
        assert main(["predict", str(out), "--rank", "2", "--steps", "8", "--dataset", "news", "--json"]) == 0
