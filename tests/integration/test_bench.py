"""The benchmark's study-side pieces on a tiny finished study (timings are not asserted, only structure
and the top-K lower bound, which must hold on every adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetscale.cli import main


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    from tests.helpers import TINY_STUDY

    out = tmp_path_factory.mktemp("bench-study")
    args = [a for o in [f"model.name={tiny_model}", *TINY_STUDY] for a in ("--set", o)]
    assert main(["run", "--out", str(out), *args]) == 0
    return out


def test_breakdown_covers_every_phase(tiny_study):
    from bench.breakdown import study_breakdown

    b = study_breakdown(tiny_study)
    names = list(b["phases"])
    # set-up first (the base reference only when it was not already in the shared test cache), then the runs
    setup = names[: names.index("training")]
    assert setup in (["load_model", "forgetting_corpus"], ["load_model", "forgetting_corpus", "base_reference"])
    for phase in ("training", "evaluation", "fit", "report"):
        assert b["phases"][phase] > 0


def test_breakdown_of_a_missing_study_says_so(tmp_path):
    from bench.breakdown import study_breakdown

    assert "make study" in study_breakdown(tmp_path / "nothing")["error"]


def test_topk_gap_is_a_tightening_lower_bound_on_every_adapter(tiny_study):
    from bench.accuracy import topk_gap

    g = topk_gap(tiny_study, ks=(8, 64))
    assert g["n_runs"] == 4
    for kls in g["forget_kl"].values():
        assert 0 < kls["top8"] <= kls["top64"] + 1e-9 <= kls["exact"] + 2e-9
    assert 0 <= g["gaps"]["top64"]["max_rel_gap"] <= g["gaps"]["top8"]["max_rel_gap"]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    """bench.speed.Setup on the tiny model: a rank-4 adapter trained 3 steps, a small `self` corpus."""
    import copy

    from bench.speed import Setup

    from forgetscale import train
    from forgetscale.config import load_config
    from forgetscale.workspace import Workspace
    from tests.helpers import TINY_STUDY

    sets = [f"model.name={tiny_model}", *TINY_STUDY, "train.steps=3", "sweep.lora.rank=[4]"]
    study = load_config(preset="smoke", overrides=sets)
    runs = {r.data.dataset: r for r in study.runs()}
    ws = Workspace(tmp_path_factory.mktemp("bench-cache"))
    run = runs["news"]
    lm = ws.model(run)
    corpus = list(ws.reference(run).sequences)
    task_ref = ws.task_reference(run)  # before the adapter, as Setup.create and a study take it
    base_copy = copy.deepcopy(lm.model).eval()
    peft_model = train.attach_lora(lm.model, run.lora, run.train.seed)
    train.train(peft_model, lm.tokenizer, run, ws.data(run)[0], lambda *a: None)
    return Setup(runs, ws, base_copy, peft_model, corpus, task_ref)


def test_bench_functions_run_and_report_their_keys(tiny_setup):
    """Every benchmark function on the tiny model: structure and the correctness figures, no timings."""
    from bench import evaluation, speed

    s = tiny_setup
    bs = s.run.forgetting.batch_size
    f = speed.forgetting_speedup(s, n_evals=1, top_ks=(16,))
    assert set(f["modes"]) == {"hidden", "logits", "top16"}
    assert f["modes"]["hidden"]["mode"] == "hidden"
    # 3 steps on the tiny random model: KL ~2e-5 beside a CE of ~6, so relative KL figures are fp32 noise
    # (~3e-8 absolute); the 1e-6 exactness is tested where KL is large, in test_exact_eval
    h, lg = f["modes"]["hidden"], f["modes"]["logits"]
    assert h["forget_ce"] == pytest.approx(lg["forget_ce"], rel=1e-6)
    assert h["forget_kl"] == pytest.approx(lg["forget_kl"], abs=1e-7)
    assert 0 <= f["hidden_reference_rel_error"] < 1e-2
    assert max(d["merged_rel_error"] for d in f["modes"].values()) < 1e-2
    per_token = {k: d["bytes_per_token"] for k, d in f["modes"].items()}
    assert per_token["hidden"] < per_token["logits"] / 2 and per_token["top16"] < per_token["logits"] / 2  # d=32, V=400

    e = evaluation.eval_vs_bare_forward(s.peft_model, s.corpus, s.task_ref, bs, repeats=1)
    assert e["value"] > 0 and e["floor_s"] > 0 and e["corpus_tokens"] == sum(x.n_targets for x in s.corpus)
    assert e["heldout_tokens"] == sum(x.n_targets for x in s.task_ref.sequences)
    # the evaluation timed is a study's (held_out_metrics then measure, merged): the same numbers as the
    # study's functions give on this adapter. task_kl is held_out_metrics' alone, and > 0 after training.
    from forgetscale.fold import folded
    from forgetscale.forgetting import measure
    from forgetscale.task import held_out_metrics

    with folded(s.peft_model):
        study = {**held_out_metrics(s.peft_model, s.task_ref, bs), **measure(s.peft_model, s.ws.reference(s.run), bs)}
    assert e["metrics"]["task_kl"] > 0
    for k in ("ft_loss", "forget_ce"):  # the same fp32 computation on the same merged weights: equal to rounding
        assert e["metrics"][k] == pytest.approx(study[k], rel=1e-6), k
    assert e["metrics"]["task_kl"] == pytest.approx(study["task_kl"], abs=1e-7)  # KL ~1e-5 here: fp32 noise ~3e-8

    sc = evaluation.scale(s.peft_model, s.ws.model(s.run).tokenizer, sizes=(100, 300), seq_len=32, batch_size=bs)
    assert [r["tokens"] for r in sc["rows"]] == [93, 310]  # whole blocks of 31 scored positions
    assert sc["rows"][1]["reference_bytes"] > sc["rows"][0]["reference_bytes"]

    run = s.run.model_copy(update={"train": s.run.train.model_copy(update={"steps": 3, "precision": "fp32"})})
    t = evaluation.train_step_vs_bare(s.base_model(), s.ws.model(run).tokenizer, run, s.ws.data(run)[0])
    assert t["steps_timed"] == 2 and t["value"] > 0
    assert not any(p.requires_grad for p in s.base_model().parameters())  # the base is left frozen


def test_mitigation_overhead_runs_on_the_tiny_model(tiny_setup):
    """bench.mitigation: every variant trained and timed, the rescale evaluations counted (no timing asserted)."""
    from bench.mitigation import mitigation_overhead

    m = mitigation_overhead(tiny_setup, steps=2, repeats=1)
    assert set(m["training"]) == {"none", "replay", "kl"}
    assert all(len(d["train_s"]) == 1 and d["train_s"][0] > 0 for d in m["training"].values())
    # each overhead is against plain LoRA's timing (one repeat: its only one), not another variant's
    none = m["training"]["none"]["train_s"][0]
    for kind in ("replay", "kl"):
        d = m["training"][kind]
        assert d["overhead"] == pytest.approx(d["train_s"][0] / none - 1, rel=1e-12), kind
    assert m["training"]["kl"]["strength"] > 0 and m["training"]["replay"]["strength"] > 0
    assert m["rescale"]["scales"] == [0.25, 0.5, 0.75] and m["rescale"]["scaled_s"] > 0
    assert m["intruders"]["first_detection_s"] > 0 and m["intruders"]["detection_s"] > 0
