"""ForgettingCallback inside a stock Trainer (and TRL's SFTTrainer) on the tiny random Llama.

Tolerance for "the callback equals `forgetscale forgetting`": both sides run the
same code on the same fp32 weights (adapters round-trip through safetensors
exactly), the same corpus blocks and the same batches; what differs is where the
weights sit in memory, and the BLAS may block an fp32 matmul differently for
differently aligned buffers. That moves each log-probability by float32
rounding, ~1e-7 of its size: the means agree to rel 1e-6, and ``forget_kl``,
a small difference of two such means (CE - H), to 1e-6 of ``forget_ce`` in
absolute terms (measured: 1.4e-9 nats at KL 5.7e-4, CE 5.98).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

import forgetscale
from forgetscale.cli import main

SEQ_LEN = 24
REL = 1e-6
METRICS = ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")


def _same(ours: dict, cli: dict) -> None:
    for k in METRICS:
        tol = {"abs": REL * cli["forget_ce"]} if k == "forget_kl" else {"rel": REL}
        assert ours[k] == pytest.approx(cli[k], **tol), k


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    f = tmp_path / "corpus.txt"
    f.write_text(" ".join(f"On day {i} the ferry to Selmoor left at {i % 12 + 1} o'clock." for i in range(60)))
    return f


class Recorder(TrainerCallback):
    """A report_to-style integration: sees every log call. Tests place it before the forgetting
    callback, as the Trainer places its report_to integrations before user callbacks."""

    def __init__(self):
        self.logs: list[tuple[int, dict]] = []

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append((state.global_step, dict(logs or {})))


def _datasets(tok, n_train=16, n_eval=4):
    from datasets import Dataset

    from forgetscale.data.synthetic import generate

    texts = [e["text"] for e in generate("news", n_train + n_eval, seed=1)]
    enc = [tok(t, truncation=True, max_length=48) for t in texts]
    rows = [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]} for e in enc]
    return Dataset.from_list(rows[:n_train]), Dataset.from_list(rows[n_train:])


def _lora(model, rank=4):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


def _train(model, tok, out: Path, callbacks, steps=4, **args):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    train, held = _datasets(tok)
    defaults = {"learning_rate": 2e-2, "save_strategy": "no"}
    targs = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, logging_steps=1, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, **{**defaults, **args},
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=targs, train_dataset=train, eval_dataset=held,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=callbacks,
    )  # fmt: skip
    trainer.train()
    return trainer


def _cli(capsys, base: Path, corpus: Path, *, adapter: Path | None = None, model: Path | None = None) -> dict:
    which = ["--adapter", str(adapter)] if adapter else ["--model", str(model)]
    argv = ["forgetting", "--base", str(base), *which, "--data", str(corpus), "--seq-len", str(SEQ_LEN), "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _at(cb, step: int) -> dict:
    (row,) = [r for r in cb.history if r["step"] == step]
    return row


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_callback_equals_cli_on_the_same_adapter_at_the_same_step(capsys, tmp_path, tiny_model, corpus, bf16):
    model, tok = forgetscale.load_base(str(tiny_model))
    recorder = Recorder()
    cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, eval_steps=2, verbose=False)
    trainer = _train(_lora(model), tok, tmp_path / "out", [recorder, cb], save_strategy="steps", save_steps=2,
                     bf16=bf16)  # fmt: skip
    assert [r["step"] for r in cb.history] == [0, 2, 4]

    # step 0: the fresh adapter is the identity, in fp32 whatever the training precision
    zero = _at(cb, 0)
    assert zero["forget_kl"] == 0.0
    assert zero["forget_ce"] == pytest.approx(zero["base_entropy"], rel=1e-6)
    assert _at(cb, 4)["forget_kl"] > 1e-5
    assert "disabled adapter" in cb.base_source

    for step in (2, 4):
        cli = _cli(capsys, tiny_model, corpus, adapter=tmp_path / "out" / f"checkpoint-{step}")
        _same(_at(cb, step), cli)

    # the numbers went through Trainer.log: every integration saw them, at their steps
    seen = {step: logs for step, logs in recorder.logs if "forget_ce" in logs}
    assert sorted(seen) == [0, 2, 4]
    assert seen[4]["forget_ce"] == _at(cb, 4)["forget_ce"]
    assert set(METRICS) <= set(seen[2])
    assert [h["step"] for h in trainer.state.log_history if "forget_kl" in h] == [0, 2, 4]
    # ... without cancelling the Trainer's own loss log at a measured step
    assert {h["step"] for h in trainer.state.log_history if "loss" in h} == {1, 2, 3, 4}


def test_evaluation_events_and_store(capsys, tmp_path, tiny_model, corpus):
    """Measured at the Trainer's evaluations; rows in a store that fit/report read, with ft_loss a study's (the
    held-out response-token CE, with its se) and the Trainer's eval_loss under its own name."""
    store = tmp_path / "study"
    for rank in (1, 4):
        model, tok = forgetscale.load_base(str(tiny_model))
        cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, store=store, run_id=f"r{rank}",
                                            dataset="news", verbose=False)  # fmt: skip
        trainer = _train(_lora(model, rank), tok, tmp_path / f"out{rank}", [cb], eval_strategy="steps",
                         eval_steps=2, eval_on_start=True)  # fmt: skip
        evals = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
        assert sorted(evals) == [0, 2, 4]
        assert [r["step"] for r in cb.history] == [0, 2, 4]
        assert all(r["eval_loss"] == evals[r["step"]] for r in cb.history)
        # the same held-out responses, token-weighted over the set rather than batch by batch: close, and
        # with the standard error over examples that only the study's definition has
        assert all(abs(r["ft_loss"] - r["eval_loss"]) < 0.05 and r["ft_loss_se"] > 0 for r in cb.history)

    s = forgetscale.load_results(store)
    assert {(r["run_id"], r["step"]) for r in s.rows} == {(f"r{k}", n) for k in (1, 4) for n in (0, 2, 4)}
    assert {r["rank"] for r in s.runs} == {1, 4} and all(r["status"] == "done" for r in s.runs)
    assert all(r["ft_loss"] is not None and r["dataset"] == "news" for r in s.rows)
    frame = forgetscale.load_results(store, as_frame=True)
    assert list(frame.rows.sort_values(["run_id", "step"]).step) == [0, 2, 4, 0, 2, 4]
    assert main(["fit", str(store), "--law", "linear", "--n-boot", "0"]) == 0
    assert forgetscale.load_results(store).fits[0]["law"] == "linear"
    assert main(["report", str(store), "--format", "md"]) == 0


