"""The compact top-K base reference against the exact one, on a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetscale.cli import main
from tests.helpers import train_adapter


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    return train_adapter(tiny_model, tmp_path_factory.mktemp("ref") / "adapter")


def _forgetting(capsys, tiny_model: Path, adapter: Path, corpus: Path, *extra: str) -> dict:
    args = ["forgetting", "--base", str(tiny_model), "--adapter", str(adapter), "--data", str(corpus)]
    assert main([*args, "--seq-len", "24", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    f = tmp_path / "corpus.txt"
    f.write_text(" ".join(f"On day {i} the ferry to Selmoor left at {i % 12 + 1} o'clock." for i in range(80)))
    return f


def test_hidden_reference_equals_full_logits(capsys, tiny_model, adapter, corpus):
    """The hidden reference (d floats per position) against the full-logit one (V floats), same adapter.

    Both are exact up to fp32 rounding. Measured against a float64 recomputation from the same fp32
    logits, the full-logit path's own error on forget_kl is ~2e-6 relative at KL ~0.01 on this tiny
    model's near-uniform 400-way distributions (its per-token sum of fp32 differences of ~6-nat
    log-probs), the hidden path's ~1e-8: so KL must be well above 0.01 for a 1e-6 comparison to test
    the hidden path rather than the reference's own rounding.
    """
    hidden = _forgetting(capsys, tiny_model, adapter, corpus, "--reference", "hidden")
    logits = _forgetting(capsys, tiny_model, adapter, corpus, "--reference", "logits")
    # Through the CLI on the stock tiny model KL is ~0.015, where the full-logit side's own rounding is
    # ~2e-6 relative on forget_kl: 2e-5 is ten times that, and far below any real discrepancy. The 1e-6
    # comparison on a model with sharper distributions is test_exact_eval.py's.
    assert hidden["forget_kl"] > 1e-3
    for k in ("forget_ce", "base_entropy", "forget_top1_ce", "data_loss"):
        assert hidden[k] == pytest.approx(logits[k], rel=1e-6), k
    assert hidden["forget_kl"] == pytest.approx(logits["forget_kl"], rel=2e-5)
    for k in ("forget_ce_se", "forget_kl_se"):  # the same per-sequence values give the same spread
        assert hidden[k] == pytest.approx(logits[k], rel=1e-4), k


def test_full_vocabulary_top_k_equals_exact(capsys, tiny_model, adapter, corpus):
    exact = _forgetting(capsys, tiny_model, adapter, corpus, "--reference", "logits")
    full = _forgetting(capsys, tiny_model, adapter, corpus, "--top-k", "100000")
    for k in ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss"):
        assert full[k] == pytest.approx(exact[k], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("k", [1, 8, 64, 399])
def test_top_k_is_a_lower_bound_that_tightens(capsys, tiny_model, adapter, corpus, k):
    exact = _forgetting(capsys, tiny_model, adapter, corpus)
    coarse = _forgetting(capsys, tiny_model, adapter, corpus, "--top-k", str(k))
    assert coarse["forget_kl"] <= exact["forget_kl"] + 1e-7
    assert coarse["forget_kl"] > 0
    # entropy, top-1 and data loss do not depend on K
    for key in ("base_entropy", "forget_top1_ce", "data_loss"):
        assert coarse[key] == pytest.approx(exact[key], rel=1e-6)
    assert coarse["forget_ce"] == pytest.approx(coarse["base_entropy"] + coarse["forget_kl"], rel=1e-9)
    if k == 399:  # all but one token: essentially exact
        assert coarse["forget_kl"] == pytest.approx(exact["forget_kl"], rel=1e-3)


def test_lower_bound_is_monotone_in_k(capsys, tiny_model, adapter, corpus):
    kls = [_forgetting(capsys, tiny_model, adapter, corpus, "--top-k", str(k))["forget_kl"] for k in (2, 16, 128)]
    assert kls[0] <= kls[1] + 1e-9 <= kls[2] + 2e-9


def test_shared_prefix_cache_gives_the_same_log_probs(tiny_model):
    """Running the shared chat prefix once and reusing its key/value cache changes nothing."""
    import numpy as np
    import torch

    from forgetscale.config import ModelConfig
    from forgetscale.data.encode import encode_example
    from forgetscale.forward import prefix_cache, shared_prefix, target_logprobs
    from forgetscale.models import load_model

    lm = load_model(ModelConfig(name=str(tiny_model)))
    system = {"role": "system", "content": "You are a careful assistant who answers briefly and exactly."}
    examples = [
        [system, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in [("Add 2 and 3.", "5"), ("Name a colour.", "Blue, like the sea."), ("Spell cat.", "c-a-t")]
    ]
    seqs = [encode_example({"messages": m}, lm.tokenizer, 256) for m in examples]
    c = shared_prefix(seqs)
    assert c >= 8
    assert prefix_cache(lm.model, seqs, torch.device("cpu"), 1)[1] is not None  # the cached path is really taken
    plain = {tuple(r): q for r, q, _ in target_logprobs(lm.model, seqs, 2, min_prefix=10**9)}
    cached = {tuple(r): q for r, q, _ in target_logprobs(lm.model, seqs, 2, min_prefix=1)}
    assert plain.keys() == cached.keys()
    for rows, q in plain.items():
        np.testing.assert_allclose(cached[rows].numpy(), q.numpy(), atol=1e-5)
