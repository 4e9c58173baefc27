"""``data.examples``: whether the data orders of a study share their training examples or draw their own.

The held-out examples (what ft_loss is measured on) stay the same for every order either way; run ids of
``shared`` studies are the ids they had before the key existed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
from itertools import combinations
from pathlib import Path

import pytest

from forgetscale.config import RunConfig, load_config
from forgetscale.data.sources import example_pool, load_splits
from forgetscale.laws.rows import shared_training
from forgetscale.workspace import Workspace
from tests.helpers import TEXT, one_error_line, store_rows


def _keys(examples: list[dict]) -> set[str]:
    return {json.dumps(e, sort_keys=True) for e in examples}


def _splits(examples: str, seed: int, **data: object) -> tuple[list[dict], list[dict]]:
    """A run's raw (train, held-out) examples, through the workspace as a run gets them."""
    run = RunConfig(data={"dataset": "news", "n_train": 24, "n_heldout": 6, **data, "examples": examples},
                    train={"seed": seed})  # fmt: skip
    return Workspace(Path("/nonexistent-cache")).raw_data(run)  # raw data read no cache


@pytest.mark.parametrize("dataset", ["news", "instruct"])
def test_per_order_draws_each_order_its_own_examples_and_keeps_the_held_out_ones(dataset):
    (train0, held0), (train1, held1) = (_splits("per_order", s, dataset=dataset) for s in (0, 1))
    assert held0 == held1
    assert len(train0) == len(train1) == 24
    assert len(_keys(train0) & _keys(train1)) <= 1  # fresh samples of the generator: at most a rare repeat
    assert not (_keys(train0) | _keys(train1)) & _keys(held0)
    assert _splits("per_order", 0, dataset=dataset) == (train0, held0)  # seeded: the same order, the same draw


def test_shared_gives_every_order_the_same_examples_as_before():
    (train0, held0), (train1, held1) = (_splits("shared", s) for s in (0, 1))
    assert (train0, held0) == (train1, held1)
    assert (train0, held0) == load_splits("news", 24, 6, 0)  # the draw the key's absence always made
    assert held0 == _splits("per_order", 3)[1]  # per_order keeps the shared held-out set


def test_per_order_from_a_file_overlaps_as_random_draws_do(tmp_path):
    """Two orders' draws from a file share n_train^2 / pool examples on average, the number the output states."""
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"example {i}"}) for i in range(200)))
    n_train, n_heldout = 48, 8
    pool = example_pool(str(path), n_train, n_heldout)
    assert pool == 192
    draws = [load_splits(str(path), n_train, n_heldout, 0, order=s) for s in range(12)]
    assert all(held == draws[0][1] for _, held in draws)
    assert draws[0][1] == load_splits(str(path), n_train, n_heldout, 0)[1]
    overlaps = [len(_keys(a) & _keys(b)) for (a, _), (b, _) in combinations(draws, 2)]
    expected = n_train**2 / pool  # 12, which the output states
    assert "draws have about 12 in common" in shared_training(n_train, 12, 4, 2, pool=pool)["statement"]
    # 66 pairs of hypergeometric overlaps (sd 2.6 each): their mean is within 1.5 of 12 unless the draws are
    # not uniform (a shared prefix, say, would give 48)
    assert abs(statistics.mean(overlaps) - expected) < 1.5, overlaps
    assert max(overlaps) < n_train


def test_run_ids_of_shared_studies_are_unchanged():
    # 210cca10ec56 is the default RunConfig's id from before data.examples existed (computed then, and the
    # same JSON now: the key is left out of every dump at its default)
    assert RunConfig().run_id == RunConfig(data={"examples": "shared"}).run_id == "210cca10ec56"
    assert "examples" not in RunConfig().model_dump(mode="json")["data"]
    per_order = RunConfig(data={"examples": "per_order"})
    assert per_order.run_id != RunConfig().run_id
    assert RunConfig.model_validate(per_order.model_dump(mode="json")) == per_order
    ids = [r.run_id for r in load_config(preset="default").runs()]
    assert ids[:2] == ["d36091979260", "f5eead920ef0"]  # the default preset's first runs, ids from before


def test_the_statement_says_whether_orders_share_their_examples():
    shared = shared_training(256, 32, 4, 2)["statement"]
    assert "draw from the same 256 training examples" in shared and "64 (50%)" in shared
    fresh = shared_training(256, 32, 4, 4, pool=math.inf)
    assert fresh["examples"] == "per_order" and fresh["expected_common"] == 0
    assert "draws its own 256 training examples" in fresh["statement"]
    assert "fresh sample of the synthetic generator" in fresh["statement"] and "rare repeats" in fresh["statement"]
    drawn = shared_training(256, 32, 4, 4, pool=1024)["statement"]
    assert "the 1024 outside the held-out ones" in drawn
    assert "about 64 in common" in drawn and "about 16 (12%)" in drawn  # 256^2/1024 drawn, 128^2/1024 seen
    assert "same" not in drawn
    assert "in common" not in shared_training(256, 32, 4, 1, pool=math.inf)["statement"]


def test_a_file_too_small_for_per_order_is_one_error_line(tiny_model, tmp_path, capsys):
    from forgetscale.cli import main

    path = tmp_path / "small.txt"
    path.write_text(TEXT)  # 40 paragraphs: 6 held out, 34 to draw from
    args = ["run", "--out", str(tmp_path / "out"), "--set", f"model.name={tiny_model}", "--set", f"data.dataset={path}",
            "--set", "data.n_heldout=6", "--set", "data.examples=per_order", "--set", "data.n_train=34"]  # fmt: skip
    one_error_line(capsys, main(args), "per_order", "34 outside the held-out ones", "data.n_train")
    assert not (tmp_path / "out").exists()


def test_a_per_order_study_trains_each_order_on_its_own_examples(tiny_overrides, tmp_path):
    """Through the pipeline: the orders' data fingerprints differ, their step-0 ft_loss (the held-out set, before
    any update) is the same, and the findings say that the orders drew their own examples."""
    from forgetscale.cli import main
    from forgetscale.results import findings

    out = tmp_path / "study"
    sets = [*tiny_overrides, "sweep.data.dataset=[news]", "sweep.lora.rank=[1]", "sweep.train.seed=[0,1]",
            "data.examples=per_order", "probes.enabled=false"]  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    runs = store_rows(out, "SELECT run_id, provenance FROM runs")
    assert len(runs) == 2
    assert len({json.loads(r["provenance"])["data_fingerprint"] for r in runs}) == 2
    start = store_rows(out, "SELECT ft_loss FROM measurements WHERE step = 0")
    assert len(start) == 2 and start[0]["ft_loss"] == pytest.approx(start[1]["ft_loss"], rel=1e-6)
    given = {f["evidence"]["conditional_on"] for f in findings(Path(out))}
    assert given and all("each of the 2 data order(s) draws its own 24 training examples" in g for g in given)
