"""The evaluation profile (bench/evaluation.py) on the tiny Llama: its counts are the plan's, its FLOP
floor counts the matmul weights outside the embedding and head, and its parts add up to the evaluation."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from forgetscale.data.encode import Sequence


def _sequences(vocab: int, n: int, seed: int) -> list[Sequence]:
    rng = random.Random(seed)
    prefix = tuple(rng.randrange(vocab) for _ in range(10))
    out = []
    for _ in range(n):
        prompt = tuple(rng.randrange(vocab) for _ in range(rng.randint(2, 9)))
        answer = tuple(rng.randrange(vocab) for _ in range(rng.randint(2, 12)))
        ids = prefix + prompt + answer
        out.append(Sequence(ids, tuple(t >= len(prefix) + len(prompt) for t in range(len(ids)))))
    return out


def test_profile_counts_floors_and_parts(tiny_model: Path, tmp_path: Path, capsys):
    from bench import evaluation

    from forgetscale.config import LoraConfig, ModelConfig
    from forgetscale.forward import plan_batches
    from forgetscale.models import load_model
    from forgetscale.reference import compute_reference
    from forgetscale.train import attach_lora

    model = load_model(ModelConfig(name=str(tiny_model))).model
    corpus, held = _sequences(model.config.vocab_size, 9, 0), _sequences(model.config.vocab_size, 4, 1)
    ref = compute_reference(model, corpus, 4, tmp_path / "c", mode="hidden")
    task_ref = compute_reference(model, held, 4, tmp_path / "h", mode="hidden")
    peft_model = attach_lora(model, LoraConfig(rank=2), 0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)

    counts = evaluation.evaluation_counts(peft_model, ref, task_ref, 4)
    d, f, layers = model.config.hidden_size, model.config.intermediate_size, model.config.num_hidden_layers
    kv = d // model.config.num_attention_heads * model.config.num_key_value_heads
    assert counts["body_params"] == layers * (2 * d * d + 2 * d * kv + 3 * d * f)  # q, o, k, v, MLP
    assert counts["head_params"] == model.config.vocab_size * d
    plan = plan_batches(corpus, 4)
    c = counts["forgetting"]
    assert (c["prefix"], c["real"], c["padding"], c["scored"]) == (10, plan.real_tokens, plan.padding_tokens,
                                                                   sum(s.n_targets for s in corpus))  # fmt: skip
    assert c["body_gflop"] == 2 * counts["body_params"] * plan.real_tokens / 1e9

    out = evaluation.profile_evaluation(peft_model, ref, task_ref, 4, repeats=1)
    printed = capsys.readouterr().out
    assert "total" in printed and "forgetting.head" in printed
    parts = out["runs"][0]
    assert set(parts) == {
        f"{p}.{k}" for p in ("held_out", "forgetting") for k in ("prefix", "forwards", "head", "metrics")
    }
    assert all(v >= 0 for v in parts.values()) and parts["forgetting.prefix"] > 0 and parts["held_out.head"] > 0
    assert out["floor_s"]["forgetting.metrics"] == 0.0 and out["floor_total_s"] > 0
    assert out["matmul_gflops"] > 0 and out["value"] == out["total_s"] / out["floor_total_s"]
