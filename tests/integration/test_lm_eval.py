"""The real lm-evaluation-harness, offline, on two local tasks and the tiny Llama: its sample logs into paired flips.

``lm_eval`` runs as a user runs it (its own command line, in a subprocess), once on the base and once with a
trained adapter, over the multiple-choice tasks in tests/data/lm_eval (shipped reasoning probe items in a local
jsonl). ``forgetscale flips`` reads the two runs' ``samples_*.jsonl``; the test counts the same flips by hand from
the same files and checks the accuracies against lm-eval's own aggregate results.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import TINY_STUDY, one_error_line

DATA = Path(__file__).parents[1] / "data" / "lm_eval"
TASKS = ("fs_reasoning", "fs_science")


def _lm_eval(model: Path, out: Path, hf_home: Path, adapter: Path | None = None) -> Path:
    """``lm_eval --log_samples`` on the tiny model (with ``adapter`` as PEFT), no network; its output directory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(hf_home), "HF_DATASETS_CACHE": str(hf_home / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
    args = f"pretrained={model}" + (f",peft={adapter}" if adapter else "")
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", args, "--tasks", ",".join(TASKS),
           "--include_path", str(DATA), "--output_path", str(out), "--log_samples", "--device", "cpu",
           "--batch_size", "8", "--seed", "0"]  # fmt: skip
    # the tasks' data_files are relative to the task directory: lm_eval runs there, as its README says to
    done = subprocess.run(cmd, cwd=DATA, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A one-run study of the tiny model: its adapter is the fine-tune both harness paths evaluate."""
    out = tmp_path_factory.mktemp("study")
    # lr 0.05 (not the tiny studies' 0.01): enough to move some of the tiny model's answers
    one_run = [f"model.name={tiny_model}", *TINY_STUDY, "sweep.data.dataset=[instruct]", "sweep.lora.rank=[4]",
               "probes.enabled=false", "probes.max_items=24", "train.lr=0.05"]  # fmt: skip
    assert main(["run", "--out", str(out), *(a for o in one_run for a in ("--set", o))]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, study: Path) -> tuple[Path, Path]:
    """The base's and the fine-tune's lm_eval output directories."""
    tmp = tmp_path_factory.mktemp("lm_eval")
    (adapter,) = (study / "adapters").iterdir()
    base = _lm_eval(tiny_model, tmp / "base", tmp / "hf")
    tuned = _lm_eval(tiny_model, tmp / "tuned", tmp / "hf", adapter)
    return base, tuned


def _logs(out: Path) -> dict[str, Path]:
    found = {}
    for f in out.rglob("samples_*.jsonl"):
        (task,) = [t for t in TASKS if f.name.startswith(f"samples_{t}_")]
        found[task] = f
    assert sorted(found) == sorted(TASKS)
    return found


def _records(path: Path) -> dict[int, dict]:
    return {r["doc_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _aggregate(out: Path) -> dict:
    (res,) = out.rglob("results_*.json")
    return json.loads(res.read_text())["results"]


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written out (z = 1.959964, the 97.5% normal quantile)."""
    z, p = 1.959963984540054, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _exact_mcnemar(n10: int, n01: int) -> float:
    """Two-sided exact binomial test at 1/2 by hand: twice the smaller tail, at most 1."""
    n, k = n10 + n01, min(n10, n01)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def test_flips_of_real_lm_eval_logs_match_a_hand_count(runs, capsys):
    base, tuned = runs
    assert main(["flips", str(base), str(tuned), "--json"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == sorted(TASKS)
    b_logs, t_logs = _logs(base), _logs(tuned)
    b_acc, t_acc = _aggregate(base), _aggregate(tuned)
    changed = 0
    for task in TASKS:
        b, t = _records(b_logs[task]), _records(t_logs[task])
        assert sorted(b) == sorted(t) == list(range(24))
        n10 = sum(b[i]["acc"] == 1.0 and t[i]["acc"] == 0.0 for i in b)
        n01 = sum(b[i]["acc"] == 0.0 and t[i]["acc"] == 1.0 for i in b)
        pick = {i: [max(range(len(r[i]["filtered_resps"])), key=lambda j, r=r, i=i: float(r[i]["filtered_resps"][j][0]))
                    for r in (b, t)] for i in b}  # fmt: skip
        same = sum(p == q for p, q in pick.values())
        row = rows[task]
        assert (row["n"], row["n_scored"], row["n10"], row["n01"], row["metric"]) == (24, 24, n10, n01, "acc")
        assert row["agreement"] == same / 24
        assert row["mcnemar_p"] == pytest.approx(_exact_mcnemar(n10, n01), rel=1e-12)
        assert (row["right_to_wrong_lo"], row["right_to_wrong_hi"]) == pytest.approx(_wilson(n10, 24), abs=1e-12)
        assert (row["wrong_to_right_lo"], row["wrong_to_right_hi"]) == pytest.approx(_wilson(n01, 24), abs=1e-12)
        # the paired accuracies are lm-eval's own aggregate acc
        assert row["base_accuracy"] == pytest.approx(b_acc[task]["acc,none"], abs=1e-12)
        assert row["accuracy"] == pytest.approx(t_acc[task]["acc,none"], abs=1e-12)
        assert row["accuracy"] - row["base_accuracy"] == pytest.approx((n01 - n10) / 24, abs=1e-12)
        changed += n10 + n01 + (24 - same)
    assert changed > 0  # the adapter moved some answers: the counts are not trivially zero

    # the two files of one task, named directly, give that task's row; the table prints the same counts
    assert main(["flips", str(b_logs["fs_science"]), str(t_logs["fs_science"])]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.strip().startswith("fs_science"))
    assert f" {rows['fs_science']['n10']} = " in line and f" {rows['fs_science']['n01']} = " in line
    assert "fs_reasoning" not in text
    # acc_norm on request: its own hand count
    assert main(["flips", str(b_logs["fs_reasoning"]), str(t_logs["fs_reasoning"]), "--metric", "acc_norm",
                 "--json"]) == 0  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)
    b, t = _records(b_logs["fs_reasoning"]), _records(t_logs["fs_reasoning"])
    assert row["metric"] == "acc_norm"
    assert row["n10"] == sum(b[i]["acc_norm"] == 1.0 and t[i]["acc_norm"] == 0.0 for i in b)
    assert row["base_accuracy"] == pytest.approx(b_acc["fs_reasoning"]["acc_norm,none"], abs=1e-12)


def _edit(src: Path, dst: Path, change) -> Path:
    """A copy of sample log ``src`` under lm-eval's file name in ``dst``, its records passed through ``change``."""
    dst.mkdir(parents=True, exist_ok=True)
    recs = [json.loads(x) for x in src.read_text().splitlines()]
    out = dst / src.name
    out.write_text("".join(f"{json.dumps(r)}\n" for r in change(recs)))
    return out


def test_bad_or_mismatched_logs_are_one_line(runs, tmp_path, capsys):
    base, tuned = runs
    b, t = _logs(base), _logs(tuned)
    science, reasoning = b["fs_science"], t["fs_reasoning"]

    def flips(*args):
        return main(["flips", *map(str, args)])

    one_error_line(capsys, flips(tmp_path / "nowhere", science), "nowhere", "no such file")
    (tmp_path / "empty").mkdir()
    one_error_line(capsys, flips(tmp_path / "empty", science), "no lm-eval sample log", "--log_samples")
    other = tmp_path / "notes.jsonl"
    other.write_text("{}\n")
    one_error_line(capsys, flips(other, science), "notes.jsonl", "samples_<task>_<time>.jsonl")
    one_error_line(capsys, flips(science, reasoning), "different tasks", "fs_science", "fs_reasoning")
    # a log of one task against a run of two
    one_error_line(capsys, flips(science, tuned), "different tasks", "fs_reasoning")
    fewer = _edit(t["fs_science"], tmp_path / "fewer", lambda rs: rs[:-3])  # as with a --limit
    one_error_line(capsys, flips(science, fewer), "fs_science", "different documents", "--limit")
    other_doc = _edit(t["fs_science"], tmp_path / "hash", lambda rs: [{**r, "doc_hash": "f00"} if r["doc_id"] == 5
                                                                       else r for r in rs])  # fmt: skip
    one_error_line(capsys, flips(science, other_doc), "doc_id 5", "different document", "doc_hash")
    twice = _edit(t["fs_science"], tmp_path / "twice", lambda rs: [*rs, rs[0]])
    one_error_line(capsys, flips(science, twice), "doc_id 0 twice")
    broken = tmp_path / "broken" / science.name
    broken.parent.mkdir()
    broken.write_text(science.read_text()[:-40])  # cut inside the last record
    one_error_line(capsys, flips(broken, t["fs_science"]), science.name, ":24:", "not valid JSON")
    one_error_line(capsys, flips(science, t["fs_science"], "--metric", "f1"), "no per-sample f1", "acc, acc_norm")
    scored = _edit(t["fs_science"], tmp_path / "scored", lambda rs: [{**r, "acc": 0.5} for r in rs])
    one_error_line(capsys, flips(science, scored, "--metric", "acc"), "acc is not right/wrong")
    # a run written twice into one output directory: which log is meant is ambiguous
    both = tmp_path / "both"
    shutil.copytree(base, both / "a")
    shutil.copytree(base, both / "b")
    one_error_line(capsys, flips(both, tuned), "2 sample logs of task", "pass the two files")


def test_probe_lm_eval_runs_a_local_task_and_stores_the_same_flips(study, runs, monkeypatch, capsys):
    """``forgetscale probe --lm-eval TASK.yaml``: the real harness in-process on the study's base and adapter,
    the task included from its file; its stored flips are those of the two lm_eval command-line runs' logs."""
    from forgetscale.store import open_store

    base, tuned = runs
    assert main(["flips", str(base), str(tuned), "--json"]) == 0
    want = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    monkeypatch.chdir(DATA)  # the task's data_files are relative, as for lm_eval itself
    monkeypatch.setenv("HF_DATASETS_CACHE", str(study / "hf-datasets"))
    assert main(["probe", str(study), "--lm-eval", str(DATA / "fs_reasoning.yaml"), "--json"]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    (rid,) = [r for r in rows if r != "base"]
    got, w = rows[rid], want["fs_reasoning"]
    assert got["probe"] == "lm_eval:fs_reasoning" and got["n"] == 24
    for k in ("n10", "n01", "mcnemar_p", "agreement", "accuracy", "base_accuracy", "right_to_wrong_hi"):
        assert got[k] == pytest.approx(w[k], abs=1e-12), k
    assert rows["base"]["n10"] is None  # the base is not compared with itself
    with open_store(study, create=False) as store:
        items = {r["run_id"]: r["items"] for r in store.probes() if r["probe"] == "lm_eval:fs_reasoning"}
    assert len(items[rid]) == 24 and {"answer", "base_answer", "correct", "base_correct"} <= set(items[rid][0])
    rc = main(["probe", str(study), "--lm-eval", str(DATA / "missing.yaml")])
    one_error_line(capsys, rc, "missing.yaml", "cannot read the task file")