def test_full_fine_tune(capsys, tmp_path, tiny_model, corpus):
    model, tok = forgetscale.load_base(str(tiny_model))
    cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, eval_steps=2, verbose=False)
    trainer = _train(model, tok, tmp_path / "out", [cb], steps=2, learning_rate=1e-3)
    assert "before its first update" in cb.base_source
    assert _at(cb, 0)["forget_kl"] == 0.0
    trainer.save_model(str(tmp_path / "tuned"))
    tok.save_pretrained(tmp_path / "tuned")
    cli = _cli(capsys, tiny_model, corpus, model=tmp_path / "tuned")
    _same(_at(cb, 2), cli)

    # the fine-tuned weights are not the base: with nothing cached, resuming is refused
    fresh = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, cache=tmp_path / "empty")
    with pytest.raises(forgetscale.errors.UserError, match="cannot be re-derived"):
        fresh._prepare_reference(trainer.model, tok, step=2)


def test_a_stale_cached_reference_is_caught(tmp_path, tiny_model, corpus):
    """Two different models under one claimed fingerprint: the second does not trust the first's reference."""
    from tests.helpers import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    for path in (tiny_model, other):
        model, tok = forgetscale.load_base(str(path))
        cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, model_fingerprint="sha256:same",
                                            verbose=False)  # fmt: skip
        peft_model = _lora(model)
        if path == other:
            with pytest.warns(UserWarning, match="does not match this model"):
                cb._prepare_reference(peft_model, tok, step=0)
            assert cb._fingerprint.startswith("weights:")
        else:
            cb._prepare_reference(peft_model, tok, step=0)
            again = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, model_fingerprint="sha256:same")
            again._prepare_reference(peft_model, tok, step=0)
            assert again.base_source.startswith("cached") and "checked" in again.base_source


def test_self_corpus_sampled_through_the_disabled_adapter(capsys, tmp_path, tiny_model):
    """`self` is sampled from the base (the adapter disabled) and cached under the study's key:
    the CLI then measures the saved adapter on the very same corpus."""
    model, tok = forgetscale.load_base(str(tiny_model))
    cb = forgetscale.ForgettingCallback(tok, "self", eval_steps=2, verbose=False)
    _train(_lora(model), tok, tmp_path / "out", [cb], steps=2, save_strategy="steps", save_steps=2)
    assert _at(cb, 0)["forget_kl"] == 0.0 and _at(cb, 2)["forget_kl"] > 0
    result = forgetscale.measure_forgetting(str(tiny_model), tmp_path / "out" / "checkpoint-2", "self")
    assert result.n_tokens == _at(cb, 2)["n_eval_tokens"]
    _same(_at(cb, 2), result.as_dict())


def test_hub_dataset_corpus(monkeypatch, tmp_path, tiny_model):
    import datasets

    from forgetscale.config import ForgettingConfig
    from forgetscale.data.corpus import build_corpus
    from forgetscale.data.encode import text_blocks

    docs = [f"Record {i}: the ferry to Selmoor left at {i % 12 + 1} o'clock." for i in range(40)]
    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"text": docs})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    _, tok = forgetscale.load_base(str(tiny_model))
    seqs = build_corpus(ForgettingConfig(corpus="hf:org/news:v1", seq_len=SEQ_LEN), tok, None, "x", tmp_path)
    assert calls == [("org/news", "v1", "test")]
    assert seqs == text_blocks("\n\n".join(docs), tok, SEQ_LEN)


