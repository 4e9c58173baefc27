"""Forgetting metrics against the base model's own predictions (DESIGN.md section 2).

With base ``p_b`` and fine-tuned ``p_ft`` at every target position ``t``:

- ``forget_ce``      = mean_t  -sum_v p_b(v) log p_ft(v)      (soft cross-entropy)
- ``base_entropy``   = mean_t  -sum_v p_b(v) log p_b(v)
- ``forget_kl``      = mean_t   sum_v p_b(v) (log p_b(v) - log p_ft(v)),  so forget_ce = H_b + KL
- ``forget_top1_ce`` = mean_t  -log p_ft(argmax p_b)
- ``data_loss``      = mean_t  -log p_ft(x_t)                  (the corpus' own tokens)

Means are token-weighted over every target position of the corpus. The base
side is a :class:`BaseReference` computed once (before any adapter exists) and
reused by every run and step; its log-probabilities live in a memory-mapped
file, read one batch at a time, so memory stays bounded whatever the vocabulary.
This module does no file I/O of its own beyond that array.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from forgetscale.compat import cache_kwargs, kept_logits, output_cache
from forgetscale.data.encode import Sequence

if TYPE_CHECKING:
    from transformers import PreTrainedModel

METRICS = ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")


@dataclass(frozen=True)
class BaseReference:
    """Base-model predictions at the target positions of ``sequences``, in corpus order.

    Row ``i`` of every array belongs to the ``i``-th target position when the
    sequences' target positions are listed in order. Two storage modes:

    - exact (``top_k is None``): the full (n, V) float32 log-probabilities;
    - top-K: per position the K largest base log-probabilities, their token ids,
      and the log of the remaining tail mass. KL between the coarse-grained
      distributions (K tokens + one tail bucket) is a lower bound on the true KL
      (data-processing inequality) and exact when K is the vocabulary size;
      entropy, top-1 and data loss stay exact. ~2 KB per position at K=256
      instead of V*4 bytes (196 KB for a 49k vocabulary).
    """

    sequences: tuple[Sequence, ...]
    entropy: np.ndarray
    """(n_targets,) float64 base entropy per position (always exact)."""
    top1: np.ndarray
    """(n_targets,) int64 argmax of the base distribution."""
    logp: np.ndarray | None = None
    """Exact mode: (n_targets, vocab) float32 log-probabilities, a read-only memmap."""
    topk_idx: np.ndarray | None = None
    """Top-K mode: (n_targets, K) int32 token ids of the K most likely tokens."""
    topk_logp: np.ndarray | None = None
    """Top-K mode: (n_targets, K) float32 their base log-probabilities."""
    tail_logp: np.ndarray | None = None
    """Top-K mode: (n_targets,) float64 log of the base mass outside the top K."""

    @property
    def n_tokens(self) -> int:
        return len(self.entropy)

    @property
    def top_k(self) -> int | None:
        return None if self.topk_idx is None else self.topk_idx.shape[1]

    @classmethod
    def load(cls, directory: Path, sequences: tuple[Sequence, ...]) -> BaseReference:
        meta = dict(np.load(directory / "meta.npz"))
        if (directory / "logp.npy").is_file():
            meta["logp"] = np.load(directory / "logp.npy", mmap_mode="r")
        ref = cls(sequences, **meta)
        if ref.n_tokens != sum(s.n_targets for s in sequences):
            raise RuntimeError(f"base reference {directory} does not match its corpus")
        return ref


def compute_reference(
    model: PreTrainedModel, sequences: list[Sequence], batch_size: int, out: Path, top_k: int | None = None
) -> BaseReference:
    """Run the base model once over the corpus and write its predictions to ``out``.

    Exact mode fills ``out/logp.npy`` batch by batch, so only one batch of logits
    is ever in memory; top-K mode keeps only K values per position.
    """
    n = sum(s.n_targets for s in sequences)
    vocab = _vocab_size(model)
    out.mkdir(parents=True, exist_ok=True)
    exact = top_k is None or top_k >= vocab
    k = vocab if exact else int(top_k)
    meta = {"entropy": np.empty(n, np.float64), "top1": np.empty(n, np.int64)}
    if exact:
        logp_mm = np.lib.format.open_memmap(out / "logp.npy", "w+", np.float32, (n, vocab))
    else:
        meta |= {
            "topk_idx": np.empty((n, k), np.int32),
            "topk_logp": np.empty((n, k), np.float32),
            "tail_logp": np.empty(n, np.float64),
        }
    for rows, logq, _targets in _target_logprobs(model, sequences, batch_size):
        meta["entropy"][rows] = (-(logq.exp() * logq).sum(-1)).double().numpy()
        meta["top1"][rows] = logq.argmax(-1).numpy()
        if exact:
            logp_mm[rows] = logq.numpy()
        else:
            vals, idx = logq.topk(k, dim=-1)
            meta["topk_idx"][rows] = idx.numpy()
            meta["topk_logp"][rows] = vals.numpy()
            meta["tail_logp"][rows] = _tail_logp(logq, idx).double().numpy()
    if exact:
        logp_mm.flush()
        del logp_mm
    np.savez(out / "meta.npz", **meta)
    return BaseReference.load(out, tuple(sequences))


METRIC_CHUNK = 32
"""Positions per metric evaluation. The metrics make several (positions, vocabulary)
temporaries; at 32 positions they stay small, at a whole batch's few hundred they
cost more in fresh-memory page faults than in arithmetic (measured: 7.7x slower)."""


def measure(model: PreTrainedModel, ref: BaseReference, batch_size: int) -> dict[str, float]:
    """The five forgetting metrics of ``model`` against ``ref`` (plus ``n_tokens``).

    Returns:
        ``{"forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss", "n_tokens"}``.
    """
    sums = dict.fromkeys(METRICS, 0.0)
    for batch_rows, batch_logq, batch_targets in _target_logprobs(model, list(ref.sequences), batch_size):
        for i in range(0, len(batch_targets), METRIC_CHUNK):
            rows, logq, targets = (x[i : i + METRIC_CHUNK] for x in (batch_rows, batch_logq, batch_targets))
            top1 = torch.from_numpy(ref.top1[rows])
            if ref.logp is not None:
                logp = torch.from_numpy(np.ascontiguousarray(ref.logp[rows]))
                chunk = position_metrics(logp, logq, top1, targets)
            else:
                chunk = topk_position_metrics(
                    torch.from_numpy(ref.topk_logp[rows]),
                    torch.from_numpy(ref.topk_idx[rows].astype(np.int64)),
                    torch.from_numpy(ref.tail_logp[rows]),
                    torch.from_numpy(ref.entropy[rows]),
                    logq,
                    top1,
                    targets,
                )
            for k, v in chunk.items():
                sums[k] += float(v.double().sum())
    sums["base_entropy"] = float(ref.entropy.sum())
    return finalize(sums, ref.n_tokens)


def topk_position_metrics(
    topk_logp: torch.Tensor,
    topk_idx: torch.Tensor,
    tail_logp: torch.Tensor,
    entropy: torch.Tensor,
    logq: torch.Tensor,
    top1: torch.Tensor,
    targets: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-position metrics against a top-K + tail reference.

    KL is taken between the coarse-grained distributions (the K base tokens and
    one bucket for the rest), a lower bound on the true KL; ``forget_ce`` is the
    exact base entropy plus that KL.

    >>> lp = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    >>> vals, idx = lp.topk(2)
    >>> tail = torch.log(torch.tensor([0.2], dtype=torch.float64))
    >>> h = -(lp.exp() * lp).sum(-1).double()
    >>> m = topk_position_metrics(vals, idx, tail, h, lp, torch.tensor([0]), torch.tensor([0]))
    >>> round(float(m["forget_kl"]), 7)
    0.0
    """
    logp = topk_logp.double()
    q_top = logq.gather(-1, topk_idx).double()
    q_tail = _tail_logp(logq, topk_idx).double()
    p = logp.exp()
    p_tail = tail_logp.exp()
    tail_term = torch.where(p_tail > 0, p_tail * (tail_logp - q_tail), torch.zeros_like(p_tail))
    kl = ((p * (logp - q_top)).sum(-1) + tail_term).clamp_min(0.0)
    return {
        "forget_ce": entropy + kl,
        "forget_kl": kl,
        "forget_top1_ce": -logq.gather(-1, top1[:, None]).squeeze(-1),
        "data_loss": -logq.gather(-1, targets[:, None]).squeeze(-1),
    }


