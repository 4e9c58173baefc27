"""Mitigations on the tiny Llama: the neutral settings reproduce plain LoRA, the extremes behave."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from forgetscale.cli import main

METRICS = ("ft_loss", "forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _study(tiny_model: Path, extra: list[str]) -> list[str]:
    from tests.helpers import TINY_STUDY

    keep = [o for o in TINY_STUDY if not o.startswith(("sweep.", "fit."))]
    return [f"model.name={tiny_model}", *keep, "train.precision=fp32", "train.eval_steps=[2,4,8]", "fit.min_step=2",
            "fit.n_boot=0", "probes.enabled=false", "data.dataset=news", "forgetting.n_prompts=6", "train.seed=0",
            *extra]  # train.seed: one data order (the default preset sweeps two)


def _by_kind(out: Path, table: str = "measurements") -> dict[str, list[dict]]:
    con = sqlite3.connect(out / "study.sqlite")
    con.row_factory = sqlite3.Row
    try:
        kinds = {r["run_id"]: json.loads(r["config"])["mitigation"]["kind"] for r in con.execute("SELECT * FROM runs")}
        rows = [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY run_id, step")]
    finally:
        con.close()
    out_rows: dict[str, list[dict]] = {}
    for r in rows:
        out_rows.setdefault(kinds[r["run_id"]], []).append(r)
    return out_rows


@pytest.fixture(scope="module")
def neutral(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """Plain LoRA against each mitigation at its neutral strength (and rescale at 0 and 0.5)."""
    out = tmp_path_factory.mktemp("neutral")
    extra = ["lora.rank=4", "mitigation.replay_fraction=0", "mitigation.replay_examples=4", "mitigation.kl_weight=0",
             "mitigation.scales=[0, 0.5]", "mitigation.rescale_steps=all",
             "sweep.mitigation.kind=[none,replay,kl,rescale]"]  # fmt: skip
    assert main(["run", "--out", str(out), *_sets(_study(tiny_model, extra))]) == 0
    return out


def test_neutral_strengths_reproduce_plain_rows(neutral):
    rows = _by_kind(neutral)
    plain = rows["none"]
    assert len(plain) == 4  # steps 0 and three scheduled ones
    for kind in ("replay", "kl", "rescale"):
        assert [r["step"] for r in rows[kind]] == [r["step"] for r in plain]
        for a, b in zip(rows[kind], plain, strict=True):
            assert a["tokens"] == b["tokens"], kind
            for m in METRICS:
                # the same arithmetic in the same order: a replay fraction of 0 adds no example, lambda = 0
                # adds an exact 0 to the loss and to every gradient, and rescale trains as none. Bitwise
                # equality is expected on one machine; 1e-6 relative leaves room for a BLAS that picks its
                # kernel by a batch's shape (the KL pass runs through the same shapes, so it should not).
                assert a[m] == pytest.approx(b[m], rel=1e-6, abs=1e-9), (kind, m, a["step"])


def test_scale_zero_is_the_base_and_scaled_rows_stay_out_of_measurements(neutral):
    scaled = _by_kind(neutral, "scaled_measurements")
    assert set(scaled) == {"rescale"}
    rows = scaled["rescale"]
    assert {r["strength"] for r in rows} == {0.0, 0.5}
    assert {r["step"] for r in rows} == {s for s in (r["step"] for r in _by_kind(neutral)["none"]) if s > 0}
    plain = {r["step"]: r for r in _by_kind(neutral)["rescale"]}
    for r in rows:
        if r["strength"] == 0.0:
            # W + 0 * B A is W bit for bit, so the model is its base: exactly 0, as at step 0
            assert r["forget_kl"] == 0.0
            # forget_ce and base_entropy are separate float64 sums over the same positions: an ulp apart
            assert r["forget_ce"] == pytest.approx(r["base_entropy"], rel=1e-12)
        else:  # half way: no more forgetting than the full adapter (the tiny model learns fast at lr 1e-2)
            assert 0 < r["forget_kl"] < plain[r["step"]]["forget_kl"]


def test_compare_lists_each_mitigation(neutral, capsys):
    capsys.readouterr()
    assert main(["compare", str(neutral), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = {"dataset", "mitigation", "strength", "residual", "lo", "hi", "verdict", "n_points"}
    assert out and all(keys <= set(o) for o in out)
    got = {(o["mitigation"], o["strength"]) for o in out}
    assert {("replay", 0.0), ("kl", 0.0), ("rescale", 0.0), ("rescale", 0.5)} <= got
    for o in out:
        assert o["verdict"] in ("beats_line", "on_line", "worse", "undecided")
        if o["verdict"] != "undecided":
            assert o["lo"] <= o["residual"] <= o["hi"]
        if o["n_runs"] < 2:  # one run per level: its own run-to-run spread is unknown
            assert o["verdict"] == "undecided" and o["reason"]
    trained = [o for o in out if o["mitigation"] in ("replay", "kl")]
    # each trained level found its plain partner (same rank and data order) and both timings
    assert trained and all(o["overhead"] is not None for o in trained)


@pytest.fixture(scope="module")
def post_hoc(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """Two plain runs measured after training: rescaled, and with intruder dimensions reduced.

    ``intruder_epsilon`` 1 makes every leading singular vector an intruder (none has |cosine| 1 with the
    base's), so PEFT's reduction surely runs on the tiny model rather than finding nothing to change.
    """
    out = tmp_path_factory.mktemp("post_hoc")
    extra = ["mitigation.post_hoc=[rescale,intruders]", "mitigation.scales=[0.5]", "mitigation.intruder_lambdas=[0,1]",
             "mitigation.intruder_epsilon=1.0", "sweep.lora.rank=[2,4]"]  # fmt: skip
    assert main(["run", "--out", str(out), *_sets(_study(tiny_model, extra))]) == 0
    return out


def test_intruders_at_lambda_one_reproduce_the_runs_own_row(post_hoc):
    changed = _by_kind(post_hoc, "scaled_measurements")["none"]
    own = {(r["run_id"], r["step"]): r for r in _by_kind(post_hoc)["none"]}
    intr = [r for r in changed if r["method"] == "intruders"]
    assert {(r["strength"], r["step"]) for r in intr} == {(0.0, 8), (1.0, 8)} and len(intr) == 4  # final step only
    for r in intr:
        assert r["n_intruders"] > 0
        mine = own[(r["run_id"], r["step"])]
        if r["strength"] == 1.0:
            # PEFT refactors B A by an SVD of the unchanged delta (rank <= r): the same weights up to fp32
            # rounding of the factors, so the metrics agree far inside 1e-4 (a wrong adapter moves them ~1e-2)
            for m in METRICS:
                assert r[m] == pytest.approx(mine[m], rel=1e-4, abs=1e-6), m
        else:  # the intruders removed: the model moves back towards the base
            assert r["forget_kl"] < mine["forget_kl"]
    timings = [json.loads(t) for (t,) in sqlite3.connect(post_hoc / "study.sqlite").execute("SELECT timings FROM runs")]
    assert all(t["post_hoc_intruders"] > 0 and t["post_hoc_rescale"] > 0 and t["eval"] > 0 for t in timings)


def test_compare_judges_post_hoc_levels_by_their_runs(post_hoc, capsys):
    capsys.readouterr()
    assert main(["compare", str(post_hoc), "--json"]) == 0
    out = {(o["mitigation"], o["strength"]): o for o in json.loads(capsys.readouterr().out)}
    assert set(out) == {("rescale", 0.5), ("intruders", 0.0), ("intruders", 1.0)}
    for o in out.values():
        assert o["n_runs"] == 2 and o["verdict"] != "undecided" and o["lo"] <= o["residual"] <= o["hi"]
        assert o["overhead"] is not None and o["overhead"] > 0
    assert abs(out[("intruders", 1.0)]["residual"]) < 1e-4  # the unchanged adapter: no contrast at all


def test_large_kl_weight_keeps_forgetting_near_zero(tmp_path, tiny_model, neutral):
    out = tmp_path / "kl"
    extra = ["lora.rank=4", "mitigation.kind=kl", "mitigation.kl_weight=1000"]
    assert main(["run", "--out", str(out), *_sets(_study(tiny_model, extra))]) == 0
    held = _by_kind(out)["kl"][-1]
    plain = _by_kind(neutral)["none"][-1]
    assert held["step"] == plain["step"] and plain["forget_kl"] > 1e-4  # plain LoRA does move the tiny model
    # Adam's steps have the learning rate's size whatever lambda is, so the model cannot stay exactly at
    # the base; but with the KL term dominating it keeps within a small fraction of plain LoRA's KL
    assert held["forget_kl"] < 0.05 * plain["forget_kl"]


def test_replay_mixes_the_fraction_into_batches():
    from forgetscale.data.encode import Sequence
    from forgetscale.mitigation import ReplayCollator

    seqs = [Sequence(ids=(1, 2, 3), mask=(False, True, True))] * 3
    col = ReplayCollator(lambda feats: feats, seqs, 0.25, seed=0)
    sizes = [len(col([{"input_ids": [9], "labels": [9]}] * 4)) - 4 for _ in range(30)]
    assert sum(sizes) / (sum(sizes) + 4 * 30) == pytest.approx(0.25, abs=0.01)
    assert set(sizes) <= {1, 2}
    none = ReplayCollator(lambda feats: feats, [], 0.0)
    assert len(none([{"input_ids": [9], "labels": [9]}] * 4)) == 4


def test_rescaling_composes_with_the_merged_evaluation(tiny_model):
    """PEFT's rescale_adapter_scale entered outside fold.folded gives the folded W + s B A: the same
    logits as PEFT's own unmerged forward at that scale, and at scale 0 the base's, bit for bit."""
    import torch
    from peft.helpers import rescale_adapter_scale
    from transformers import AutoModelForCausalLM

    from forgetscale.config import LoraConfig
    from forgetscale.fold import folded
    from forgetscale.train import attach_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = torch.randint(5, 300, (2, 17))
    with torch.no_grad():
        base = model(input_ids=ids).logits
    peft_model = attach_lora(model, LoraConfig(rank=4), seed=0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        full = peft_model(input_ids=ids).logits
        for s in (0.0, 0.5, 1.0):
            with rescale_adapter_scale(peft_model, s):
                unmerged = peft_model(input_ids=ids).logits
                with folded(peft_model):
                    once = peft_model(input_ids=ids).logits
            # fp32: (W + s BA) x against W x + s B(A x), rounding of a 32-wide sum: 1e-5 absolute on O(1) logits
            torch.testing.assert_close(once, unmerged, rtol=1e-5, atol=1e-5)
            if s == 0.0:
                assert torch.equal(once, base)  # W + 0 = W exactly: the base model
            if s == 1.0:
                torch.testing.assert_close(once, full, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(full, base, atol=1e-3)  # the adapter does change the model
        with folded(peft_model):  # and the scale is restored on exit
            torch.testing.assert_close(peft_model(input_ids=ids).logits, full, rtol=1e-5, atol=1e-5)
    peft_model.unload()


def test_bad_replay_source_is_one_line_and_writes_nothing(tmp_path, tiny_model, capsys):
    out = tmp_path / "bad"
    extra = ["mitigation.kind=replay", "mitigation.replay_examples=100000"]
    assert main(["run", "--out", str(out), *_sets(_study(tiny_model, extra))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mitigation.replay_examples" in err[0]
    assert not out.exists()
    extra = ["mitigation.kind=replay", f"mitigation.replay_source={tmp_path / 'missing.jsonl'}"]
    assert main(["run", "--out", str(out), *_sets(_study(tiny_model, extra))]) == 2
    assert "mitigation.replay_source" in capsys.readouterr().err and not out.exists()


def test_replay_sources_self_prompts_are_disjoint_and_files_are_read(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from forgetscale.config import load_config
    from forgetscale.data.corpus import shipped_prompts
    from forgetscale.mitigation import replay_prompts, replay_sequences

    run = load_config(overrides=["forgetting.n_prompts=128", "mitigation.kind=replay",
                                "mitigation.replay_examples=100"]).runs()[0]  # fmt: skip
    chosen = replay_prompts(run)
    assert len(chosen) == 100 and not set(chosen) & set(shipped_prompts()[:128])
    text = tmp_path / "replay.txt"
    text.write_text("\n\n".join(f"Paragraph {i} about the weather in a town." for i in range(6)), encoding="utf-8")
    run = load_config(overrides=["mitigation.kind=replay", f"mitigation.replay_source={text}",
                                "mitigation.replay_examples=3"]).runs()[0]  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tiny_model)
    seqs = replay_sequences(run, tok, None, "fp-test", tmp_path)
    assert len(seqs) == 3 and all(s.n_targets > 0 for s in seqs)


def test_intruder_reduction_is_peft_reduce_intruder_dimension(post_hoc, tiny_model):
    """The same adapter as PEFT's own function, layer by layer, at two strengths (PEFT 0.21)."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.intruders import reduce_intruder_dimension
    from transformers import AutoModelForCausalLM

    from forgetscale.intruders import BaseSpectra, IntruderReduction

    adapter = sorted(post_hoc.glob("adapters/*/adapter_config.json"))[0].parent
    spectra = BaseSpectra()
    for lam in (0.0, 0.75):
        theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
        reduce_intruder_dimension(theirs, top_k=10, threshold_epsilon=1.0, mitigation_lambda=lam, logging_sink=None)
        mine = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
        found = IntruderReduction(mine, 10, 1.0, spectra)
        layers = {n: m for n, m in theirs.named_modules() if isinstance(m, LoraLayer)}
        with found.applied(lam) as n:
            assert n > 0
            for name, layer in mine.named_modules():
                if not isinstance(layer, LoraLayer):
                    continue
                ours = layer.get_delta_weight("default")
                ref = layers[name].get_delta_weight("intruder_reduced")
                own = layer.get_base_layer().weight
                # PEFT forms the change as (W + dW + (lam-1) X) - W in fp32, losing ~ulp(W) of dW; that
                # rounding, carried through two SVDs, bounds the agreement (measured ~1e-6 of |W|)
                assert torch.linalg.norm(ours - ref) <= 1e-4 * torch.linalg.norm(own), (name, lam)
        # on exit the run's own adapter is back, bit for bit
        fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
        got = dict(mine.named_parameters())
        for name, p in fresh.named_parameters():
            if "lora_" in name:
                assert torch.equal(p, got[name]), name


def test_no_intruder_found_reuses_the_runs_row_and_is_undecided(tmp_path, tiny_model, capsys):
    """An epsilon no leading vector can fall under finds no intruder: the adapter is the run's own, so its
    rows are the run's measurement itself, and compare says there is nothing to judge."""
    out = tmp_path / "none_found"
    extra = ["mitigation.post_hoc=[intruders]", "mitigation.intruder_lambdas=[0]", "mitigation.intruder_epsilon=1e-9",
             "sweep.lora.rank=[2,4]"]  # fmt: skip
    assert main(["run", "--out", str(out), *_sets(_study(tiny_model, extra))]) == 0
    own = {(r["run_id"], r["step"]): r for r in _by_kind(out)["none"]}
    changed = _by_kind(out, "scaled_measurements")["none"]
    assert len(changed) == 2 and all(r["n_intruders"] == 0 for r in changed)
    for r in changed:
        assert all(r[m] == own[(r["run_id"], r["step"])][m] for m in METRICS)
    capsys.readouterr()
    assert main(["compare", str(out), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["mitigation"], row["verdict"]) == ("intruders", "undecided") and "unchanged" in row["reason"]