# raised inside transformers by TRL's SFTConfig (a deprecated alias it still sets), not by us
@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_sft_trainer(tmp_path, tiny_model, corpus):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig

    from forgetscale.data.synthetic import generate

    model, tok = forgetscale.load_base(str(tiny_model))
    recorder = Recorder()
    cb = forgetscale.ForgettingCallback(corpus=str(corpus), seq_len=SEQ_LEN, eval_steps=1, verbose=False)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=2e-2,
        max_length=48, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=model, args=args, processing_class=tok, callbacks=[recorder, cb],
        train_dataset=Dataset.from_list([{"text": e["text"]} for e in generate("news", 12, seed=1)]),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )  # fmt: skip
    trainer.train()
    assert "disabled adapter" in cb.base_source
    assert [r["step"] for r in cb.history] == [0, 1, 2]
    assert _at(cb, 0)["forget_kl"] == 0.0 and _at(cb, 2)["forget_kl"] > 0
    assert sorted(s for s, logs in recorder.logs if "forget_ce" in logs) == [0, 1, 2]


def test_a_repeated_run_name_makes_two_runs_and_a_finished_run_is_never_restarted(tmp_path, tiny_model, corpus):
    """Two trainings under one ``args.run_name`` (a sweep script's usual state): two runs, each with its rows;
    a run id given again after its run finished is refused, and the finished run's rows stay."""
    store = tmp_path / "study"
    ids = []
    for seed in (0, 1):
        model, tok = forgetscale.load_base(str(tiny_model))
        cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, store=store, eval_steps=2,
                                            verbose=False)  # fmt: skip
        _train(_lora(model), tok, tmp_path / f"out{seed}", [cb], steps=2, run_name="same-name", data_seed=seed)
        ids.append(cb._run_id)
    assert len(set(ids)) == 2 and all(i.startswith("cb-") for i in ids)
    s = forgetscale.load_results(store)
    assert {r["run_id"]: r["status"] for r in s.runs} == dict.fromkeys(ids, "done")
    assert sorted((r["run_id"], r["step"]) for r in s.rows) == sorted((i, n) for i in ids for n in (0, 2))
    assert {r["metric_version"] for r in s.rows} == {forgetscale.schema.METRIC_VERSION}

    model, tok = forgetscale.load_base(str(tiny_model))
    cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, store=store, run_id=ids[0],
                                        verbose=False)  # fmt: skip
    with pytest.raises(forgetscale.errors.UserError, match="finished"):
        _train(_lora(model), tok, tmp_path / "again", [cb], steps=2)
    after = forgetscale.load_results(store)
    assert sorted((r["run_id"], r["step"], r["forget_kl"]) for r in after.rows) == \
        sorted((r["run_id"], r["step"], r["forget_kl"]) for r in s.rows)  # fmt: skip


def test_a_full_fine_tune_in_the_store_records_P_and_predicts_without_a_rank(capsys, tmp_path, tiny_model, corpus):
    """A full fine-tune logged by the callback: rank 0, P = every trainable weight; predict takes --params (and
    says so for --rank, in one line), plan answers over parameter counts instead of dividing by rank 0."""
    from tests.helpers import one_error_line

    store = tmp_path / "study"
    model, tok = forgetscale.load_base(str(tiny_model))
    n_params = sum(p.numel() for p in model.parameters())
    cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, store=store, eval_steps=1, verbose=False)
    _train(model, tok, tmp_path / "out", [cb], steps=3, learning_rate=1e-3)
    (run,) = forgetscale.load_results(store).runs
    assert (run["rank"], run["P"], run["method"], run["status"]) == (0, n_params, "full", "done")
    assert main(["fit", str(store), "--law", "linear", "--n-boot", "0"]) == 0
    capsys.readouterr()
    assert main(["predict", str(store), "--params", str(n_params), "--steps", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["P"] == n_params
    one_error_line(capsys, main(["predict", str(store), "--rank", "4", "--steps", "3"]), "--params")
    assert main(["plan", str(store), "--max-forgetting", "100"]) == 0


@pytest.mark.parametrize("method", ["dora", "ia3", "lora-mlp"])
def test_the_callback_records_any_peft_method_and_its_P(tmp_path, tiny_model, corpus, method):
    """The store keys a callback's run by the method PEFT trained and P as PEFT counts it."""
    from peft import IA3Config, LoraConfig, get_peft_model

    model, tok = forgetscale.load_base(str(tiny_model))
    cfg = {"dora": LoraConfig(r=2, target_modules=["q_proj", "v_proj"], use_dora=True),  # not a named set
           "ia3": IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
           "lora-mlp": LoraConfig(r=2, target_modules=["gate_proj", "up_proj", "down_proj"])}[method]  # fmt: skip
    peft_model = get_peft_model(model, cfg)
    store = tmp_path / "study"
    cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=SEQ_LEN, store=store, eval_steps=2, verbose=False)
    _train(peft_model, tok, tmp_path / "out", [cb], steps=2, learning_rate=1e-2)
    (run,) = forgetscale.load_results(store).runs
    assert (run["method"], run["P"]) == (method, peft_model.get_nb_trainable_parameters()[0])
    assert [r["forget_kl"] for r in forgetscale.load_results(store).rows if r["step"] == 0] == [0.0]
