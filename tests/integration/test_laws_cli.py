"""fit / predict / plan through the CLI on a store filled with measurements from a known law."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from forgetscale.cli import main
from forgetscale.store import open_store

PER_RANK = 1000.0
RANKS = (1, 2, 4, 8, 16)
BASE_ENTROPY = 1.3  # below forget_ce at every step >= 2 of the sweep (1.59 at rank 1, step 2)
STEPS = (0, 2, 4, 8, 16, 32, 64)


def _truth(P, N):
    ft = 1.0 + 5.0 * P**-0.2 + 1.0 * N**-0.4
    forget = 4.0 - 0.8 * ft  # the linear law: c_fft = 0.8, s_fft = 4.0
    kl = forget - BASE_ENTROPY  # forget_ce = base_entropy + forget_kl, as measured
    return ft, forget, kl


@pytest.fixture
def synthetic_study(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    with open_store(tmp_path) as store:
        ids = []
        for rank in RANKS:
            rid = f"run-r{rank}"
            ids.append(rid)
            store.register_run(rid, {"rank": rank}, "news", rank)
            store.start_run(rid, int(rank * PER_RANK), {})
            for step in STEPS:
                noise = 1 + 0.005 * rng.standard_normal(3) if step else np.ones(3)
                ft, forget, kl = _truth(rank * PER_RANK, max(step, 1))
                kl = 0.0 if step == 0 else kl * noise[2]
                store.add_measurement(
                    rid,
                    {
                        "step": step, "tokens": step * 100, "ft_loss": ft * noise[0], "forget_ce": BASE_ENTROPY + kl,
                        "forget_kl": kl, "base_entropy": BASE_ENTROPY, "forget_top1_ce": 2.5, "data_loss": 3.0,
                        "n_eval_tokens": 100,
                    },
                )  # fmt: skip
            store.finish_run(rid, {"total": 1.0})
        store.set_meta("run_ids", ids)
        store.set_meta("study", {"fit": {"n_boot": 30}})
    return tmp_path


def test_fit_recovers_the_laws_and_writes_fits(synthetic_study: Path, capsys):
    assert main(["fit", str(synthetic_study), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((synthetic_study / "fits.json").read_text())["fits"] == result["fits"]
    news = result["fits"]["news"]
    lin = news["linear"]["params"]
    assert lin["c_fft"]["value"] == pytest.approx(0.8, rel=0.05)
    assert lin["s_fft"]["value"] == pytest.approx(4.0, rel=0.05)
    assert lin["c_fft"]["lo"] <= lin["c_fft"]["value"] <= lin["c_fft"]["hi"]
    # every comparison row carries the held-out error of change, the larger of its two parts
    for row in result["comparison"]:
        parts = [row["heldout_P_error_of_change"], row["heldout_N_error_of_change"]]
        if None not in parts:
            assert row["heldout_error_of_change"] == max(parts)
        assert row["state"] in ("reliable", "unreliable", "undecided") and row["reliability"]
        assert row["reliable"] == (row["state"] == "reliable")
        if row["reliable"]:
            assert row["heldout_error_of_change"] <= 0.15
    assert any(r["reliable"] for r in result["comparison"] if r["target"] == "ft_loss")
    # findings: F1-F4 and F6 for the dataset (no probes here, so no F5), verdicts from the closed set
    found = {f["finding"]: f for f in result["findings"] if f["dataset"] == "news"}
    assert set(found) == {"F1", "F2", "F3", "F4", "F6"}
    assert "no task_kl recorded" in found["F6"]["evidence"]["reason"]  # this synthetic store has none
    assert all(f["verdict"] in ("supported", "not_supported", "undecided") for f in found.values())
    assert found["F1"]["verdict"] == "supported" and found["F1"]["evidence"]["r2"] > 0.9
    assert "bootstrap over runs" in found["F4"]["evidence"]["test"]
    assert json.loads((synthetic_study / "fits.json").read_text())["findings"] == result["findings"]
    add = news["additive:ft_loss"]["params"]
    # alpha is weakly identified next to E on 5 ranks (0.16 at this noise draw): its interval must hold the truth
    assert add["alpha"]["lo"] <= 0.2 <= add["alpha"]["hi"] and add["beta"]["value"] == pytest.approx(0.4, rel=0.1)
    with open_store(synthetic_study) as store:
        assert ("news", "linear") in store.fits()
    laws = {row["law"] for row in result["comparison"]}
    assert {"linear", "kl_power", "additive:ft_loss"} <= laws


def test_predict_and_plan(synthetic_study: Path, capsys):
    assert main(["fit", str(synthetic_study)]) == 0
    text = capsys.readouterr().out
    # each law and target: its state, held-out error and noise floor; every undecided with its reason
    assert "noise_floor" in text and "state" in text and "coverage" in text and "units" in text
    assert "95% intervals: t over 5 runs" in text
    fits = json.loads((synthetic_study / "fits.json").read_text())
    for row in fits["comparison"]:
        if row["state"] == "undecided":
            assert f"{row['law']}: undecided: {row['reliability']}" in text
    assert main(["predict", str(synthetic_study), "--rank", "4", "--steps", "16"]) == 0
    text = capsys.readouterr().out
    for q in ("ft_loss", "forget_ce", "forget_kl"):
        line = next(x for x in text.splitlines() if x.strip().startswith(q))
        assert "95% prediction interval (checked coverage" in line and "5 runs" in line and "(reliable)" in line
    assert "conditional on the study's one forgetting corpus" in text  # what every interval rests on
    assert main(["plan", str(synthetic_study), "--max-forgetting", "2.1"]) == 0
    text = capsys.readouterr().out
    assert "among the studied sizes and steps" in text and "(extrapolated)" not in text.splitlines()[0]
    assert "checked coverage" in text and "5 runs" in text
    assert main(["plan", str(synthetic_study), "--max-forgetting", "2.1", "--extrapolate", "--json"]) == 0
    wide = json.loads(capsys.readouterr().out)
    assert wide["extrapolate"] is True and max(t["rank"] for t in wide["tradeoff"]) == 256  # beyond ranks 1-16
    assert main(["predict", str(synthetic_study), "--rank", "32", "--steps", "64", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    ft, forget, kl = _truth(32 * PER_RANK, 64)
    assert pred["ft_loss"]["value"] == pytest.approx(ft, rel=0.03)
    assert pred["forget_kl"]["value"] == pytest.approx(kl, rel=0.15)
    assert pred["forget_ce"]["value"] - pred["forget_kl"]["value"] == pytest.approx(BASE_ENTROPY, abs=1e-9)
    assert pred["ft_loss"]["extrapolated"] is True  # rank 32 is beyond the sweep
    assert pred["ft_loss"]["reliable"] is True and pred["ft_loss"]["lo"] < pred["ft_loss"]["value"]
    budget = 2.1
    assert main(["plan", str(synthetic_study), "--max-forgetting", str(budget), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["forget_ce"]["hi"] <= budget
    assert main(["plan", str(synthetic_study), "--max-forgetting", "0.01"]) == 2  # infeasible budget
    assert "no (rank, steps)" in capsys.readouterr().err


def test_fit_from_csv_additive(tmp_path: Path, capsys):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "d", "loss", "run"])
        for i, (n, d) in enumerate((n, d) for n in (1e7, 3e7, 1e8, 3e8) for d in (1e9, 3e9, 1e10, 3e10)):
            w.writerow([n, d, (1.8 + 400 / n**0.34 + 2000 / d**0.37) * (1 + 0.002 * rng.standard_normal()), i])
    args = ["fit", "--from-csv", str(path), "--x", "n,d", "--y", "loss", "--law", "additive", "--group", "run"]
    assert main([*args, "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["params"]["alpha"]["value"] == pytest.approx(0.34, rel=0.1)
    assert fit["params"]["E"]["value"] == pytest.approx(1.8, rel=0.05)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["fit", "DIR_MISSING"], "no study.sqlite"),
        (["fit", "--from-csv", "CSV", "--x", "n", "--y", "loss", "--law", "additive"], "takes 2 x column"),
        (["fit", "--from-csv", "CSV", "--x", "n,zz", "--y", "loss", "--law", "additive"], "no column 'zz'"),
        (["fit", "--from-csv", "CSV", "--x", "n,d", "--y", "loss", "--law", "nolaw"], "nolaw"),
        (["predict", "DIR_MISSING", "--rank", "4", "--steps", "10"], "no study.sqlite"),
    ],
)
def test_bad_input(tmp_path: Path, capsys, args, needle):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("n,d,loss\n1,2,3\n")
    args = [str(tmp_path / "missing") if a == "DIR_MISSING" else str(csv_path) if a == "CSV" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("forgetscale: error:") and needle in err and "\n" not in err


def test_tiny_study_states_findings_and_refuses_to_predict_without_a_reliable_law(tmp_path: Path, capsys,
                                                                                 tiny_overrides):
    # Two ranks and 8 steps: leaving the largest rank out leaves one P, so no (P, N) law can
    # be validated, hence none is reliable, and predict/plan must say so (exit 0: not bad input).
    out = tmp_path / "tiny"
    assert main(["run", "--out", str(out), *(f for o in tiny_overrides for f in ("--set", o))]) == 0
    printed = capsys.readouterr().out
    assert "F1 " in printed and "linear law" in printed  # run ends with the findings and the headline law
    result = json.loads((out / "fits.json").read_text())
    assert {f["finding"] for f in result["findings"]} >= {"F1", "F2", "F3", "F4"}
    assert all(f["verdict"] in ("supported", "not_supported", "undecided") for f in result["findings"])
    # what the runs' data orders share, from their configs (24 examples, 8 steps of 4: each order saw all 24)
    assert all("draw from the same 24 training examples: each has seen 24 by step 8" in f["evidence"]["conditional_on"]
               for f in result["findings"])  # fmt: skip
    assert result["comparison"] and all("heldout_error_of_change" in r for r in result["comparison"])
    assert main(["predict", str(out), "--rank", "8", "--steps", "8", "--dataset", "news", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    for q in ("ft_loss", "forget_ce", "forget_kl"):
        assert pred[q]["value"] is None and "no reliable law" in pred[q]["reason"]
    assert main(["predict", str(out), "--rank", "8", "--steps", "8", "--dataset", "news"]) == 0
    assert "no reliable law" in capsys.readouterr().out
    assert main(["plan", str(out), "--max-forgetting", "3", "--dataset", "news"]) == 0
    assert "no reliable law" in capsys.readouterr().out
