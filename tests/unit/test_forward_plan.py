"""The evaluation's batch plan: every sequence once, nothing computed after its last scored logit, padding
counted, and the least-cost batching; the log-normaliser's shared pass for the maximum and the argmax."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from forgetscale.data.encode import Sequence
from forgetscale.forward import lse_parts, lse_top, needed_tokens, plan_batches


def _seq(n: int, first: int, last: int, prefix: tuple[int, ...] = ()) -> Sequence:
    """``n`` tokens starting with ``prefix``, targets at positions first..last (inclusive)."""
    ids = prefix + tuple(100 + i for i in range(n - len(prefix)))
    return Sequence(ids, tuple(first <= t <= last for t in range(n)))


def _cost(widths: list[int], cuts: list[int], per_batch: int) -> int:
    bounds = [0, *cuts, len(widths)]
    return sum((j - i) * max(widths[i:j]) + per_batch for i, j in itertools.pairwise(bounds))


def test_nothing_after_the_last_scored_logit_is_computed():
    s = _seq(10, 3, 6)  # targets 3..6: logits at 2..5 are scored, so tokens 0..5 are computed
    assert needed_tokens(s) == 6
    assert needed_tokens(_seq(5, 9, 9)) == 0  # no target at all
    plan = plan_batches([s, _seq(8, 2, 7)], batch_size=4, min_prefix=99)
    assert plan.needed == (6, 7)
    assert plan.real_tokens == 13 and plan.scored == 4 + 6


def test_every_sequence_once_within_the_batch_size_and_padding_counted():
    rng = random.Random(0)
    prefix = tuple(range(1, 11))
    seqs = []
    for _ in range(40):
        n = rng.randint(14, 60)
        first = rng.randint(11, n - 2)
        seqs.append(_seq(n, first, rng.randint(first, n - 1), prefix))
    seqs.append(_seq(20, 25, 25, prefix))  # no target: not computed
    for batch_size, per_batch in ((1, 32), (4, 0), (8, 32), (64, 10**6)):
        plan = plan_batches(seqs, batch_size, min_prefix=8, per_batch=per_batch)
        assert plan.prefix == 10
        done = sorted(i for b in plan.batches for i in b.idx)
        assert done == list(range(40))  # each sequence with a target exactly once
        assert all(len(b.idx) <= batch_size for b in plan.batches)
        pad = 0
        for b in plan.batches:
            rest = [plan.needed[i] - plan.prefix for i in b.idx]
            assert b.width == max(rest)
            pad += sum(b.width - r for r in rest)
        assert plan.padding_tokens == pad
        assert plan.real_tokens == 10 + sum(plan.needed[i] - 10 for i in range(40))
    assert plan_batches(seqs, 64, min_prefix=8, per_batch=0).padding_tokens == 0  # a batch per length
    assert plan_batches(seqs, 1, min_prefix=8).padding_tokens == 0
    assert plan_batches(seqs, 8, min_prefix=11).prefix == 0  # too short a prefix to be worth its cache


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_costs_the_least_of_all_batchings(seed):
    """Against every contiguous batching of the length-sorted sequences (and so, by the exchange argument
    in plan_batches, of all), within the batch size."""
    rng = random.Random(seed)
    widths = sorted(rng.randint(1, 30) for _ in range(rng.randint(1, 9)))
    seqs = [_seq(w + 1, 1, w) for w in widths]  # needs w tokens: w computed positions, no prefix
    batch_size, per_batch = rng.randint(1, 5), rng.choice([0, 3, 10, 40])
    plan = plan_batches(seqs, batch_size, min_prefix=99, per_batch=per_batch)
    got = sum(len(b.idx) * b.width + per_batch for b in plan.batches)
    n = len(widths)
    best = min(
        _cost(widths, list(cuts), per_batch)
        for k in range(n)
        for cuts in itertools.combinations(range(1, n), k)
        if all(j - i <= batch_size for i, j in itertools.pairwise([0, *cuts, n]))
    )
    assert got == best


def test_padding_against_a_forward_pass():
    # two tight groups far apart: one batch each, whatever the batch size allows
    seqs = [_seq(n, 1, n - 1) for n in (20, 20, 21, 21, 60, 61)]
    plan = plan_batches(seqs, 32, min_prefix=99, per_batch=32)
    assert [b.idx for b in plan.batches] == [(0, 1, 2, 3), (4, 5)]
    assert plan.padding_tokens == 2 + 1
    # with forward passes free, no padding; with them dear, one batch
    assert plan_batches(seqs, 32, min_prefix=99, per_batch=0).padding_tokens == 0
    assert len(plan_batches(seqs, 32, min_prefix=99, per_batch=10**6).batches) == 1


def test_lse_top_is_lse_parts_and_argmax():
    # max and argmax select a value, so they must agree exactly; the log-sum is arithmetic in float64 over 4099
    # terms, where any change of summation order moves it by ~n eps (1e-12 relative) at most
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4099, generator=g) * 7
    z[3, [5, 900, 4000]] = z[3].max() + 1  # ties: the first index, as argmax
    z[7, :] = 0.25  # all equal
    m, log_s, top = lse_top(z)
    mm = z.max(-1, keepdim=True).values
    assert torch.equal(m, mm.squeeze(-1).double())
    torch.testing.assert_close(log_s, torch.sum((z - mm).exp(), -1, dtype=torch.float64).log(), rtol=1e-12, atol=0)
    assert torch.equal(top, z.argmax(-1))
    assert int(top[3]) == 5 and int(top[7]) == 0
    m2, log_s2 = lse_parts(z)
    assert torch.equal(m2, m)
    torch.testing.assert_close(log_s2, log_s, rtol=1e-12, atol=0)
