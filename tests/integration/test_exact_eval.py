"""Exact evaluation shortcuts against the plain path, on a tiny Llama: the hidden reference against full
logits (and a float64 recomputation), its fall-back when the LM head changes, merged-adapter evaluation
against the unmerged model, and the standard errors against an independent computation."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import train_adapter


@pytest.fixture(scope="module")
def sequences(sharp_model: Path):
    from forgetscale.config import ModelConfig
    from forgetscale.data.encode import encode_example
    from forgetscale.data.synthetic import generate
    from forgetscale.models import load_model

    tok = load_model(ModelConfig(name=str(sharp_model))).tokenizer
    return [s for s in (encode_example(e, tok, 64) for e in generate("news", 12, seed=5)) if s]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, sharp_model: Path) -> Path:
    return train_adapter(sharp_model, tmp_path_factory.mktemp("sharp-adapter") / "a", steps=6, lr=0.02)


def _load(model_dir: Path, adapter: Path | None = None):
    from peft import PeftModel

    from forgetscale.config import ModelConfig
    from forgetscale.models import load_model

    base = load_model(ModelConfig(name=str(model_dir))).model
    return base if adapter is None else PeftModel.from_pretrained(base, str(adapter))


def _float64_truth(tuned, seqs) -> dict[str, float]:
    """forget_ce and forget_kl computed in float64 from a float64 copy of the model (adapter off for the base)."""
    from forgetscale.forward import target_logprobs

    m = copy.deepcopy(tuned).double()
    with m.disable_adapter():
        base = {tuple(r): q for r, q, _ in target_logprobs(m, seqs, 4)}
    ce = kl = 0.0
    n = 0
    for r, q, _ in target_logprobs(m, seqs, 4):
        p = base[tuple(r)]
        ce += float(-(p.exp() * q).sum())
        kl += float((p.exp() * (p - q)).sum())
        n += len(r)
    return {"forget_ce": ce / n, "forget_kl": kl / n}


def test_hidden_reference_is_exact(tmp_path, sharp_model, adapter, sequences):
    from forgetscale.forgetting import measure
    from forgetscale.reference import compute_reference

    base = _load(sharp_model)
    hidden = compute_reference(base, sequences, 4, tmp_path / "h", mode="hidden")
    logits = compute_reference(base, sequences, 4, tmp_path / "l", mode="logits")
    assert (hidden.mode, logits.mode) == ("hidden", "logits")
    assert hidden.mean_emb.shape[1] * 4 < logits.logp.shape[1]  # d/V of the size (here 32/400)
    tuned = _load(sharp_model, adapter)
    h, lg = measure(tuned, hidden, 4), measure(tuned, logits, 4)
    truth = _float64_truth(tuned, sequences)
    assert h["forget_kl"] > 0.1
    for k in ("forget_ce", "forget_kl"):
        # both are fp32 computations of the same numbers: equal to fp32 rounding (1e-6, the exact mode's promise)
        assert h[k] == pytest.approx(lg[k], rel=1e-6), k
        # against float64 arithmetic the model's own fp32 forward dominates (~1e-7 relative on logits)
        assert h[k] == pytest.approx(truth[k], rel=1e-5), k
    for k in ("base_entropy", "forget_top1_ce", "data_loss"):
        assert h[k] == pytest.approx(lg[k], rel=1e-6), k


@pytest.mark.parametrize("mode", ["hidden", "logits", "top16"])
def test_identity_has_zero_kl_and_zero_se(tmp_path, sharp_model, sequences, mode):
    from forgetscale import train
    from forgetscale.config import LoraConfig
    from forgetscale.fold import folded
    from forgetscale.forgetting import measure
    from forgetscale.reference import compute_reference

    base = _load(sharp_model)
    top_k = 16 if mode == "top16" else None
    ref = compute_reference(base, sequences, 4, tmp_path / "r", top_k=top_k, mode="logits" if top_k else mode)
    peft_model = train.attach_lora(base, LoraConfig(rank=4, dropout=0.1), 0)
    with folded(peft_model):
        m = measure(peft_model, ref, 4)
    # the same forward, chunks and formulas as the reference: exactly zero, not merely small
    assert m["forget_kl"] == 0.0 and m["forget_kl_se"] == 0.0
    assert m["forget_ce"] == pytest.approx(m["base_entropy"], rel=1e-12)
    assert m["forget_ce_se"] > 0


def test_standard_errors_match_an_independent_computation(tmp_path, sharp_model, adapter, sequences):
    """se = sqrt(var of per-sequence means, weighted, / n) computed here from per-position values."""
    from forgetscale.forgetting import measure
    from forgetscale.forward import target_logprobs
    from forgetscale.reference import compute_reference

    ref = compute_reference(_load(sharp_model), sequences, 4, tmp_path / "l", mode="logits")
    tuned = _load(sharp_model, adapter)
    m = measure(tuned, ref, 4)
    kl_pos = np.zeros(ref.n_tokens)
    for rows, q, _ in target_logprobs(tuned, sequences, 4):
        p = torch.from_numpy(np.asarray(ref.logp[rows]))
        kl_pos[rows] = (p.exp() * (p - q)).sum(-1).clamp_min(0).double().numpy()
    bounds = np.cumsum([0] + [s.n_targets for s in sequences])
    for key, values in (("forget_kl", kl_pos), ("forget_ce", kl_pos + ref.entropy)):
        groups = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        w = np.array([len(g) for g in groups], float)
        means = np.array([g.mean() for g in groups])
        r = np.average(means, weights=w)
        n = len(groups)
        # the cluster (ratio-estimator) variance: weighted spread of sequence means around the total mean
        se = np.sqrt(n / (n - 1) * np.sum((w / w.sum()) ** 2 * (means - r) ** 2))
        assert m[key] == pytest.approx(r, rel=1e-6)
        assert m[f"{key}_se"] == pytest.approx(se, rel=1e-5), key  # forget_ce's per-position sum differs at 1e-7


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")  # a LoRA on a tied head
@pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`:UserWarning")
def test_lm_head_trained_falls_back_to_logits(tmp_path, capsys, sharp_model, sequences):
    """A LoRA on the LM head changes it: the hidden reference refuses it, and both the study's choice of
    mode and `forgetscale forgetting` fall back to full logits, giving the full-logit numbers."""
    import json

    from forgetscale.cli import main
    from forgetscale.config import RunConfig
    from forgetscale.forgetting import measure
    from forgetscale.reference import compute_reference, reference_mode

    head_adapter = train_adapter(sharp_model, tmp_path / "head", steps=3, lr=0.02, target_modules=["q_proj", "lm_head"])
    base = _load(sharp_model)
    hidden = compute_reference(base, sequences, 4, tmp_path / "h", mode="hidden")
    with pytest.raises(RuntimeError, match="LM head"):
        measure(_load(sharp_model, head_adapter), hidden, 4)
    run = RunConfig.model_validate({"lora": {"target_modules": ["q_proj", "lm_head"]}})
    assert reference_mode(run, base) == "logits"
    assert reference_mode(RunConfig(), base) == "hidden"

    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(f"Item {i} of the ledger was filed on day {i % 9}." for i in range(60)))
    args = ["forgetting", "--base", str(sharp_model), "--data", str(corpus), "--seq-len", "24", "--json"]
    outs = {}
    for ref in ("hidden", "logits"):
        assert main([*args, "--adapter", str(head_adapter), "--reference", ref]) == 0
        captured = capsys.readouterr()
        outs[ref] = json.loads(captured.out)
        if ref == "hidden":
            assert "changed the LM head" in captured.err
    for k in ("forget_ce", "forget_kl"):
        assert outs["hidden"][k] == pytest.approx(outs["logits"][k], rel=1e-9)


def test_full_fine_tune_with_a_changed_head_falls_back(tmp_path, capsys, sharp_model):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetscale.cli import main

    tuned_dir = tmp_path / "tuned"
    model = AutoModelForCausalLM.from_pretrained(sharp_model)
    with torch.no_grad():
        model.lm_head.weight.add_(0.01 * torch.randn_like(model.lm_head.weight))  # tied: the embeddings too
    model.save_pretrained(tuned_dir)
    AutoTokenizer.from_pretrained(sharp_model).save_pretrained(tuned_dir)
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(f"Ship {i} docked at pier {i % 7} at noon." for i in range(60)))
    args = ["forgetting", "--base", str(sharp_model), "--model", str(tuned_dir), "--data", str(corpus)]
    outs = {}
    for ref in ("hidden", "logits"):
        assert main([*args, "--seq-len", "24", "--json", "--reference", ref]) == 0
        captured = capsys.readouterr()
        outs[ref] = json.loads(captured.out)
        if ref == "hidden":
            err = captured.err
    assert "changed the LM head" in err
    assert outs["hidden"]["forget_kl"] > 0
    assert outs["hidden"]["forget_kl"] == pytest.approx(outs["logits"]["forget_kl"], rel=1e-9)


@pytest.mark.parametrize("rslora", [True, False])
def test_folded_evaluation_equals_unfolded_and_leaves_the_model_untouched(sharp_model, adapter, sequences, rslora):
    from peft import PeftModel

    from forgetscale.config import ModelConfig
    from forgetscale.fold import folded
    from forgetscale.forgetting import measure, sequence_loss
    from forgetscale.models import load_model
    from forgetscale.reference import compute_reference

    base = load_model(ModelConfig(name=str(sharp_model))).model
    ref = compute_reference(base, sequences, 4, Path(__import__("tempfile").mkdtemp()) / "r", mode="hidden")
    tuned = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    for layer in tuned.modules():  # both scalings: rsLoRA alpha/sqrt(r), plain alpha/r
        if hasattr(layer, "scaling") and isinstance(layer.scaling, dict) and "default" in layer.scaling:
            layer.scaling["default"] = 16.0 / (2.0 if rslora else 4.0)
    assert any(getattr(m, "p", 0) > 0 for m in tuned.modules() if isinstance(m, torch.nn.Dropout))
    tuned.train()  # training mode with dropout > 0: the context must evaluate without it
    for p in tuned.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    before = {n: (p.detach().clone(), None if p.grad is None else p.grad.clone()) for n, p in tuned.named_parameters()}
    with folded(tuned):
        assert sum("forward" in m.__dict__ for m in tuned.modules()) == 14  # 7 linear modules x 2 layers
        fast = {**measure(tuned, ref, 4), "ft_loss": sequence_loss(tuned, sequences, 4)}
    assert tuned.training and not any("forward" in m.__dict__ for m in tuned.modules())
    tuned.eval()
    slow = {**measure(tuned, ref, 4), "ft_loss": sequence_loss(tuned, sequences, 4)}
    assert slow["forget_kl"] > 0.01
    for k, v in slow.items():
        # one fp32 matmul with W + sBA instead of two summed: fp32 rounding of the logits (~1e-7 relative),
        # within the exact mode's 1e-6 on every metric. A standard error is a root of summed squared deviations
        # of per-sequence sums from the mean, which amplifies that rounding (1.6e-6 seen): 1e-5 for those.
        # A sequence's own mean KL averages the rounding over ~20 positions, not the corpus' ~250: 1e-5 too.
        rel = 1e-5 if k.endswith("_se") or k == "seq_kl" else 1e-6
        if v is None:  # forget_rkl without a full-logit reference
            assert fast[k] is None, k
            continue
        assert fast[k] == pytest.approx(v, rel=rel, abs=1e-9), k
    for n, p in tuned.named_parameters():  # weights and gradients bit for bit
        w, g = before[n]
        assert torch.equal(p.detach(), w), n
        assert (p.grad is None and g is None) or torch.equal(p.grad, g), n


def test_store_gains_the_standard_error_columns(tmp_path):
    import sqlite3

    from forgetscale.store import open_store

    old = sqlite3.connect(tmp_path / "study.sqlite")  # a version-1 store written before the se columns
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE measurements (run_id TEXT NOT NULL, step INTEGER NOT NULL, tokens INTEGER NOT NULL,"
        " ft_loss REAL, forget_ce REAL, forget_kl REAL, base_entropy REAL, forget_top1_ce REAL, data_loss REAL,"
        " n_eval_tokens INTEGER, PRIMARY KEY (run_id, step));"
    )
    old.close()
    with open_store(tmp_path) as store:
        store.register_run("r1", {}, "news", 1)
        store.add_measurement("r1", {"step": 0, "tokens": 0, "forget_kl": 0.0, "forget_kl_se": 0.0,
                                     "forget_ce": 2.0, "forget_ce_se": 0.1})  # fmt: skip
        row = store.measurements("r1")[0]
    assert row["forget_kl_se"] == 0.0 and row["forget_ce_se"] == 0.1
