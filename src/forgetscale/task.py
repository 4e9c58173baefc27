"""The new task's own KL (RL's Razor): how far the fine-tune moved on the data it was trained for.

Shenfeld et al. (2025, "RL's Razor") find that the forward KL between the base and the fine-tuned
model, measured on the *new task's* data, predicts forgetting whatever the algorithm. Here it is
``task_kl`` = mean_t sum_v p_b(v) (log p_b(v) - log p_ft(v)) over the response (target) positions of
the held-out fine-tuning examples, with ``task_kl_se`` over those examples. It needs the base's
predictions on the held-out split: a :class:`forgetscale.reference.BaseReference` over the held-out
sequences, computed before any adapter exists and cached like the corpus reference
(:func:`task_reference`). It costs nothing at evaluation time beyond ``ft_loss``'s forward pass:
:func:`held_out_metrics` computes ``ft_loss``, ``ft_loss_se``, ``task_kl`` and ``task_kl_se`` from one
pass. Finding F6 (:mod:`forgetscale.laws.f6`) asks whether ``task_kl`` predicts forgetting on the
corpus better than ``ft_loss`` does. This module does no file I/O of its own (the cache is
:mod:`forgetscale.reference`'s).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgetscale.data.encode import Sequence, encode_example
from forgetscale.errors import UserError
from forgetscale.forgetting import chunk_metrics, ratio_se, require_head
from forgetscale.forward import chunks, forward_batches, lse_parts
from forgetscale.reference import BaseReference, base_reference

if TYPE_CHECKING:
    from transformers import PreTrainedModel

TASK_METRICS = ("task_kl", "task_kl_se")
"""What :func:`held_out_metrics` adds to ``ft_loss`` and ``ft_loss_se`` (and the callback logs)."""
TASK_SEQ_LEN = 256
"""The callback's held-out examples are cut at this many tokens (a full fine-tune's reference keeps V floats per
scored position: 16 examples x 256 tokens of a 49k vocabulary is 0.8 GB on disk at most)."""


def task_reference(
    model: Any, tok: Any, identity: dict[str, Any], held: list[Sequence], top_k: int | None, mode: str,
    batch_size: int, cache: Path, compute: bool = True,
) -> BaseReference | None:
    """The base reference on the held-out fine-tuning examples, from the disk cache when present.

    The same machinery and cache as the corpus reference (:func:`forgetscale.reference.base_reference`; its
    key names the held-out sequences by their fingerprint, so the two never share an entry). ``model`` must
    be the base (no adapter yet, or one disabled); with ``compute`` False (the base is not in hand) only
    a cached reference is returned, else None.
    """
    return base_reference(model, identity, tok, held, top_k, mode, batch_size, cache, compute)


def held_out_metrics(model: PreTrainedModel, ref: BaseReference, batch_size: int) -> dict[str, float]:
    """``ft_loss``, ``ft_loss_se``, ``task_kl`` and ``task_kl_se`` from one forward pass over ``ref.sequences``.

    ``ft_loss`` is computed exactly as :func:`forgetscale.forgetting.held_out_loss` computes it
    (``logsumexp(z) - z[target]`` per position, float64 sums over the same chunks); ``task_kl`` as
    :func:`forgetscale.forgetting.measure` computes ``forget_kl``, against ``ref`` (a base reference over
    the held-out sequences). Both standard errors are over the examples (:func:`~forgetscale.forgetting.ratio_se`).

    Returns:
        The four numbers; NaN with no target position (the errors also with one example).

    Raises:
        RuntimeError: ``ref`` is a hidden reference and ``model``'s LM head is not the base's.
    """
    seqs = list(ref.sequences)
    counts = np.array([s.n_targets for s in seqs], np.float64)
    seq_of_row = np.repeat(np.arange(len(seqs)), counts.astype(np.int64))
    loss, kl = np.zeros(len(seqs)), np.zeros(len(seqs))
    hidden = require_head(model, ref, "the hidden base reference of the held-out examples")
    for batch_rows, logits, batch_targets, hidden_states in forward_batches(model, seqs, batch_size, hidden=hidden):
        for rows, z, t, h in chunks(batch_rows, logits, batch_targets, hidden_states):
            seq = seq_of_row[rows]
            chunk = chunk_metrics(ref, rows, z, t, h)
            if hidden:  # its data_loss is ft_loss's very sum (lse - z[target], the same float64 ops): reused
                ce = chunk["data_loss"]
            else:  # the full-logit and top-K metrics take data_loss from fp32-rounded log-probs instead
                m, log_s = lse_parts(z)
                ce = m + log_s - z.gather(-1, t[:, None]).squeeze(-1).double()
            np.add.at(loss, seq, ce.numpy())
            np.add.at(kl, seq, chunk["forget_kl"].double().numpy())
    n = counts.sum()
    return {"ft_loss": float(loss.sum() / n) if n else math.nan, "ft_loss_se": ratio_se(loss, counts),
            "task_kl": float(kl.sum() / n) if n else math.nan, "task_kl_se": ratio_se(kl, counts)}  # fmt: skip


def task_sequences(examples: Iterable[Any], tok: Any, seq_len: int, limit: int) -> list[Sequence]:
    """Held-out fine-tuning examples as scored :class:`~forgetscale.data.encode.Sequence` s (at most ``limit``).

    Each example is a :class:`Sequence`; a ``{"messages": [...]}`` or ``{"text": ...}`` example (encoded as
    a study encodes it: the last assistant turn scored); or a tokenized row with ``input_ids`` and
    optionally ``labels`` (positions labelled -100 not scored, as a ``Trainer``'s loss counts them) or a
    ``completion_mask``/``assistant_masks`` (TRL). A row without any scored token is skipped.

    >>> task_sequences([{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}], None, 8, 10)
    [Sequence(ids=(5, 6, 7, 8), mask=(False, False, True, True))]
    """
    out: list[Sequence] = []
    for ex in examples:
        if len(out) >= limit:
            break
        if isinstance(ex, Sequence):
            s: Sequence | None = ex
        elif isinstance(ex, Mapping) and "input_ids" in ex:
            ids = [int(i) for i in ex["input_ids"]][:seq_len]
            mask = _row_mask(ex, len(ids))
            s = Sequence(tuple(ids), tuple(mask)) if any(mask) else None
        else:
            s = encode_example(dict(ex), tok, seq_len)
        if s is not None:
            out.append(s)
    return out


def _row_mask(row: Mapping[str, Any], n: int) -> list[bool]:
    """Which positions of a tokenized row are scored (position 0, with no left context, never is)."""
    if row.get("labels") is not None:
        scored = [int(v) != -100 for v in row["labels"]]
    elif row.get("completion_mask") is not None or row.get("assistant_masks") is not None:
        m = row.get("completion_mask")
        scored = [bool(v) for v in (m if m is not None else row["assistant_masks"])]
    else:
        scored = [True] * n
    scored = (scored + [False] * n)[:n]
    return [False, *scored[1:]] if n else []


def trainer_task_sequences(task: Iterable[Any] | None, trainer: Any, tok: Any, limit: int) -> list[Sequence]:
    """The callback's held-out fine-tuning examples: ``task`` when given, else the first ``limit`` rows of
    the Trainer's ``eval_dataset`` (the first one of several) when its rows are examples or tokenized rows.

    Raises:
        UserError: ``task`` was given and an example is none of the kinds :func:`task_sequences` reads.
    """
    if task is not None:
        try:
            return task_sequences(task, tok, TASK_SEQ_LEN, limit)
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"ForgettingCallback: task: an example is not a chat/text example or a tokenized row "
                            f"with input_ids ({type(e).__name__}: {e})") from None
    data = getattr(trainer, "eval_dataset", None)
    if isinstance(data, Mapping):
        data = next(iter(data.values()), None)
    if data is None:
        return []
    try:
        return task_sequences(data, tok, TASK_SEQ_LEN, limit)
    except (TypeError, ValueError, KeyError):  # an eval set of another shape: no task_kl, as without one
        return []
