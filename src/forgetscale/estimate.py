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

REF_KERNEL_SECONDS = 0.0174
"""``precision.time_kernels()`` fp32 on the AMD EPYC family 25, quiet (best of 15 timings)."""
TRAIN_SECONDS_PER_TOKEN = 0.0103
"""One LoRA training token (batch x seq_len per step), fp32, ranks 1-64 (their mean)."""
EVAL_SECONDS_PER_TOKEN = 0.0048
"""One forgetting-corpus token per scheduled evaluation, with its held-out ft_loss pass."""
REFERENCE_SECONDS_PER_TOKEN = 0.0069
"""One corpus token of the base reference (computed once per model and corpus, then cached)."""
PROBE_SECONDS_PER_ITEM = 0.40
"""One probe item answered by one model (the base and each probed run), 16 new tokens."""
FIXED_SECONDS = 60.0
"""Loading (GGUF conversion the first time), fit and report."""


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
        >>> e.steps, e.evaluations, 20 * 60 < e.seconds < 35 * 60
        (256, 48, True)
    """
    steps = sum(r.train.steps for r in todo)
    evals = sum(len(r.eval_schedule()) for r in todo)
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
