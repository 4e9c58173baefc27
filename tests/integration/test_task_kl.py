"""task_kl (forgetscale.task) on a tiny Llama: exactly 0 at the identity adapter with ft_loss unchanged, equal
to an independent float64 computation after training, logged by the callback, and in every study row."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import train_adapter


@pytest.fixture(scope="module")
def tok(sharp_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(sharp_model)


@pytest.fixture(scope="module")
def held(sharp_model: Path, tok):
    """Held-out chat examples, encoded as a study encodes them (the assistant's response scored)."""
    from forgetscale.data.encode import encode_example
    from forgetscale.data.synthetic import generate

    seqs = [s for s in (encode_example(e, tok, 64) for e in generate("instruct", 30, seed=11)[24:]) if s]
    assert all(0 < s.n_targets < len(s.ids) - 1 for s in seqs)  # responses only: the prompt is not scored
    return seqs


def _load(model_dir: Path, adapter: Path | None = None):
    from peft import PeftModel

    from forgetscale.config import ModelConfig
    from forgetscale.models import load_model

    base = load_model(ModelConfig(name=str(model_dir))).model
    return base if adapter is None else PeftModel.from_pretrained(base, str(adapter))


@pytest.mark.parametrize("mode", ["hidden", "logits", "top16"])
def test_identity_adapter_gives_zero_task_kl_and_the_same_ft_loss(tmp_path, sharp_model, tok, held, mode):
    from forgetscale import train
    from forgetscale.config import LoraConfig
    from forgetscale.fold import folded
    from forgetscale.forgetting import held_out_loss
    from forgetscale.reference import reference_identity
    from forgetscale.task import held_out_metrics, task_reference

    base = _load(sharp_model)
    top_k = 16 if mode == "top16" else None
    ref = task_reference(base, tok, reference_identity(base, "m"), held, top_k, "logits" if top_k else mode, 4,
                         tmp_path)
    assert ref.mode == mode and ref.n_tokens == sum(s.n_targets for s in held)
    peft_model = train.attach_lora(base, LoraConfig(rank=4, dropout=0.1), 0)
    with folded(peft_model):
        m = held_out_metrics(peft_model, ref, 4)
        plain = held_out_loss(peft_model, held, 4)
    # the same forward, chunks and formulas as the reference: exactly zero, not merely small
    assert m["task_kl"] == 0.0 and m["task_kl_se"] == 0.0
    # ft_loss: the same logits and the same float64 arithmetic as held_out_loss (only a hook differs)
    assert (m["ft_loss"], m["ft_loss_se"]) == (plain["ft_loss"], plain["ft_loss_se"])


def _float64_truth(tuned, seqs) -> dict[str, float]:
    """ft_loss and task_kl with their cluster se, from a float64 copy of the model run one sequence at a time,
    with the full log-softmax at every scored position (adapter disabled for the base)."""
    m = copy.deepcopy(tuned).double().eval()
    loss, kl, n = [], [], []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s.ids])
            pos = [t - 1 for t in range(1, len(s.ids)) if s.mask[t]]  # the logit at t-1 predicts token t
            q = torch.log_softmax(m(input_ids=ids).logits[0, pos], -1)
            with m.disable_adapter():
                p = torch.log_softmax(m(input_ids=ids).logits[0, pos], -1)
            tgt = torch.tensor([s.ids[t + 1] for t in pos])
            loss.append(float(-q.gather(-1, tgt[:, None]).sum()))
            kl.append(float((p.exp() * (p - q)).sum()))
            n.append(len(pos))
    out = {}
    for key, sums in (("ft_loss", np.array(loss)), ("task_kl", np.array(kl))):
        c = np.array(n, float)
        r = sums.sum() / c.sum()
        out[key] = r
        # the cluster (ratio-estimator) se over examples, written from its definition
        out[f"{key}_se"] = np.sqrt(len(c) / (len(c) - 1) * np.sum((sums - r * c) ** 2)) / c.sum()
    return out


