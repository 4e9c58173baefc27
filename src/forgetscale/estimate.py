"""What a study will cost, said before it runs: the plan (runs, steps, evaluations) and an estimated time.

The costs are wall seconds per unit of work measured on the slowest CPU of the kind forgetscale is
built on (AMD EPYC family 25: 2 cores, AVX2, fp32 training; ``docs/default-study.md``), for
SmolLM2-135M. They are scaled to this machine by the ratio of its fp32 kernel time (the one
``precision`` measures to choose fp32 or bf16, cached per machine) to that CPU's. For another model
the estimate scales with nothing but tokens, so it is a rough guide there; the progress lines' ETA,
measured as the runs go, is the better number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from forgetscale.config import RunConfig, StudyConfig

# Measured by the default study's `make study` on the AMD EPYC family 25, 2026-12-02 (docs/default-study.md).
REF_KERNEL_SECONDS = 0.0248
"""``precision.time_kernels()`` fp32 there, as ``precision`` measures and caches it."""
TRAIN_SECONDS_PER_TOKEN = 0.0158
"""One LoRA training token (batch x seq_len per step), fp32, the mean over ranks 1-64 (1,555 s, 98,304 tokens)."""
EVAL_SECONDS_PER_TOKEN = 0.0113
"""One forgetting-corpus token per scheduled evaluation, with its held-out ft_loss pass and an evaluation's
fixed costs, measured at 2,164 corpus tokens (982 s for 40 evaluations): it overstates larger corpora."""
REFERENCE_SECONDS_PER_TOKEN = 0.0091
"""One corpus token of the base reference (computed once per model and corpus, then cached)."""
PROBE_SECONDS_PER_ITEM = 0.75
"""One probe item answered by one model (the base and each probed run), 16 new tokens (272 s, 360 items)."""
FIXED_SECONDS = 20.0
"""The fit and the report."""


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
    bf16_factor: float = 1.0,
    reference_cached: bool = True,
) -> Estimate:
    """The plan of ``todo`` and its estimated seconds.

    Args:
        study: the study (probes and mitigation settings).
        todo: the runs still to train.
        runs: how many runs the sweep has in all.
        corpus_tokens: scored tokens of the forgetting corpus.
        kernel_seconds: this machine's fp32 kernel time (``precision``); None: no time estimate.
        bf16_factor: training time in bf16 relative to fp32 on this machine (1 when training in fp32).
        reference_cached: False when the base reference is still to be computed.

    Returns:
        An :class:`Estimate`.

    Example:
        >>> from forgetscale.config import load_config
        >>> s = load_config(None, "default")
        >>> e = estimate(s, s.runs(), 8, 2164, REF_KERNEL_SECONDS)
        >>> e.steps, e.evaluations, 40 * 60 < e.seconds < 55 * 60
        (256, 41, True)
    """
    steps = sum(r.train.steps for r in todo)
    # step 0 is the base model itself: measured once per study (the workspace keeps it), not once per run
    evals = sum(len(r.eval_schedule()) - 1 for r in todo) + (1 if todo else 0)
    if kernel_seconds is None or not kernel_seconds > 0:
        return Estimate(runs, len(todo), steps, evals, corpus_tokens, None)
    train = 0.0
    for r in todo:
        tokens = r.train.steps * r.train.batch_size * r.train.grad_accum * r.train.seq_len
        # the KL term adds a no-gradient forward per step (about a third of a step); replay adds examples
        extra = {"kl": 1.33, "replay": 1.0 + r.mitigation.replay_fraction}.get(r.mitigation.kind, 1.0)
        train += tokens * extra * TRAIN_SECONDS_PER_TOKEN * bf16_factor
    evaluate = evals * corpus_tokens * EVAL_SECONDS_PER_TOKEN
    probed = _probed(study, todo)
    probes = (probed + 1) * _probe_items(study) * PROBE_SECONDS_PER_ITEM if probed else 0.0
    reference = 0.0 if reference_cached else corpus_tokens * REFERENCE_SECONDS_PER_TOKEN
    seconds = (train + evaluate + probes + reference + FIXED_SECONDS) * kernel_seconds / REF_KERNEL_SECONDS
    return Estimate(runs, len(todo), steps, evals, corpus_tokens, seconds)


def _probed(study: StudyConfig, todo: Sequence[RunConfig]) -> int:
    if not study.probes.enabled:
        return 0
    chosen = {r.run_id for r in study.probed_runs()}
    return sum(r.run_id in chosen for r in todo)


def _probe_items(study: StudyConfig) -> int:
    per_kind: Mapping[str, int] = {"knowledge": 94, "reasoning": 72, "safety": 50}  # the shipped sets' sizes
    cap = study.probes.max_items
    return sum(min(cap or n, n) for k, n in per_kind.items() if k in study.probes.kinds)