def _tail_logp(logq: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Log of the probability mass outside columns ``idx``, per row, summed over the tail itself.

    Not ``log(1 - sum(top))``: with a large K the top mass of fp32 log-probs can
    round to 1 or above, and the tail then came out as -inf (an infinite KL).
    """
    return logq.scatter(-1, idx, float("-inf")).logsumexp(-1)


def position_metrics(
    logp: torch.Tensor, logq: torch.Tensor, top1: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-position metric values from base log-probs ``logp`` and fine-tuned ``logq``, both (n, V).

    >>> lp = torch.log(torch.tensor([[0.5, 0.5]]))
    >>> m = position_metrics(lp, lp, torch.tensor([0]), torch.tensor([1]))
    >>> round(float(m["forget_kl"]), 6), round(float(m["forget_ce"]), 4)
    (0.0, 0.6931)
    """
    # -inf base log-probs (p=0) would give 0 * inf = nan; any finite stand-in contributes exactly 0
    logp = logp.clamp_min(torch.finfo(logp.dtype).min)
    p = logp.exp()
    return {
        "forget_ce": -(p * logq).sum(-1),
        # KL per position is >= 0 in exact arithmetic; clamp the rounding noise at identity
        "forget_kl": (p * (logp - logq)).sum(-1).clamp_min(0.0),
        "forget_top1_ce": -logq.gather(-1, top1[:, None]).squeeze(-1),
        "data_loss": -logq.gather(-1, targets[:, None]).squeeze(-1),
    }


def finalize(sums: dict[str, float], n_tokens: int) -> dict[str, float]:
    if n_tokens == 0:
        raise ValueError("no target tokens to average over")
    out = {k: v / n_tokens for k, v in sums.items()}
    out["n_tokens"] = n_tokens
    return out


def sequence_loss(model: PreTrainedModel, sequences: list[Sequence], batch_size: int) -> float:
    """Token-weighted next-token cross-entropy over the target positions (``ft_loss``)."""
    total, n = 0.0, 0
    for _rows, logq, targets in _target_logprobs(model, sequences, batch_size):
        total += float(-logq.gather(-1, targets[:, None]).double().sum())
        n += len(targets)
    return total / n if n else math.nan


def shared_prefix(sequences: list[Sequence]) -> int:
    """Length of the token prefix every sequence shares, cut so that no scored logit falls inside it.

    Chat corpora share their template's opening (a default system prompt, the
    user header): computed once per evaluation instead of once per sequence.

    >>> a = Sequence((1, 2, 3, 4), (False, False, False, True))
    >>> b = Sequence((1, 2, 5, 6, 7), (False, False, False, False, True))
    >>> shared_prefix([a, b])
    2
    """
    if not sequences:
        return 0
    first = sequences[0].ids
    c = min(len(s.ids) for s in sequences)
    for s in sequences:
        n = 0
        while n < c and s.ids[n] == first[n]:
            n += 1
        # the logit at position t-1 scores target t: keep every such logit outside the prefix
        first_target = s.mask.index(True) if True in s.mask else len(s.ids)
        c = min(n, first_target - 1)
    return max(c, 0)


MIN_SHARED_PREFIX = 8
"""Shorter shared prefixes are not worth a cache copy per batch."""


def _target_logprobs(
    model: PreTrainedModel, sequences: list[Sequence], batch_size: int, min_prefix: int = MIN_SHARED_PREFIX
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (reference rows, fp32 log-probs at target positions (n, V), target ids (n,)).

    Sequences are batched in length order to cut padding; rows map each yielded
    position back to its place in corpus order. A prefix shared by all sequences
    (at least ``min_prefix`` tokens) is run once and its key/value cache reused.
    """
    offsets = np.cumsum([0] + [s.n_targets for s in sequences])
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            c, prefix_cache = _prefix_cache(model, sequences, device, min_prefix)
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                batch = [sequences[i] for i in idx]
                width = max(len(s.ids) for s in batch)
                ids = torch.zeros(len(batch), width, dtype=torch.long)
                attn = torch.zeros(len(batch), width, dtype=torch.long)
                tmask = torch.zeros(len(batch), width, dtype=torch.bool)
                for j, s in enumerate(batch):
                    ids[j, : len(s.ids)] = torch.tensor(s.ids)
                    attn[j, : len(s.ids)] = 1
                    tmask[j, : len(s.ids)] = torch.tensor(s.mask)
                # logits at t-1 predict token t: project only those positions onto the vocabulary
                keep = torch.zeros_like(tmask)
                keep[:, :-1] = tmask[:, 1:]
                kw: dict[str, Any] = {}
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)  # the forward pass appends to it
                    cache.batch_repeat_interleave(len(batch))
                    kw = cache_kwargs(model, cache)
                logits = kept_logits(model, ids[:, c:].to(device), attn.to(device), keep[:, c:].to(device), **kw)
                logq = F.log_softmax(logits.float(), dim=-1).cpu()
                targets = ids[:, 1:][tmask[:, 1:]]
                rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
                yield rows, logq, targets
    finally:
        model.train(was_training)


def _prefix_cache(
    model: PreTrainedModel, sequences: list[Sequence], device: torch.device, min_prefix: int
) -> tuple[int, Any]:
    c = shared_prefix(sequences)
    if c < min_prefix:
        return 0, None
    try:
        out = model(input_ids=torch.tensor([sequences[0].ids[:c]], device=device), use_cache=True, logits_to_keep=1)
    except TypeError:  # a model without a key/value cache: compute every prefix
        return 0, None
    cache = output_cache(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return 0, None
    return c, cache


def _vocab_size(model: PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]
