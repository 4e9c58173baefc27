"""forgetscale.results: the rows the laws see, and a stored fit as one flat row."""

from __future__ import annotations

import numpy as np
import pytest

from forgetscale.laws import fit_law
from forgetscale.results import flatten_fit, load_results, study_rows
from forgetscale.store import open_store


def _run(store, rid, *, data_seed=0, train_seed=0, mitigation="none", done=True):
    config = {"data": {"dataset": "news", "seed": data_seed}, "train": {"seed": train_seed},
              "mitigation": {"kind": mitigation, "kl_weight": 0.1}}  # fmt: skip
    store.register_run(rid, config, "news", 4)
    store.start_run(rid, 4000, {})
    for step in (0, 8):
        store.add_measurement(rid, {"step": step, "tokens": 10 * step, "ft_loss": 2.0, "forget_ce": 1.5,
                                    "forget_kl": 0.1, "base_entropy": 1.4, "n_eval_tokens": 10})  # fmt: skip
    if done:
        store.finish_run(rid, {"total": 1.0})
    else:
        store.fail_run(rid, "boom")


def test_study_rows_carry_each_runs_data_order(tmp_path):
    with open_store(tmp_path) as store:
        _run(store, "a", train_seed=0)
        _run(store, "b", train_seed=1)
        _run(store, "c", data_seed=2, train_seed=1)  # other examples: another data order
        _run(store, "kl", train_seed=1, mitigation="kl")
        _run(store, "failed", train_seed=1, done=False)
        _run(store, "old", train_seed=5)  # not in the study last run here
        store.set_meta("run_ids", ["a", "b", "c", "kl", "failed"])
        plain = study_rows(store)
        every = study_rows(store, mitigated=True)
    assert {(r["run_id"], r["seed"]) for r in plain} == {("a", "0/0"), ("b", "0/1"), ("c", "2/1")}
    assert len(plain) == 6  # two steps per finished plain run
    assert {r["run_id"] for r in every} == {"a", "b", "c", "kl"}
    assert {r["seed"] for r in load_results(tmp_path).rows} == {"0/0", "0/1", "2/1"}  # the public tables too


def test_flatten_fit_carries_fit_clean_and_each_targets_reliability():
    P, N = np.repeat([1e4, 4e4, 16e4, 64e4], 5), np.tile([8, 12, 16, 24, 32.0], 4)
    kl = 1e-3 * P**0.2 * N**0.8 * np.exp(0.02 * np.random.default_rng(0).standard_normal(P.size))
    fit = fit_law("kl_power", {"P": P, "N": N}, kl, groups=np.repeat(np.arange(4), 5), targets=("forget_kl",),
                  n_boot=0)  # fmt: skip
    row = flatten_fit("news", "kl_power", fit.to_dict())
    assert row["fit_clean"] is fit.fit_clean and "reliable" not in row
    assert row["state_forget_kl"] in ("reliable", "unreliable", "undecided")
    assert row["heldout_error_forget_kl"] is None or row["heldout_error_forget_kl"] >= 0
    assert row["a"] == pytest.approx(fit.params["a"]) and row["a_lo"] <= row["a"] <= row["a_hi"]
    # a fit stored by an older version named fit_clean "reliable"
    assert flatten_fit("news", "linear", {"law": "linear", "reliable": False, "params": {}})["fit_clean"] is False


def test_a_store_from_before_post_hoc_methods_keeps_its_rescaled_rows(tmp_path):
    """scaled_measurements gained ``method`` in its key: an old store's rows are copied over as rescale's."""
    import sqlite3

    from forgetscale.store import open_store

    con = sqlite3.connect(tmp_path / "study.sqlite")
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, dataset TEXT NOT NULL,
            rank INTEGER NOT NULL, P INTEGER, status TEXT NOT NULL, error TEXT, started_at REAL,
            finished_at REAL, timings TEXT, provenance TEXT);
        INSERT INTO runs VALUES ('r1', '{}', 'news', 4, 100, 'done', NULL, NULL, NULL, NULL, NULL);
        CREATE TABLE scaled_measurements (run_id TEXT NOT NULL, step INTEGER NOT NULL, scale REAL NOT NULL,
            tokens INTEGER NOT NULL, ft_loss REAL, forget_ce REAL, forget_kl REAL, base_entropy REAL,
            forget_top1_ce REAL, data_loss REAL, n_eval_tokens INTEGER, forget_ce_se REAL, forget_kl_se REAL,
            PRIMARY KEY (run_id, step, scale));
        INSERT INTO scaled_measurements VALUES ('r1', 8, 0.5, 800, 2.0, 3.0, 0.4, 2.6, 3.1, 2.9, 50, 0.1, 0.05);
    """)
    con.commit()
    con.close()
    with open_store(tmp_path) as store:
        (row,) = store.scaled_measurements()
        assert (row["method"], row["strength"], row["forget_kl"], row["forget_kl_se"]) == ("rescale", 0.5, 0.4, 0.05)
        assert row["ft_loss_se"] is None and row["task_kl"] is None  # columns added since: NULL in old rows
        # the same step and strength under another method is a new row, not a clash
        store.add_measurement("r1", {"step": 8, "method": "intruders", "strength": 0.5, "tokens": 800, "ft_loss": 2.1,
                                     "forget_ce": 2.9, "n_intruders": 3})  # fmt: skip
        assert [(r["method"], r["n_intruders"]) for r in store.scaled_measurements()] == [("intruders", 3),
                                                                                           ("rescale", None)]


def test_overhead_against_the_matching_plain_run_and_per_post_hoc_strength():
    from forgetscale.results import overhead

    def run(rid, kind, rank, seed, **timings):
        return {"run_id": rid, "dataset": "news", "rank": rank, "status": "done", "timings": timings,
                "config": {"mitigation": {"kind": kind}, "data": {"seed": 0}, "train": {"seed": seed}}}

    runs = {r["run_id"]: r for r in (
        run("p4", "none", 4, 0, train=10.0, post_hoc_rescale=6.0), run("p16", "none", 16, 0, train=20.0),
        run("k4", "kl", 4, 0, train=14.0), run("k16", "kl", 16, 0, train=30.0), run("k4s1", "kl", 4, 1, train=9.0))}
    points = [{"run_id": rid, "mitigation": "kl", "strength": 1.0} for rid in ("k4", "k16")]
    points += [{"run_id": "p4", "mitigation": "rescale", "strength": s} for s in (0.25, 0.5, 0.75)]
    assert overhead(runs, points, "kl", 1.0) == pytest.approx((0.4 + 0.5) / 2)  # 14/10 - 1 and 30/20 - 1
    assert overhead(runs, points, "rescale", 0.5) == pytest.approx(6.0 / 3 / 10.0)  # one strength of three
    # a run whose plain partner (rank 4, data order 0/1) is missing: no figure rather than a wrong one
    assert overhead(runs, [{"run_id": "k4s1", "mitigation": "kl", "strength": 1.0}], "kl", 1.0) is None
