"""Mitigations of forgetting: replay data, and post-hoc changes of a plain run's final adapter.

The KL-to-base term lives in the training loss (:class:`forgetscale.train.TargetsOnlyTrainer`);
this module holds what the others need: the replay source and the collator that mixes it
into every batch (``mitigation.kind: replay``), and the rows of a run's adapter changed after
training (``mitigation.post_hoc``): ``rescale`` (WiSE-FT: for LoRA, ``W + s B A`` interpolates the
weights between the base, s = 0, and the fine-tune, s = 1) and ``intruders`` (PEFT's intruder-
dimension reduction). ``forgetscale compare`` judges them against plain LoRA's line
(:mod:`forgetscale.laws.frontier`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetscale.data import synthetic
from forgetscale.data.corpus import sample_self, shipped_prompts
from forgetscale.data.encode import Sequence, encode_example
from forgetscale.data.sources import load_splits
from forgetscale.errors import UserError
from forgetscale.intruders import BaseSpectra, IntruderReduction

if TYPE_CHECKING:
    from forgetscale.config import RunConfig


def check_replay(run: RunConfig) -> None:
    """Cheap checks of ``mitigation.replay_source`` before any model loads.

    Raises:
        UserError: too few shipped prompts left for ``self``, a missing file.
    """
    m = run.mitigation
    if m.kind != "replay":
        return
    if m.replay_source == "self":
        used = run.forgetting.n_prompts if run.forgetting.corpus == "self" else 0
        free = len(shipped_prompts()) - used
        if m.replay_examples > free:
            raise UserError(
                f"mitigation.replay_examples: {m.replay_examples} self-sampled replay prompts, but only {free} of "
                f"the shipped prompts are not in the forgetting corpus (forgetting.n_prompts={used}); ask for fewer"
            )
        return
    spec = m.replay_source
    if spec not in synthetic.GENERATORS and not spec.startswith("hf:") and not Path(spec).expanduser().exists():
        raise UserError(
            f"mitigation.replay_source: {spec!r} is not 'self', a built-in dataset, an existing file or hf:NAME"
        )


def replay_prompts(run: RunConfig) -> list[str]:
    """The shipped prompts a ``self`` replay source answers: the last ``replay_examples`` of the list,
    while the ``self`` forgetting corpus takes the first ``forgetting.n_prompts`` (disjoint by
    :func:`check_replay`)."""
    prompts = shipped_prompts()
    return prompts[len(prompts) - run.mitigation.replay_examples :]


def replay_sequences(run: RunConfig, tok: Any, model: Any, model_fingerprint: str, cache: Path) -> list[Sequence]:
    """The encoded replay examples of ``run`` (``self`` is sampled once and cached on disk, like the
    ``self`` forgetting corpus, with the forgetting corpus' sampling settings). A study's
    :class:`forgetscale.workspace.Workspace` keeps them in memory for the process.

    Raises:
        UserError: an unusable source, or one with no example that has a token to train on.
    """
    m = run.mitigation
    check_replay(run)
    if m.replay_source == "self":
        pairs = sample_self(run.forgetting, tok, model, model_fingerprint, cache, prompts=replay_prompts(run))
        examples = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                    for p, r in pairs]  # fmt: skip
    else:
        examples, _ = load_splits(m.replay_source, m.replay_examples, 1, run.data.seed, run.data.split)
    seqs = [s for s in (encode_example(e, tok, run.train.seq_len) for e in examples) if s is not None]
    if not seqs:
        raise UserError(f"mitigation.replay_source {m.replay_source}: no example has a token to train on")
    return seqs


@dataclass
class ReplayCollator:
    """Wraps a data collator: each batch of fine-tuning examples gains replayed ones, so that on average
    ``fraction`` of every batch's examples come from ``replay``.

    A batch of n examples gets ``fraction * n / (1 - fraction)`` replayed ones, rounded down with the
    remainder carried to the next batch (25% on batches of 4: 1, 1, 2, 1, 1, 2, ...). Replayed examples
    are drawn without replacement, reshuffled each pass, from a generator seeded by ``seed``. A
    fraction of 0 adds nothing: the batches are exactly the plain run's.
    """

    inner: Callable[[list[dict[str, Any]]], Any]
    replay: list[Sequence]
    fraction: float
    seed: int = 0
    _owed: float = 0.0
    _queue: list[int] = field(default_factory=list)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.fraction > 0 and not self.replay:
            raise UserError("mitigation.replay_fraction > 0 but the replay source has no examples")

    def count(self, n: int) -> int:
        """How many replayed examples join a batch of ``n`` (advances the carried remainder)."""
        self._owed += self.fraction * n / (1.0 - self.fraction)
        k = int(self._owed + 1e-9)
        self._owed -= k
        return k

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        extra = []
        for _ in range(self.count(len(features))):
            if not self._queue:
                self._queue = list(range(len(self.replay)))
                self._rng.shuffle(self._queue)
            s = self.replay[self._queue.pop()]
            extra.append({"input_ids": list(s.ids), "labels": s.labels()})
        return self.inner([*features, *extra])


def post_hoc_rows(
    run: RunConfig,
    model: Any,
    step: int,
    tokens: int,
    metrics: Callable[[Any], dict[str, float]],
    seconds: dict[str, float] | None = None,
    spectra: BaseSpectra | None = None,
    own: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The measurement rows of ``model``'s adapter changed by each post-hoc method of ``run``.

    - ``rescale`` (WiSE-FT) at each of ``mitigation.scales``: PEFT's ``rescale_adapter_scale``, entered
      *outside* ``metrics``' :func:`forgetscale.fold.folded`, which reads each layer's scaling when it
      folds ``W + s B A``: the folded weight is the rescaled one. At the final step (or at every
      scheduled step but 0, with ``rescale_steps: all``).
    - ``intruders`` at each of ``mitigation.intruder_lambdas``, at the final step: PEFT's intruder-dimension
      reduction (:class:`forgetscale.intruders.IntruderReduction`, with the base's singular vectors from
      ``spectra``); the row's ``n_intruders`` counts the dimensions changed.

    A row's ``method`` and ``strength`` send it to the store's post-hoc table. ``seconds``,
    when given, accumulates each method's wall time (changing the adapter and measuring it). ``own``, the
    run's own metrics at ``step`` (``metrics(model)``), stands for a measurement of an adapter the method
    left unchanged (no intruder found): the same weights give the same numbers, so it is not measured.
    """
    m = run.mitigation
    methods = m.post_hoc_methods()
    if step == 0 or not methods:
        return []
    final = step == run.train.steps
    rows = []

    def row(method: str, strength: float, values: dict[str, float], **extra: Any) -> None:
        ft_loss = values.pop("ft_loss")
        rows.append({"step": step, "method": method, "strength": float(strength), "tokens": tokens, "ft_loss": ft_loss,
                     "n_eval_tokens": values.pop("n_tokens"), **values, **extra})  # fmt: skip

    clock = seconds if seconds is not None else {}
    if "rescale" in methods and (final or m.rescale_steps == "all"):
        from peft.helpers import rescale_adapter_scale

        start = time.perf_counter()
        for scale in m.scales:
            with rescale_adapter_scale(model, float(scale)):
                row("rescale", scale, metrics(model))
        clock["rescale"] = clock.get("rescale", 0.0) + time.perf_counter() - start
    if "intruders" in methods and final:
        start = time.perf_counter()
        found = IntruderReduction(model, m.intruder_top_k, m.intruder_epsilon, spectra or BaseSpectra())
        for lam in m.intruder_lambdas:
            with found.applied(lam) as n:
                row("intruders", lam, dict(own) if n == 0 and own is not None else metrics(model), n_intruders=n)
        clock["intruders"] = clock.get("intruders", 0.0) + time.perf_counter() - start
    return rows
