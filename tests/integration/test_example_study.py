"""examples/study.yaml, the README's study on your own model and data, runs as the README says (here with the
tiny model and a tiny jsonl substituted, as ``--set`` lets a user substitute their own)."""

from __future__ import annotations

import json
from pathlib import Path

from forgetscale import load_results
from forgetscale.cli import main
from forgetscale.config import load_config
from forgetscale.data.sources import read_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_example_data_holds_both_record_shapes():
    examples = read_file(EXAMPLES / "data.jsonl")
    shapes = {"messages" if "messages" in e else "text" for e in examples}
    assert len(examples) == 64 and shapes == {"messages", "text"}
    assert all(e["messages"][-1]["role"] == "assistant" for e in examples if "messages" in e)


def test_the_example_study_runs_with_your_model_and_data_substituted(tiny_model, tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Where does ferry {i} go?"},
                          {"role": "assistant", "content": f"Ferry {i} goes to Selmoor at {i % 12 + 1} o'clock."}]}
            for i in range(20)] + [{"text": f"Day {i}: the river ran high past the mill."} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sets = [f"model.name={tiny_model}", f"data.dataset={data}", "data.n_train=16", "data.n_heldout=4",
            "train.steps=4", "train.eval_steps=[2,4]", "fit.min_step=1", "forgetting.n_prompts=4",
            "forgetting.max_new_tokens=8", "sweep.lora.rank=[1,4]", "sweep.train.seed=[0]"]  # fmt: skip
    study = load_config(EXAMPLES / "study.yaml")
    assert study.model.name == "smollm2-135m-instruct" and study.data.dataset == "examples/data.jsonl"
    out = tmp_path / "study"
    rc = main(["run", str(EXAMPLES / "study.yaml"), "--out", str(out), *[a for s in sets for a in ("--set", s)]])
    assert rc == 0, capsys.readouterr().err
    res = load_results(out)
    assert sorted(r["rank"] for r in res.runs) == [1, 4] and {r["status"] for r in res.runs} == {"done"}
    # the file's own settings reached the runs: its learning rate, not the default's
    assert {r["config"]["train"]["lr"] for r in res.runs} == {study.train.lr}
    assert sorted({r["step"] for r in res.rows}) == [0, 2, 4]
    assert (out / "fits.json").is_file() and (out / "report.html").is_file()
