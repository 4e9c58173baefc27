"""Behaviour probes through the real CLI on a tiny random Llama: coverage, identity, no mutation, bad input."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from forgetscale.cli import main
from forgetscale.probes.inference import PROBES
from forgetscale.probes.runner import BASE

ALL_PROBES = [p for names in PROBES.values() for p in names]
GEN_PROBES = ["knowledge", "reasoning_gen", "safety"]


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _probe_rows(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    from forgetscale.store import open_store

    with open_store(out, create=False) as store:
        return {(r["run_id"], r["probe"]): r for r in store.probes()}


def _created(out: Path) -> list[tuple]:
    con = sqlite3.connect(out / "study.sqlite")
    try:
        return con.execute("SELECT run_id, probe, created_at FROM probes ORDER BY run_id, probe").fetchall()
    finally:
        con.close()


def _copy(out: Path, tmp_path: Path) -> Path:
    """A private copy of the shared study, for tests that add runs or overwrite results."""
    dst = tmp_path / "study"
    shutil.copytree(out, dst)
    return dst


def _one_error_line(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("forgetscale: error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert err[-1] == errors[0] and "Traceback" not in "\n".join(err)


@pytest.fixture(scope="module")
def probed_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, list[str]]:
    """Two finished runs (two adapters: one attached, one swapped in), probed by `forgetscale run`."""
    from tests.helpers import TINY_STUDY

    overrides = [
        f"model.name={tiny_model}",
        *TINY_STUDY,
        "sweep.data.dataset=[instruct]",
        "probes.enabled=true",
        "probes.max_items=6",
        "probes.max_new_tokens=16",
    ]
    out = tmp_path_factory.mktemp("probed")
    assert main(["run", "--out", str(out), *_sets(overrides)]) == 0
    con = sqlite3.connect(out / "study.sqlite")
    run_ids = [r for (r,) in con.execute("SELECT run_id FROM runs WHERE status='done' ORDER BY rowid")]
    con.close()
    assert len(run_ids) == 2
    return out, run_ids


def test_base_and_every_run_have_every_probe(probed_study):
    out, run_ids = probed_study
    rows = _probe_rows(out)
    assert set(rows) == {(rid, p) for rid in [BASE, *run_ids] for p in ALL_PROBES}
    for (rid, probe), row in rows.items():
        s = row["summary"]
        assert s["n"] == 6 == len(row["items"])
        for key in ("accuracy", "base_accuracy", "agreement"):
            assert key in s
        if probe == "safety":
            assert s["accuracy"] is None and 0 <= s["refusal_rate"] <= 1
        else:
            assert 0 <= s["accuracy"] <= 1 and 0 <= s["base_accuracy"] <= 1
        if rid == BASE:  # the base against itself
            assert s["agreement"] == 1.0 and s["accuracy"] == s["base_accuracy"]
        for item in row["items"]:
            assert item["prompt"] and "answer" in item and "base_answer" in item and "agree" in item
            if probe in GEN_PROBES:  # the report shows these side by side
                assert isinstance(item["generation"], str) and isinstance(item["base_generation"], str)
    loglik = rows[BASE, "reasoning_loglik"]["summary"]
    assert {"accuracy_norm", "base_accuracy_norm", "agreement_norm"} <= loglik.keys()


def test_base_rows_equal_the_base_side_of_every_run(probed_study):
    out, run_ids = probed_study
    rows = _probe_rows(out)
    for probe in ALL_PROBES:
        base_items = rows[BASE, probe]["items"]
        for rid in run_ids:
            for b, r in zip(base_items, rows[rid, probe]["items"], strict=True):
                assert r["id"] == b["id"] and r["base_answer"] == b["answer"]
                if probe in GEN_PROBES:
                    assert r["base_generation"] == b["generation"]


def test_trained_adapters_change_the_loglikelihoods(probed_study):
    """Teeth for the identity test below: trained adapters were really applied, each its own."""
    out, run_ids = probed_study
    rows = _probe_rows(out)
    per_run = []
    for rid in run_ids:
        items = rows[rid, "reasoning_loglik"]["items"]
        gaps = [abs(a - b) for it in items for a, b in zip(it["logliks"], it["base_logliks"], strict=True)]
        assert max(gaps) > 1e-4
        per_run.append([ll for it in items for ll in it["logliks"]])
    assert per_run[0] != per_run[1]


def test_loglikelihoods_match_an_independent_computation(probed_study, tiny_model):
    """lm-eval's recipe by hand, unbatched, on freshly loaded models: base and the swapped-in second adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetscale.probes.sets import load_probe_set

    out, run_ids = probed_study
    rows = _probe_rows(out)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    items = load_probe_set("reasoning")[:6]

    def logliks(model: Any) -> list[float]:
        res = []
        for it in items:
            ctx = f"Question: {it.question}\nAnswer:"
            n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
            for choice in it.choices:
                ids = tok(ctx + " " + choice, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
                res.append(float(sum(logp[t - 1, ids[t]] for t in range(n_ctx, len(ids)))))
        return res

    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    stored = [ll for it in rows[BASE, "reasoning_loglik"]["items"] for ll in it["logliks"]]
    assert stored == pytest.approx(logliks(base), abs=1e-4)
    tuned = PeftModel.from_pretrained(base, out / "adapters" / run_ids[1]).eval()
    stored = [ll for it in rows[run_ids[1], "reasoning_loglik"]["items"] for ll in it["logliks"]]
    assert stored == pytest.approx(logliks(tuned), abs=1e-4)


def test_probe_command_prints_json_and_reuses_stored_results(probed_study, capsys):
    out, run_ids = probed_study
    before = _created(out)
    assert main(["probe", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert {(r["run_id"], r["probe"]) for r in rows} == {(rid, p) for rid in [BASE, *run_ids] for p in ALL_PROBES}
    assert [r["run_id"] for r in rows[: len(ALL_PROBES)]] == [BASE] * len(ALL_PROBES)
    for r in rows:
        assert {"n", "accuracy", "base_accuracy", "agreement", "refusal_rate", "n10", "n01", "mcnemar_p"} <= r.keys()
        for rate in ("accuracy", "base_accuracy", "agreement", "right_to_wrong", "refusal_rate"):
            if r[rate] is not None:  # every rate inside its Wilson interval
                assert r[f"{rate}_lo"] <= r[rate] <= r[f"{rate}_hi"], (r["run_id"], r["probe"], rate)
        if r["run_id"] == BASE:  # the base against itself
            assert r["n10"] == r["n01"] == 0 and r["mcnemar_p"] == 1.0
        if r["probe"] == "safety":
            assert r["accuracy"] is None and r["lost_refusals"] == r["n10"]
    assert "already probed" in captured.err
    assert _created(out) == before  # nothing recomputed or rewritten

    assert main(["probe", str(out)]) == 0  # the rates table, then the flips table of the fine-tuned runs
    from forgetscale.probes.command import COLUMNS, FLIP_COLUMNS

    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == list(COLUMNS)
    assert table[len(rows) + 1] == "" and table[len(rows) + 2].startswith("flips against the base")
    assert table[len(rows) + 3].split() == list(FLIP_COLUMNS)
    flipped = table[len(rows) + 4:]
    assert len(flipped) == len(run_ids) * len(ALL_PROBES)
    by_key = {(r["run_id"], r["probe"]): r for r in rows}
    for line in flipped:  # each printed count is the JSON row's
        rid, probe, n, n10 = line.split()[:4]
        assert (int(n), int(n10)) == (by_key[rid, probe]["n"], by_key[rid, probe]["n10"])


def test_probe_command_selects_runs_kinds_and_items(probed_study, tmp_path, capsys):
    out = _copy(probed_study[0], tmp_path)
    rid = probed_study[1][0]
    assert main(["probe", str(out), "--runs", rid, "--probes", "reasoning", "--max-items", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["probe"], r["n"]) for r in rows] == [
        (BASE, "reasoning_loglik", 3), (BASE, "reasoning_gen", 3),
        (rid, "reasoning_loglik", 3), (rid, "reasoning_gen", 3),
    ]  # fmt: skip
    stored = _probe_rows(out)
    assert stored[rid, "reasoning_gen"]["summary"]["n"] == 3
    assert stored[rid, "knowledge"]["summary"]["n"] == 6  # untouched


def test_a_fresh_adapter_is_the_identity_on_every_probe(probed_study, tiny_model, tmp_path, capsys):
    """LoRA B = 0 at step 0: the adapter must agree with the base on every item and score exactly like it."""
    from forgetscale import train
    from forgetscale.config import ModelConfig, RunConfig, StudyConfig
    from forgetscale.models import load_model
    from forgetscale.store import open_store

    out = _copy(probed_study[0], tmp_path)
    with open_store(out, create=False) as store:
        run: RunConfig = StudyConfig.model_validate(store.get_meta("study")).runs()[0]
        lm = load_model(ModelConfig(name=str(tiny_model)))
        peft_model = train.attach_lora(lm.model, run.lora.model_copy(update={"rank": 8}), seed=3)
        train.save_adapter(peft_model, out / "adapters" / "step0")
        store.register_run("step0", run.model_dump(mode="json"), run.data.dataset, 8)
        store.start_run("step0", train.trainable_parameters(peft_model), {})
        store.finish_run("step0", {})
    assert main(["probe", str(out), "--runs", "step0", "--max-new-tokens", "24", "--json"]) == 0
    rows = {r["probe"]: r for r in json.loads(capsys.readouterr().out) if r["run_id"] == "step0"}
    assert set(rows) == set(ALL_PROBES)
    stored = _probe_rows(out)
    for probe, row in rows.items():
        assert row["n"] == 6 and row["agreement"] == 1.0, probe
        assert row["accuracy"] == row["base_accuracy"] and row["refusal_rate"] == row["base_refusal_rate"]
        for it in stored["step0", probe]["items"]:
            assert it["agree"] and it["answer"] == it["base_answer"] and it["correct"] == it["base_correct"]
            if probe in GEN_PROBES:
                assert it["generation"] == it["base_generation"]
            else:
                # B = 0 adds exactly zero, but the adapter's forward is a different code path (other
                # kernels, other summation order): the ~100-token sums of fp32 log-probs may differ by a
                # few ulp per token (machines differ: 4e-9 relative seen on an Intel Xeon). 1e-6 relative
                # is far above that rounding and far below any real change (a trained adapter moves them
                # by >1e-3).
                assert it["logliks"] == pytest.approx(it["base_logliks"], rel=1e-6, abs=1e-6)
    assert rows["reasoning_loglik"]["agreement_norm"] == 1.0
    for probe, row in rows.items():  # no flips, and nothing to test
        assert row["n10"] == row["n01"] == 0 and row["mcnemar_p"] == 1.0, probe


def test_probing_leaves_the_shared_base_model_unchanged(probed_study, tmp_path):
    import torch

    from forgetscale.config import ProbesConfig, StudyConfig
    from forgetscale.models import cache_dir
    from forgetscale.probes.inference import run_probe
    from forgetscale.probes.runner import probe_study
    from forgetscale.probes.sets import load_probe_set
    from forgetscale.store import open_store
    from forgetscale.workspace import Workspace

    out = _copy(probed_study[0], tmp_path)
    with open_store(out, create=False) as store:
        study = StudyConfig.model_validate(store.get_meta("study"))
    ws = Workspace(cache_dir())
    lm = ws.model(study.base_run())
    items = {"knowledge": load_probe_set("knowledge")[:4], "reasoning": load_probe_set("reasoning")[:4]}

    def predictions() -> dict[str, list[dict[str, Any]]]:
        return {
            p: run_probe(lm.model, lm.tokenizer, p, items[k], max_new_tokens=12, batch_size=3)
            for k in items
            for p in PROBES[k]
        }

    before = predictions()
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    cfg = ProbesConfig(kinds=("knowledge", "reasoning"), max_items=4, max_new_tokens=12, batch_size=3)
    rows = probe_study(out, ws, cfg, force=True)
    assert {r["run_id"] for r in rows} == {BASE, *probed_study[1]}
    assert ws.model(study.base_run()) is lm  # the same object was used throughout...
    assert not [n for n, _ in lm.model.named_modules() if "lora" in n.lower()]  # ...and no LoRA layer is left
    assert not hasattr(lm.model, "peft_config") or not lm.model.peft_config
    after_weights = lm.model.state_dict()
    assert after_weights.keys() == weights.keys()
    assert all(torch.equal(after_weights[k], w) for k, w in weights.items())  # bit for bit
    # PEFT's unload() puts new module objects back: same weights, but the BLAS may pick another
    # kernel for the new buffers, so summed log-likelihoods may move in the 7th significant digit
    after = predictions()
    for p, recs in before.items():
        for x, y in zip(recs, after[p], strict=True):
            if p == "reasoning_loglik":
                assert y["logliks"] == pytest.approx(x["logliks"], rel=1e-6)
                assert {k: v for k, v in x.items() if k != "logliks"} == {k: v for k, v in y.items() if k != "logliks"}
            else:
                assert x == y
    stored = _probe_rows(out)
    for p, recs in before.items():
        key = "logliks" if p == "reasoning_loglik" else "generation"
        assert [it[key] for it in stored[BASE, p]["items"]] == [r[key] for r in recs]


def test_bad_input_exits_2_with_one_line(probed_study, tmp_path, capsys, monkeypatch):
    out, run_ids = probed_study
    before = _created(out)
    assert main(["probe", str(tmp_path / "nowhere")]) == 2
    _one_error_line(capsys, "no study.sqlite")  # store.open_study's one line, as every command says it
    (tmp_path / "empty").mkdir()
    assert main(["probe", str(tmp_path / "empty")]) == 2
    _one_error_line(capsys, "no study.sqlite")
    assert not (tmp_path / "empty" / "study.sqlite").exists()
    assert main(["probe", str(out), "--runs", "deadbeef0000"]) == 2
    _one_error_line(capsys, "unknown run id(s) deadbeef0000")
    assert main(["probe", str(out), "--max-items", "0"]) == 2
    _one_error_line(capsys, "max_items")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    assert main(["probe", str(out), "--lm-eval", "arc_challenge"]) == 2
    _one_error_line(capsys, "pip install 'forgetscale[lm-eval]'")
    assert _created(out) == before


def test_unfinished_run_or_missing_adapter_is_bad_input(probed_study, tmp_path, capsys):
    from forgetscale.store import open_store

    out = _copy(probed_study[0], tmp_path)
    with open_store(out, create=False) as store:
        store.register_run("pending0", {}, "instruct", 1)
    assert main(["probe", str(out), "--runs", "pending0"]) == 2
    _one_error_line(capsys, "pending0 (pending)")
    shutil.rmtree(out / "adapters" / probed_study[1][0])
    assert main(["probe", str(out)]) == 2
    _one_error_line(capsys, "not a PEFT adapter directory")


def test_lm_eval_runs_on_the_base_and_each_swapped_adapter(probed_study, tmp_path, capsys, monkeypatch):
    """The harness is faked (it is optional and its tasks need the network): the plumbing is what is tested."""
    import torch

    out = _copy(probed_study[0], tmp_path)
    seen: list[str] = []

    class HFLM:
        def __init__(self, pretrained: Any, tokenizer: Any, batch_size: int) -> None:
            self.model, self.tokenizer, self.batch_size = pretrained, tokenizer, batch_size

    def simple_evaluate(model: HFLM, tasks: list[str], limit: int | None, log_samples: bool) -> dict[str, Any]:
        active = getattr(model.model, "active_adapter", None)
        seen.append(active if isinstance(active, str) else BASE)
        ids = model.tokenizer("The river town held its vote.", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            score = float(model.model(ids).logits.float().std())
        # doc 1's answer depends on the model, doc 0's does not
        samples = [
            {"doc_id": 0, "filtered_resps": [(-1.0, True), (-2.0, False)]},
            {"doc_id": 1, "filtered_resps": [(-score, False), (-1.0, False)]},
        ]
        return {
            "results": {t: {"alias": t, "acc,none": score, "acc_stderr,none": 0.01} for t in tasks},
            "n-samples": {t: {"original": 2, "effective": limit or 2} for t in tasks},
            "samples": {t: samples for t in tasks},
        }

    fake = types.ModuleType("lm_eval")
    fake.simple_evaluate = simple_evaluate  # type: ignore[attr-defined]
    fake_models = types.ModuleType("lm_eval.models")
    fake_hf = types.ModuleType("lm_eval.models.huggingface")
    fake_hf.HFLM = HFLM  # type: ignore[attr-defined]
    for name, mod in [("lm_eval", fake), ("lm_eval.models", fake_models), ("lm_eval.models.huggingface", fake_hf)]:
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)

    run_ids = probed_study[1]
    assert main(["probe", str(out), "--lm-eval", "task_a,task_b", "--max-items", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert seen == [BASE, *(f"run_{r}" for r in run_ids)]
    assert {(r["run_id"], r["probe"]) for r in rows} == {
        (rid, f"lm_eval:{t}") for rid in [BASE, *run_ids] for t in ("task_a", "task_b")
    }
    stored = _probe_rows(out)
    base = stored[BASE, "lm_eval:task_a"]["summary"]
    assert base["agreement"] == 1.0 and base["n"] == 2 and base["metrics"]["acc_stderr"] == 0.01
    for rid in run_ids:
        s = stored[rid, "lm_eval:task_a"]["summary"]
        assert s["base_accuracy"] == base["accuracy"] and s["accuracy"] != base["accuracy"]
        assert s["agreement"] in (0.5, 1.0)
    # the base model came back without LoRA layers
    from forgetscale.config import StudyConfig
    from forgetscale.models import cache_dir
    from forgetscale.store import open_store
    from forgetscale.workspace import Workspace

    with open_store(out, create=False) as store:
        study = StudyConfig.model_validate(store.get_meta("study"))
    ws = Workspace(cache_dir())
    from forgetscale.probes.runner import lm_eval_study

    lm_eval_study(out, ws, ["task_a"], run_ids=[run_ids[0]])
    assert not [n for n, _ in ws.model(study.base_run()).model.named_modules() if "lora" in n.lower()]


def test_a_damaged_adapter_is_one_line_and_probes_nothing(probed_study, tmp_path, capsys):
    out = _copy(probed_study[0], tmp_path)
    before = _created(out)
    rid = sorted(p.name for p in (out / "adapters").iterdir())[0]
    (out / "adapters" / rid / "adapter_model.safetensors").write_bytes(b"\x00\xff" * 64)
    assert main(["probe", str(out), "--runs", rid, "--force"]) == 2
    _one_error_line(capsys, f"run {rid}")
    assert _created(out) == before  # checked before the base (or anything) was probed again