@pytest.mark.parametrize("mode", ["hidden", "logits"])
def test_task_kl_equals_a_float64_computation_after_training(tmp_path, sharp_model, tok, held, mode):
    from forgetscale.reference import reference_identity
    from forgetscale.task import held_out_metrics, task_reference

    adapter = train_adapter(sharp_model, tmp_path / "a", steps=6, lr=0.02)
    base = _load(sharp_model)
    ref = task_reference(base, tok, reference_identity(base, "m"), held, None, mode, 4, tmp_path)
    tuned = _load(sharp_model, adapter)
    m = held_out_metrics(tuned, ref, 4)
    truth = _float64_truth(tuned, held)
    assert m["task_kl"] > 0.05
    # against float64 arithmetic the model's own fp32 forward dominates (~1e-7 relative on logits); 1e-5 is
    # the exact mode's tolerance and test_exact_eval's for forget_kl computed the same way
    for k in ("ft_loss", "task_kl", "ft_loss_se", "task_kl_se"):
        assert m[k] == pytest.approx(truth[k], rel=1e-5), k


def test_the_callback_logs_task_kl_on_the_trainers_eval_set(tmp_path, tiny_model):
    """The callback's default held-out examples are the Trainer's eval_dataset (tokenized rows, every position
    after the first scored); task_kl is 0 before the first update and logged at each measurement."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    import forgetscale
    from forgetscale.data.synthetic import generate
    from forgetscale.task import held_out_metrics

    model, tok = forgetscale.load_base(str(tiny_model))
    rows = [{"input_ids": tok(e["text"], truncation=True, max_length=48)["input_ids"]}
            for e in generate("news", 20, seed=1)]  # fmt: skip
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(f"On day {i} the ferry to Selmoor left at {i % 12 + 1} o'clock." for i in range(80)))
    cb = forgetscale.ForgettingCallback(tok, str(corpus), seq_len=24, eval_steps=2, verbose=False)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                             learning_rate=2e-2, save_strategy="no")  # fmt: skip
    trainer = Trainer(model=peft_model, args=args, train_dataset=Dataset.from_list(rows[:16]),
                      eval_dataset=Dataset.from_list(rows[16:]), callbacks=[cb],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))  # fmt: skip
    trainer.train()
    assert cb.task_reference is not None and len(cb.task_reference.sequences) == 4
    history = {r["step"]: r for r in cb.history}
    assert history[0]["task_kl"] == 0.0 and history[4]["task_kl"] > 0
    logged = {h["step"]: h for h in trainer.state.log_history if "task_kl" in h}
    assert sorted(logged) == [0, 2, 4] and logged[4]["task_kl_se"] > 0
    again = held_out_metrics(trainer.model, cb.task_reference, 8)  # the model after its last step is step 4's
    assert logged[4]["task_kl"] == pytest.approx(again["task_kl"], rel=1e-9)


def test_every_study_row_has_task_kl(capsys, tmp_path, tiny_model):
    """One tiny run (the golden test's settings): every row has task_kl, 0 with se 0 at step 0."""
    from forgetscale.cli import main
    from tests.helpers import TINY_STUDY

    out = tmp_path / "study"
    sets = [f"model.name={tiny_model}", *TINY_STUDY, "probes.enabled=false", "train.precision=fp32",
            "sweep.lora.rank=[4]", "sweep.data.dataset=[news]"]  # fmt: skip
    assert main(["run", "--out", str(out), *(a for o in sets for a in ("--set", o))]) == 0
    with sqlite3.connect(out / "study.sqlite") as db:
        rows = db.execute("SELECT step, task_kl, task_kl_se, ft_loss_se FROM measurements ORDER BY step").fetchall()
    assert len(rows) >= 3 and all(r[1] is not None and r[3] is not None for r in rows)
    assert rows[0][:3] == (0, 0.0, 0.0)  # the identity adapter
    assert all(r[1] > 0 and r[2] > 0 for r in rows[1:])
    assert "F6 undecided" in capsys.readouterr().out  # one run: too few for F6, and it says so
