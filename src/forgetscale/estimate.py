"""What a study will cost, said before it runs: the plan (runs, steps, evaluations) and an estimated time.

The model, in seconds on the reference CPU (the slowest of the kind forgetscale is built on: AMD EPYC
family 25, 2 cores, AVX2, fp32 training; ``docs/default-study.md``), for SmolLM2-135M:

* a run: ``train + evals * (EVAL_SECONDS_PER_COMPUTED_TOKEN * computed + EVAL_FIXED_SECONDS)``, with
  ``train = tokens * TRAIN_SECONDS_PER_TOKEN`` (``tokens``: steps x batch x accumulation x seq_len, more
  with a KL term or replay; times the method's factor against LoRA's, and the bf16 factor in bf16),
  ``evals`` its scheduled evaluations after step 0, and ``computed`` the tokens one evaluation computes:
  every position of the forgetting corpus (prompts included, not only the scored answers) and of the
  held-out examples;
* the step-0 evaluation (the base model itself), once per study (``local``) or once per worker;
* ``executor.kind: processes``: the runs are dealt to ``w = min(workers, runs)`` workers in study order,
  each taking the next run when it finishes one; ``w`` runs side by side train ``TRAIN_SPEEDUP`` times
  and evaluate ``EVAL_SPEEDUP`` times faster in aggregate than one after another, so a run takes
  ``w / speedup`` times its own time, and the workers start in ``WORKER_START_SECONDS``;
* then the base reference when not cached, the probes, the fit and the report.

The sum is scaled to this machine by the ratio of its fp32 kernel time (the one ``precision``
measures to choose fp32 or bf16, cached per machine) to the reference CPU's. ``python -m
bench.estimate_costs`` measures the unit costs on any machine in units of its kernel time, timed beside
each phase in the same process; run it on a quiet machine: the kernel timing is a best of rounds, so
under load the costs come out too high (2-4x for training beside a load average of 15 on 2 cores, where
these constants were not measured for that reason). For another model the estimate scales with nothing
but tokens, so it is a rough guide there; the progress lines' ETA, measured as the runs go, is the better
number.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forgetscale.config import RunConfig, StudyConfig

# The levels: the default study's `make study` on the reference CPU, 2026-12-02 (docs/default-study.md), where
# this model's sum (with the old one-number evaluation) came within 5% of the measured runs; the split of an
# evaluation into computed tokens and a fixed part: a quiet 40 Hz profile of one default run there.
REF_KERNEL_SECONDS = 0.0248
"""``precision.time_kernels()`` fp32 on the reference CPU, as ``precision`` measures and caches it."""
TRAIN_SECONDS_PER_TOKEN = 0.0158
"""One LoRA training token (batch x seq_len per step), fp32, the mean over ranks 1-64 (1,555 s, 98,304 tokens;
a rank-4 step alone measured 0.0121 per token in the profile)."""
EVAL_SECONDS_PER_COMPUTED_TOKEN = 0.0039
"""One position an evaluation computes (forgetting corpus or held-out examples, prompts and padding included):
81% of an evaluation (the forward's matmuls in the profile) of 24.6 s (982 s for 40 evaluations), over the
5,168 positions its batches then computed (corpus 24 + 3,436 + 940 padding at batch 32, held-out 768). The batch
plan now computes 4,254 there: the 0.83x its A/B measured (docs/speed.md)."""
EVAL_FIXED_SECONDS = 4.6
"""What one evaluation costs beyond its computed tokens (the per-position metrics, folding the adapter,
Python): the other 19% of it."""
TRAIN_SPEEDUP = 1.5
"""Aggregate training speed of two runs side by side, one thread each, against one run on both cores:
measured on the reference CPU with two rank-4 runs of 12 steps. Taken for any number of workers."""
EVAL_SPEEDUP = 1.0
"""The same for the evaluations, in that measurement: none (one evaluation's time doubled on one thread)."""
WORKER_START_SECONDS = 16.0
"""A worker process's start (the workers start together): the imports, 12.7 s in the profile, and the base
model's load."""
REFERENCE_SECONDS_PER_TOKEN = 0.0091
"""One corpus token of the base reference (computed once per model and corpus, then cached)."""
PROBE_SECONDS_PER_ITEM = 0.75
"""One probe item answered by one model (the base and each probed run), 16 new tokens (272 s, 360 items)."""
FIXED_SECONDS = 20.0
"""The fit and the report."""
METHOD_TRAIN_FACTOR: Mapping[str, float] = {"lora": 1.0, "dora": 1.4, "ia3": 0.75}
"""Training time per token against LoRA's (rank 4, every linear layer), per ``method.kind``: ``python -m
bench.method_cost``, every method in turn, 2 rounds of 4 steps in kernel units (DoRA 1.39, IA3 0.73; the methods
preset's own 16-step runs gave 1.43 and 0.83). LoRA's rank and target set are left out: rank 16 and the MLP-only
set read 1.23 and 1.13 there but 0.91 and 0.93 in the preset's runs, within the noise of such short timings."""
FULL_TRAIN_FACTOR = (0.51, 1.32)
"""A full fine-tune of a share ``f`` of the transformer blocks trains ``a + b f`` times as long as LoRA: the line
through the two measured as above, the last 2 of SmolLM2's 30 blocks (0.60) and every weight (1.83). Every step
runs the whole forward; the backward and the optimizer grow with the blocks trained."""


def computed_tokens(sequences: Iterable[Any], batch_size: int = 32) -> int:
    """The positions an evaluation computes on ``sequences`` in batches of ``batch_size``: what
    :func:`forgetscale.forward.plan_batches` plans, the shared prefix once, padding included, prompts included
    (the ``self`` corpus's chat-formatted prompts are most of what its forward computes).

    >>> from forgetscale.data.encode import Sequence
    >>> computed_tokens([Sequence((1, 2, 3, 4), (False, False, True, True)), Sequence((5, 6), (False, True))])
    6

    (3 and 1 positions up to each last scored logit, the shorter padded to 3 in one batch.)
    """
    from forgetscale.forward import plan_batches  # torch, which the plan's arithmetic does not need at import

    plan = plan_batches(list(sequences), batch_size)
    return plan.real_tokens + plan.padding_tokens


@dataclass(frozen=True)
class Estimate:
    """The plan of a study and its estimated wall seconds on this machine.

    Attributes:
        runs: runs in the sweep; todo: those not done yet.
        steps: total optimizer steps to train; evaluations: scheduled evaluations to run.
        corpus_tokens: tokens of the forgetting corpus (per evaluation).
        seconds: the estimate for what is left to do (None when the machine's speed is unknown).
    """

    runs: int
    todo: int
    steps: int
    evaluations: int
    corpus_tokens: int
    seconds: float | None

    def line(self) -> str:
        """The plan in one line, with the estimate when there is one."""
        from forgetscale.console import hms

        eta = f"; estimated {hms(self.seconds)} on this machine" if self.seconds is not None else ""
        done = f" ({self.runs - self.todo} already done)" if self.todo < self.runs else ""
        return (f"plan: {self.todo} of {self.runs} runs to train{done}, {self.steps} steps and {self.evaluations} "
                f"evaluations on {self.corpus_tokens} corpus tokens in all{eta}")


def estimate(
    study: StudyConfig,
    todo: Sequence[RunConfig],
    runs: int,
    corpus_tokens: int,
    kernel_seconds: float | None,
    *,
    computed_tokens: int | None = None,
    bf16_factor: float = 1.0,
    reference_cached: bool = True,
    n_blocks: int | None = None,
) -> Estimate:
    """The plan of ``todo`` and its estimated seconds (the model in the module docstring).

    Args:
        study: the study (executor, probes and mitigation settings).
        todo: the runs still to train.
        runs: how many runs the sweep has in all.
        corpus_tokens: scored tokens of the forgetting corpus.
        kernel_seconds: this machine's fp32 kernel time (``precision``); None: no time estimate.
        computed_tokens: tokens one evaluation computes (:func:`computed_tokens` of the forgetting
            corpus and of the held-out examples); None: ``corpus_tokens`` alone, an underestimate.
        bf16_factor: training time in bf16 relative to fp32 on this machine (1 when training in fp32).
        reference_cached: False when the base reference is still to be computed.
        n_blocks: the model's transformer blocks (prices a full fine-tune of some of them).

    Returns:
        An :class:`Estimate`.

    Example:
        >>> from forgetscale.config import load_config
        >>> s = load_config(None, "default")
        >>> e = estimate(s, s.runs(), 8, 2164, REF_KERNEL_SECONDS, computed_tokens=3494 + 760)
        >>> e.steps, e.evaluations, 40 * 60 < e.seconds < 55 * 60
        (256, 41, True)
    """
    steps = sum(r.train.steps for r in todo)
    workers = min(study.executor.workers, len(todo)) if study.executor.kind == "processes" else 1
    # step 0 is the base model itself: measured once per workspace (the study's, or each worker's), not per run
    base_evals = min(workers, len(todo))
    evals = sum(len(r.eval_schedule()) - 1 for r in todo) + base_evals
    if kernel_seconds is None or not kernel_seconds > 0:
        return Estimate(runs, len(todo), steps, evals, corpus_tokens, None)
    one_eval = evaluation_seconds(corpus_tokens if computed_tokens is None else computed_tokens)
    costs = [run_seconds(r, one_eval, bf16_factor, n_blocks) for r in todo]
    if workers > 1:
        # each worker's first run measures the base too; w runs side by side, each at w / speedup of its own time
        shared = [(t * workers / TRAIN_SPEEDUP, (e + (one_eval if i < workers else 0.0)) * workers / EVAL_SPEEDUP)
                  for i, (t, e) in enumerate(costs)]  # fmt: skip
        runs_seconds = WORKER_START_SECONDS + dealt([t + e for t, e in shared], workers)
    else:
        runs_seconds = sum(t + e for t, e in costs) + (one_eval if todo else 0.0)
    probed = _probed(study, todo)
    probes = (probed + 1) * _probe_items(study) * PROBE_SECONDS_PER_ITEM if probed else 0.0
    reference = 0.0 if reference_cached else corpus_tokens * REFERENCE_SECONDS_PER_TOKEN
    seconds = (runs_seconds + probes + reference + FIXED_SECONDS) * kernel_seconds / REF_KERNEL_SECONDS
    return Estimate(runs, len(todo), steps, evals, corpus_tokens, seconds)


def evaluation_seconds(computed: int) -> float:
    """One scheduled evaluation on the reference CPU: its computed tokens and its fixed cost.

    >>> evaluation_seconds(0) == EVAL_FIXED_SECONDS
    True
    """
    return computed * EVAL_SECONDS_PER_COMPUTED_TOKEN + EVAL_FIXED_SECONDS


def run_seconds(r: RunConfig, one_eval: float, bf16_factor: float = 1.0,
                n_blocks: int | None = None) -> tuple[float, float]:
    """(training, evaluations after step 0) of one run alone on the reference CPU (``n_blocks``: the model's
    transformer blocks, for a full fine-tune of some of them)."""
    tokens = r.train.steps * r.train.batch_size * r.train.grad_accum * r.train.seq_len
    # the KL term adds a no-gradient forward per step (about a third of a step); replay adds examples
    extra = {"kl": 1.33, "replay": 1.0 + r.mitigation.replay_fraction}.get(r.mitigation.kind, 1.0)
    per_token = TRAIN_SECONDS_PER_TOKEN * method_factor(r, n_blocks) * bf16_factor
    return tokens * extra * per_token, (len(r.eval_schedule()) - 1) * one_eval


def method_factor(r: RunConfig, n_blocks: int | None = None) -> float:
    """The run's training time per token against LoRA's (:data:`METHOD_TRAIN_FACTOR`, :data:`FULL_TRAIN_FACTOR`);
    a full fine-tune of some blocks of a model whose block count is unknown is priced as one of every weight.

    >>> from forgetscale.config import RunConfig
    >>> full = lambda blocks: RunConfig.model_validate({"method": {"kind": "full", "blocks": blocks}})
    >>> method_factor(RunConfig()), method_factor(full(30), 30) == method_factor(full(None)) == sum(FULL_TRAIN_FACTOR)
    (1.0, True)
    >>> method_factor(full(2), 30) < method_factor(full(2)) and method_factor(full(2), 30) < 1
    True
    """
    if r.method.kind != "full":
        return METHOD_TRAIN_FACTOR[r.method.kind]
    share = 1.0 if r.method.blocks is None or not n_blocks else min(1.0, r.method.blocks / n_blocks)
    a, b = FULL_TRAIN_FACTOR
    return a + b * share


def dealt(durations: Sequence[float], workers: int) -> float:
    """When the last of ``durations`` ends, dealt in order to ``workers`` that each take the next when free.

    >>> dealt([3, 3, 3, 3], 2), dealt([3, 3, 3], 2), dealt([5, 1, 1, 1], 2), dealt([2, 2], 1)
    (6.0, 6.0, 5.0, 4.0)
    """
    free = [0.0] * workers
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def _probed(study: StudyConfig, todo: Sequence[RunConfig]) -> int:
    if not study.probes.enabled:
        return 0
    chosen = {r.run_id for r in study.probed_runs()}
    return sum(r.run_id in chosen for r in todo)


def _probe_items(study: StudyConfig) -> int:
    per_kind: Mapping[str, int] = {"knowledge": 94, "reasoning": 72, "safety": 50}  # the shipped sets' sizes
    cap = study.probes.max_items
    return sum(min(cap or n, n) for k, n in per_kind.items() if k in study.probes.kinds)
