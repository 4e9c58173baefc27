"""The evaluation's forward path on the tiny Llama: batched by plan (shared prefix cached, rows padded,
unscored tails not computed), it gives each sequence's logits and hidden states as that sequence alone
through a plain forward does; the step-0 KL stays exactly 0; held-out ``ft_loss`` is the same sum whether
or not it reuses the hidden metrics' normaliser."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from forgetscale.data.encode import Sequence


@pytest.fixture(scope="module")
def model(tiny_model: Path):
    from forgetscale.config import ModelConfig
    from forgetscale.models import load_model

    return load_model(ModelConfig(name=str(tiny_model))).model


@pytest.fixture(scope="module")
def sequences(model) -> list[Sequence]:
    """Chat-like: a 12-token prefix shared by all, prompts and answers of uneven length, some with an
    unscored tail after the answer (which the plan must not compute), one with no target."""
    rng = random.Random(3)
    v = model.config.vocab_size
    prefix = tuple(rng.randrange(v) for _ in range(12))
    out = []
    for k in range(11):
        prompt = tuple(rng.randrange(v) for _ in range(rng.randint(2, 14)))
        answer = tuple(rng.randrange(v) for _ in range(rng.randint(1, 20)))
        tail = tuple(rng.randrange(v) for _ in range(3 if k % 3 == 0 else 0))
        ids = prefix + prompt + answer + tail
        n0 = len(prefix) + len(prompt)
        out.append(Sequence(ids, tuple(n0 <= t < n0 + len(answer) for t in range(len(ids)))))
    out.append(Sequence(prefix + (1, 2, 3), (False,) * 15))
    return out


def _alone(model, s: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, final hidden states and targets at s's scored positions, from one plain forward over all of s."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([s.ids]), output_hidden_states=True)
    pos = [t - 1 for t in range(1, len(s.ids)) if s.mask[t]]
    return (
        out.logits[0, pos],
        out.hidden_states[-1][0, pos],
        torch.tensor([s.ids[t] for t in range(len(s.ids)) if s.mask[t]]),
    )


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_planned_batches_give_each_sequence_as_alone(model, sequences, batch_size):
    from forgetscale.forward import forward_batches, plan_batches

    plan = plan_batches(sequences, batch_size)
    assert plan.prefix == 12 and all(len(b.idx) <= batch_size for b in plan.batches)
    assert plan.needed[0] < len(sequences[0].ids) - 3  # the tail and the last target are not computed
    offsets = [0]
    for s in sequences:
        offsets.append(offsets[-1] + s.n_targets)
    seen = []
    for rows, logits, targets, h in forward_batches(model, sequences, batch_size, hidden=True):
        assert len(rows) == len(logits) == len(targets) == len(h)
        for i, s in enumerate(sequences):
            mine = (rows >= offsets[i]) & (rows < offsets[i + 1])
            if not mine.any():
                continue
            z, hh, t = _alone(model, s)
            got = torch.from_numpy(mine)
            assert torch.equal(targets[got], t)
            assert torch.allclose(logits[got], z, atol=1e-5, rtol=0)
            assert torch.allclose(h[got], hh, atol=1e-5, rtol=0)
        seen += rows.tolist()
    assert sorted(seen) == list(range(offsets[-1]))


def test_identity_is_exactly_zero_and_ft_loss_one_sum(model, sequences, tmp_path):
    from forgetscale.forgetting import held_out_loss, measure
    from forgetscale.reference import compute_reference
    from forgetscale.task import held_out_metrics

    seqs = sequences[:-1]  # a reference needs every sequence to score something
    for mode in ("hidden", "logits"):
        ref = compute_reference(model, seqs, 3, tmp_path / mode, mode=mode)
        m = measure(model, ref, 3)
        assert m["forget_kl"] == 0.0 and m["forget_kl_se"] == 0.0 and m["top1_agree"] == 1.0
        h = held_out_metrics(model, ref, 3)
        assert h["task_kl"] == 0.0
        # two ways of summing the same float64 per-position losses: they may differ by summation order only
        assert h["ft_loss"] == pytest.approx(held_out_loss(model, seqs, 3)["ft_loss"], rel=1e-12, abs=0)
