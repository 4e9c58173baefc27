"""The local concurrent executor (``executor.kind: processes``) against the local one, on the tiny Llama.

Every study runs as a child process through the CLI, so that it can be interrupted (Ctrl-C is SIGINT
to the study process; its workers ignore it) and each wait has a timeout. The reference is the
local executor's study; the others are interrupted under one executor and resumed under the other,
both ways, so that between them every run is trained once by each executor somewhere.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgetscale.config import load_config
from tests.helpers import TINY_STUDY, finish, sigint_default

TIMEOUT_S = 300
COLUMNS = ("tokens", "ft_loss", "ft_loss_se", "forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")
PROCESSES = ["executor.kind=processes", "executor.workers=2"]


def _tiny(tiny_model: Path) -> list[str]:
    """Four runs on one dataset, two of 8 steps and two of 240 (so that a Ctrl-C has seconds, not a moment,
    to land between the first run's end and the last's, and two runs are left for two workers; 48 steps took
    under a second on a quiet 2-core machine, and the study then sometimes ended first), without
    probes, in fp32 (the run ids computed here are then those the CLI stores)."""
    return [f"model.name={tiny_model}", *TINY_STUDY, "probes.enabled=false", "train.precision=fp32",
            "train.eval_steps=[2,4,8]", "sweep.data.dataset=[news]", "sweep.lora.rank=[1,2]",
            "sweep.train.steps=[8,240]"]  # fmt: skip


def _start(out: Path, overrides: list[str]) -> subprocess.Popen:
    args = ["run", "--out", str(out), *[a for o in overrides for a in ("--set", o)]]
    code = "import sys\nfrom forgetscale.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_default)  # fmt: skip


def _finish(p: subprocess.Popen) -> tuple[int, str]:
    return finish(p, TIMEOUT_S)


def _query(out: Path, sql: str) -> list[tuple]:
    if not (out / "study.sqlite").is_file():
        return []
    con = sqlite3.connect(out / "study.sqlite", timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the tables not yet created
        return []
    finally:
        con.close()


def _rows(out: Path) -> dict[tuple[str, int], tuple]:
    return {(r[0], r[1]): r[2:] for r in _query(out, f"SELECT run_id, step, {', '.join(COLUMNS)} FROM measurements")}


def _runs(out: Path) -> dict[str, tuple[str, str | None, dict]]:
    got = _query(out, "SELECT run_id, status, error, provenance FROM runs")
    return {r[0]: (r[1], r[2], json.loads(r[3]) if r[3] else {}) for r in got}


def _done(out: Path) -> set[str]:
    return {rid for rid, (status, _, _) in _runs(out).items() if status == "done"}


def _interrupt_after_a_run(p: subprocess.Popen, out: Path, n: int) -> None:
    """Ctrl-C as soon as one run is done and at least two are not (left for two workers)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not (0 < len(_done(out)) <= n - 2):
        assert p.poll() is None, "the study ended before the chosen point:\n" + p.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)


def _assert_same_rows(got: dict, expected: dict) -> None:
    """The same (run, step) keys as the local executor and the same numbers.

    Tolerance: a worker runs the very code the local executor runs, on the same inputs, seeds and
    precision, so the only difference is its thread count (1 per worker here against the study
    process's own): that can change the order of floating-point sums inside matmuls, fp32 rounding
    of ~1e-7 relative per operation carried through 8 steps. 1e-5 relative (1e-7 absolute near zero,
    for KL at step 0) leaves two orders of magnitude above that. (On this tiny model the rows come
    out bit-identical: its matmuls are too small to be split between threads.)
    """
    assert sorted(got) == sorted(expected)
    for key, row in got.items():
        assert row == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    out = tmp_path_factory.mktemp("local")
    code, err = _finish(_start(out, _tiny(tiny_model)))
    assert code == 0, err
    return out


@pytest.mark.parametrize(("first", "then"), [("processes", "local"), ("local", "processes")])
def test_interrupted_under_one_executor_resumes_under_the_other(local, tiny_model, tmp_path, first, then):
    base = _tiny(tiny_model)
    runs = load_config(overrides=base).runs()
    with_ = {"processes": [*base, *PROCESSES], "local": base}
    out = tmp_path / "out"

    p = _start(out, with_[first])
    _interrupt_after_a_run(p, out, len(runs))
    code, err = _finish(p)
    assert code == 130 and "interrupted" in err.strip().splitlines()[-1], err
    assert {s for s, _, _ in _runs(out).values()} <= {"done", "pending"}  # nothing left running or failed
    kept = _rows(out)
    done = _done(out)
    assert {k[0] for k in kept} == done  # the interrupted runs' rows are gone, the finished ones' kept

    code, err = _finish(_start(out, with_[then]))
    assert code == 0, err
    rows = _rows(out)
    assert {k: rows[k] for k in kept} == kept  # resumed: the finished runs untouched, bit for bit
    _assert_same_rows(rows, _rows(local))
    stored = _runs(out)
    assert all(s == "done" for s, _, _ in stored.values())
    by = {rid: prov.get("executor", {}).get("kind", "local") for rid, (_, _, prov) in stored.items()}
    assert {by[rid] for rid in done} == {first} and {by[rid] for rid in set(by) - done} == {then}
    for rid, kind in by.items():  # each worker trains on its share of the threads
        if kind == "processes":
            assert stored[rid][2]["threads"] == 1 and stored[rid][2]["executor"]["attempt"] == 1
    for r in runs:  # every adapter arrived whole, whichever executor trained it
        assert (out / "adapters" / r.run_id / "adapter_config.json").is_file()
    assert not [q for q in (out / "adapters").iterdir() if q.name.startswith(".tmp")]


def test_a_diverged_run_is_recorded_and_stops_the_study_in_one_line(tiny_model, tmp_path):
    overrides = [*_tiny(tiny_model), "sweep.lora.rank=[4]", "sweep.train.steps=[8]", "sweep.train.lr=[0.01,1e6]",
                 *PROCESSES]  # fmt: skip
    fine, diverging = load_config(overrides=overrides).runs()
    out = tmp_path / "out"
    code, err = _finish(_start(out, overrides))
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("forgetscale: error:") and "training diverged" in last and "Traceback" not in err, err
    stored = _runs(out)
    assert stored[diverging.run_id][0] == "failed" and "Diverged" in stored[diverging.run_id][1]
    assert stored[fine.run_id][0] == "done"  # in flight beside it: finished, not thrown away
    assert sorted(s for rid, s in _rows(out) if rid == diverging.run_id) == [0]  # rows before it kept, as locally
