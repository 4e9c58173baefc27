"""The plan's time estimate has the structure its model claims: each term moves the estimate by its own cost."""

from __future__ import annotations

import pytest

from forgetscale import estimate as est
from forgetscale.config import load_config

K = est.REF_KERNEL_SECONDS  # the reference CPU itself: no scaling
COMPUTED = 8000


def _seconds(*overrides: str, computed: int = COMPUTED, kernel: float = K) -> tuple[float, est.Estimate]:
    study = load_config(None, "default", overrides=["probes.enabled=false", "sweep.train.seed=[0]", *overrides])
    todo = study.runs()
    e = est.estimate(study, todo, len(todo), 2000, kernel, computed_tokens=computed)
    assert e.seconds is not None
    return e.seconds, e


def test_doubling_the_evaluations_adds_their_cost():
    few, e_few = _seconds("train.eval_steps=[8,16,24,32]")
    many, e_many = _seconds("train.eval_steps=[4,8,12,16,20,24,28,32]")
    added = e_many.evaluations - e_few.evaluations
    assert added == 4 * 4  # four more per run, four runs
    assert many - few == pytest.approx(added * est.evaluation_seconds(COMPUTED))


def test_an_evaluation_costs_its_computed_tokens_not_only_the_scored_ones():
    small, e = _seconds(computed=4000)
    large, _ = _seconds(computed=8000)
    assert large - small == pytest.approx(e.evaluations * 4000 * est.EVAL_SECONDS_PER_COMPUTED_TOKEN)
    assert est.EVAL_SECONDS_PER_COMPUTED_TOKEN > 0 and est.EVAL_FIXED_SECONDS > 0


def test_two_workers_divide_training_time_by_the_measured_factor():
    # four equal runs on two workers: two rounds, each run at 2 / speedup of its own time
    procs = ["executor.kind=processes", "executor.workers=2"]
    local_short, _ = _seconds("train.steps=16", "train.eval_steps=[16]")  # the same evaluations: at 0 and the end
    local_long, _ = _seconds("train.steps=32", "train.eval_steps=[32]")
    proc_short, _ = _seconds("train.steps=16", "train.eval_steps=[16]", *procs)
    proc_long, _ = _seconds("train.steps=32", "train.eval_steps=[32]", *procs)
    assert (proc_long - proc_short) == pytest.approx((local_long - local_short) / est.TRAIN_SPEEDUP)


def test_each_worker_starts_and_measures_the_base_once():
    local, e_local = _seconds()
    procs, e_procs = _seconds("executor.kind=processes", "executor.workers=2")
    assert e_procs.evaluations == e_local.evaluations + 1  # step 0 once per worker
    one_run = load_config(None, "default", overrides=["probes.enabled=false", "sweep.lora.rank=[4]",
                                                       "sweep.train.seed=[0]", "executor.kind=processes"])  # fmt: skip
    alone = est.estimate(one_run, one_run.runs(), 1, 2000, K, computed_tokens=COMPUTED)
    assert alone.evaluations == len(one_run.runs()[0].eval_schedule())  # one run: trained here, no worker started
    # the same work, less its start-up, spread over two workers at their speed-ups
    t, e = zip(*(est.run_seconds(r, est.evaluation_seconds(COMPUTED)) for r in load_config(
        None, "default", overrides=["probes.enabled=false", "sweep.train.seed=[0]"]).runs()), strict=True)  # fmt: skip
    one = est.evaluation_seconds(COMPUTED)
    assert local - est.FIXED_SECONDS == pytest.approx(sum(t) + sum(e) + one)
    shares = [2 * t[i] / est.TRAIN_SPEEDUP + 2 * (e[i] + (one if i < 2 else 0)) / est.EVAL_SPEEDUP for i in range(4)]
    assert procs - est.FIXED_SECONDS - est.WORKER_START_SECONDS == pytest.approx(est.dealt(shares, 2))


def test_the_estimate_scales_with_the_kernel_time_and_ray_is_estimated_as_local():
    ref, _ = _seconds()
    slow, _ = _seconds(kernel=2 * K)
    assert slow == pytest.approx(2 * ref)
    assert _seconds("executor.kind=ray")[0] == pytest.approx(ref)
    study = load_config(None, "default")
    assert est.estimate(study, study.runs(), 8, 2000, None).seconds is None  # an unknown speed: no estimate


def test_computed_tokens_are_what_the_batch_plan_computes():
    """Nothing after the last scored logit, the shared prefix once, padding counted: not every token."""
    from forgetscale.data.encode import Sequence

    prefix = tuple(range(100, 112))  # 12 shared tokens: computed once (forward.MIN_SHARED_PREFIX is 8)
    a = Sequence(prefix + (1, 2, 3, 4, 5, 6, 7, 8), (False,) * 12 + (True, True) + (False,) * 6)
    b = Sequence(prefix + (9, 10, 11), (False,) * 12 + (False, True, True))
    # the prefix stops at 11 (the logit at 11 scores a's first target); a computes up to position 12 (13 tokens),
    # b up to 13 (14): one batch 3 wide past the prefix, a padded by 1. Counting every token would give 35.
    assert est.computed_tokens([a, b], batch_size=32) == 11 + 3 + 3
    assert est.computed_tokens([a, b], batch_size=32) < len(a.ids) + len(b.ids)


def test_each_method_trains_at_its_measured_cost_against_loras():
    """The methods preset's runs, priced one by one: each run's training is LoRA's of the same tokens times its
    method's factor, and a full fine-tune of 2 of 30 blocks is priced by that share, below one of every weight."""
    study = load_config(None, "methods", overrides=["executor.kind=local"])
    one = est.evaluation_seconds(COMPUTED)
    lora = next(r for r in study.runs() if r.method.kind == "lora")
    per_lora = est.run_seconds(lora, one)[0]
    for r in study.runs():
        t, e = est.run_seconds(r, one, n_blocks=30)
        want = est.METHOD_TRAIN_FACTOR.get(r.method.kind)
        if r.method.kind == "full":
            want = est.FULL_TRAIN_FACTOR[0] + est.FULL_TRAIN_FACTOR[1] * r.method.blocks / 30
            assert t < est.run_seconds(r, one)[0]  # blocks unknown: priced as every weight
        assert t == pytest.approx(per_lora * want) and e == pytest.approx(3 * one)
    assert est.METHOD_TRAIN_FACTOR["dora"] > 1 > est.FULL_TRAIN_FACTOR[0] + 2 / 30 * est.FULL_TRAIN_FACTOR[1]
    total = est.estimate(study, study.runs(), 12, 2000, K, computed_tokens=COMPUTED, n_blocks=30).seconds
    priced = sum(sum(est.run_seconds(r, one, n_blocks=30)) for r in study.runs()) + one + est.FIXED_SECONDS
    assert total == pytest.approx(priced)  # the plan line prices every run by its method
