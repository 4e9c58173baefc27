"""Forgetting metrics against the base model's own predictions (DESIGN.md section 2).

With base ``p_b`` and fine-tuned ``p_ft`` at every target position ``t``:

- ``forget_ce``      = mean_t  -sum_v p_b(v) log p_ft(v)      (soft cross-entropy)
- ``base_entropy``   = mean_t  -sum_v p_b(v) log p_b(v)
- ``forget_kl``      = mean_t   sum_v p_b(v) (log p_b(v) - log p_ft(v)),  so forget_ce = H_b + KL
- ``forget_top1_ce`` = mean_t  -log p_ft(argmax p_b)
- ``data_loss``      = mean_t  -log p_ft(x_t)                  (the corpus' own tokens)

Means are token-weighted over every target position of the corpus, and each
mean of ``forget_ce`` and ``forget_kl`` carries its standard error over the
corpus' sequences (``forget_ce_se``, ``forget_kl_se``). The base side is a
:class:`BaseReference` computed once (before any adapter exists) and reused by
every run and step; its arrays live in memory-mapped files, read one batch at a
time, so memory stays bounded whatever the vocabulary. This module does no file
I/O of its own beyond those arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from forgetscale.data.encode import Sequence
from forgetscale.forward import (  # noqa: F401  (shared_prefix, _prefix_cache, _target_logprobs: re-exported for callers and tests)
    MIN_SHARED_PREFIX,
    _forward_batches,
    _prefix_cache,
    _target_logprobs,
    shared_prefix,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

METRICS = ("forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss")
SE_METRICS = ("forget_ce", "forget_kl")
"""Metrics reported with their standard error over sequences (``<name>_se``)."""
REFERENCE_MODES = ("hidden", "logits")
"""Exact reference storage: ``hidden`` (d floats per position, valid while the LM head is the base's)
or ``logits`` (V floats per position, valid for any fine-tune). Top-K is the lossy third option."""


@dataclass(frozen=True)
class BaseReference:
    """Base-model predictions at the target positions of ``sequences``, in corpus order.

    Row ``i`` of every array belongs to the ``i``-th target position when the
    sequences' target positions are listed in order. Three storage modes:

    - hidden (exact, the default): per position the base distribution's expected
      output embedding ``mu = W^T p_b`` (d floats, W the (V, d) LM head). The
      base log-probs are a function of the base's final hidden state ``h_b``
      through the head, ``p_b = softmax(W h_b)``, and every metric needs them only
      through ``sum_v p_b(v) z_v`` with ``z = W h`` the fine-tuned logits, which is
      ``mu . h``: so one dot product per position replaces a second projection
      onto the vocabulary, and d/V of the full-logit size is stored (576/49152
      for SmolLM2). Valid only while the evaluated model's LM head is the base's
      (``head_check`` guards it; :func:`measure` refuses a changed head);
    - logits (exact): the full (n, V) float32 log-probabilities, valid for any fine-tune;
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
    mean_emb: np.ndarray | None = None
    """Hidden mode: (n_targets, d) float32 ``W^T p_b`` per position, a read-only memmap."""
    head_check: np.ndarray | None = None
    """Hidden mode: (V,) float32 signature of the base LM head (:func:`head_signature`)."""

    @property
    def n_tokens(self) -> int:
        return len(self.entropy)

    @property
    def top_k(self) -> int | None:
        return None if self.topk_idx is None else self.topk_idx.shape[1]

    @property
    def mode(self) -> str:
        """``hidden``, ``logits`` or ``top<K>``: what this reference stores."""
        if self.mean_emb is not None:
            return "hidden"
        return "logits" if self.logp is not None else f"top{self.top_k}"

    @classmethod
    def load(cls, directory: Path, sequences: tuple[Sequence, ...]) -> BaseReference:
        meta = dict(np.load(directory / "meta.npz"))
        for name, field in (("logp.npy", "logp"), ("mean_emb.npy", "mean_emb")):
            if (directory / name).is_file():
                meta[field] = np.load(directory / name, mmap_mode="r")
        ref = cls(sequences, **meta)
        if ref.n_tokens != sum(s.n_targets for s in sequences):
            raise RuntimeError(f"base reference {directory} does not match its corpus")
        return ref


def compute_reference(
    model: PreTrainedModel,
    sequences: list[Sequence],
    batch_size: int,
    out: Path,
    top_k: int | None = None,
    mode: str = "logits",
) -> BaseReference:
    """Run the base model once over the corpus and write its predictions to ``out``.

    Args:
        mode: ``hidden`` or ``logits`` for an exact reference (ignored when ``top_k``
            is set below the vocabulary size). ``hidden`` falls back to ``logits``
            when the model's logits are not a bias-free linear function of its final
            hidden states (a soft-capped or scaled head) or its head is not float32;
            the result's ``mode`` says which.

    Every mode is written batch by batch, so only one batch of logits is ever in memory.
    """
    if mode not in REFERENCE_MODES:
        raise ValueError(f"reference mode {mode!r}: expected one of {REFERENCE_MODES}")
    n = sum(s.n_targets for s in sequences)
    vocab = _vocab_size(model)
    out.mkdir(parents=True, exist_ok=True)
    exact = top_k is None or top_k >= vocab
    if exact and mode == "hidden":
        try:
            return _compute_hidden_reference(model, sequences, batch_size, out, n)
        except _HiddenUnsupported:
            for f in out.iterdir():
                f.unlink()
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
    for batch_rows, logits, _targets, _h in _forward_batches(model, sequences, batch_size):
        for rows, z in _chunks(batch_rows, logits):
            logq = _logprobs(z)
            meta["entropy"][rows] = (-(logq.exp() * logq).sum(-1)).numpy()
            meta["top1"][rows] = z.argmax(-1).numpy()
            if exact:
                logp_mm[rows] = logq.float().numpy()
            else:
                vals, idx = logq.topk(k, dim=-1)
                meta["topk_idx"][rows] = idx.numpy()
                meta["topk_logp"][rows] = vals.float().numpy()
                meta["tail_logp"][rows] = _tail_logp(logq, idx).numpy()
    if exact:
        logp_mm.flush()
        del logp_mm
    np.savez(out / "meta.npz", **meta)
    return BaseReference.load(out, tuple(sequences))


def mean_embedding(z: torch.Tensor, weight64: torch.Tensor) -> torch.Tensor:
    """``mu = W^T softmax(z)`` per row, (n, d) fp32 on the CPU: what a hidden reference stores.

    Normalised and accumulated over the whole vocabulary in float64 (``weight64`` is the LM
    head's weight in float64), then rounded once. In fp32 the accumulation over 49k entries
    left forget_kl, a small difference of ~20-nat terms, 1.2e-6 relative from the full-logit
    reference on SmolLM2; in float64, 3.3e-7 (measured on the bench's 64 sequences).
    """
    p = torch.softmax(z.double(), -1).to(weight64.device)
    return (p @ weight64).float().cpu()


class _HiddenUnsupported(Exception):
    """The model's logits are not ``W h`` for its LM head ``W`` and final hidden state ``h``."""


def _compute_hidden_reference(
    model: PreTrainedModel, sequences: list[Sequence], batch_size: int, out: Path, n: int
) -> BaseReference:
    head = model.get_output_embeddings()
    # fp32 only: in bf16 the logits' own rounding (~0.4%) would not cancel against mu . h
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or head.weight.dtype != torch.float32:
        raise _HiddenUnsupported
    weight = head.weight.detach()
    weight64 = weight.double()  # once per reference: 226 MB for SmolLM2's head
    d = weight.shape[1]
    meta = {
        "entropy": np.empty(n, np.float64),
        "top1": np.empty(n, np.int64),
        "head_check": head_signature(model),
    }
    mu_mm = np.lib.format.open_memmap(out / "mean_emb.npy", "w+", np.float32, (n, d))
    checked = False
    for batch_rows, logits, _targets, hidden in _forward_batches(model, sequences, batch_size, hidden=True):
        if not checked:  # the hidden mode's premise, checked on real data: logits = W h
            direct = F.linear(hidden[:METRIC_CHUNK].to(weight.device), weight).cpu()
            scale = float(logits[:METRIC_CHUNK].abs().max()) + 1e-30
            if not torch.allclose(direct, logits[:METRIC_CHUNK], rtol=1e-4, atol=1e-4 * scale):
                raise _HiddenUnsupported
            checked = True
        # the same chunks, in the same order, as measure() uses: at identity both see the same numbers
        for rows, z, h in _chunks(batch_rows, logits, hidden):
            mu = mean_embedding(z, weight64)
            mu_mm[rows] = mu.numpy()
            meta["entropy"][rows] = _hidden_ce(mu, h, z).numpy()  # H_b is the CE of p_b against itself
            meta["top1"][rows] = z.argmax(-1).numpy()
    mu_mm.flush()
    del mu_mm
    np.savez(out / "meta.npz", **meta)
    return BaseReference.load(out, tuple(sequences))


HEAD_SIGNATURE_SEED = 1234


def head_signature(model: PreTrainedModel) -> np.ndarray:
    """(V,) float32: the model's output layer applied to a fixed random vector.

    Calls the module itself, so a LoRA or ``modules_to_save`` copy of the head,
    a trained tied embedding or a merged adapter all show. Two heads that differ
    in any row give different signatures (a change orthogonal to a random vector
    has probability zero).
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("the model has no output embeddings (LM head)")
    d = head.weight.shape[1] if hasattr(head, "weight") else model.config.hidden_size
    probe = torch.randn(1, d, generator=torch.Generator().manual_seed(HEAD_SIGNATURE_SEED))
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            param = next(head.parameters())
            return head(probe.to(param.device, param.dtype)).float().cpu().numpy()[0]
    finally:
        head.train(was_training)


def same_head(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two :func:`head_signature` values come from the same head.

    Tolerates matmul rounding on another device (1e-5 relative); a trained head
    moves it by far more (one Adam step at lr 1e-6 moves each entry ~5e-5), and a
    change below it would move the metrics by less than that relative amount.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-5 * np.abs(b) + 1e-6 * np.abs(b).max()))


def head_module_name(model: PreTrainedModel) -> str | None:
    """The short name (``lm_head``) of the model's output layer, as LoRA ``target_modules`` names it."""
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return name.rsplit(".", 1)[-1]
    return None


METRIC_CHUNK = 32
"""Positions per metric evaluation. The metrics make several (positions, vocabulary)
temporaries; at 32 positions they stay small, at a whole batch's few hundred they
cost more in fresh-memory page faults than in arithmetic (measured: 7.7x slower)."""


def _chunks(*xs: Any) -> Iterator[tuple[Any, ...]]:
    """Consecutive ``METRIC_CHUNK``-row slices of equally long arrays or tensors (``None`` stays ``None``).

    >>> [tuple(len(x) for x in c) for c in _chunks(np.arange(70), torch.zeros(70, 2))]
    [(32, 32), (32, 32), (6, 6)]
    """
    for i in range(0, len(xs[0]), METRIC_CHUNK):
        yield tuple(None if x is None else x[i : i + METRIC_CHUNK] for x in xs)


def measure(model: PreTrainedModel, ref: BaseReference, batch_size: int) -> dict[str, float]:
    """The five forgetting metrics of ``model`` against ``ref``, with standard errors.

    Returns:
        ``{"forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss", "n_tokens",
        "forget_ce_se", "forget_kl_se"}``; the standard errors are over the corpus'
        sequences (:func:`ratio_se`).

    Raises:
        RuntimeError: ``ref`` is a hidden reference and ``model``'s LM head is not the base's.
    """
    seqs = list(ref.sequences)
    counts = np.array([s.n_targets for s in seqs], np.float64)
    seq_of_row = np.repeat(np.arange(len(seqs)), counts.astype(np.int64))
    per_seq = {k: np.zeros(len(seqs)) for k in METRICS if k != "base_entropy"}
    hidden = ref.mean_emb is not None
    if hidden and not same_head(head_signature(model), ref.head_check):
        raise RuntimeError(
            "the model's LM head differs from the base's, so the hidden base reference does not apply: "
            "use an exact full-logit reference (forgetting.reference=logits)"
        )
    for batch_rows, logits, batch_targets, hidden_states in _forward_batches(model, seqs, batch_size, hidden=hidden):
        for rows, z, targets, h in _chunks(batch_rows, logits, batch_targets, hidden_states):
            top1 = torch.from_numpy(ref.top1[rows])
            if hidden:
                assert h is not None
                mu = torch.from_numpy(np.ascontiguousarray(ref.mean_emb[rows]))
                entropy = torch.from_numpy(ref.entropy[rows])
                chunk = hidden_position_metrics(mu, h, z, entropy, top1, targets)
            elif ref.logp is not None:
                logp = torch.from_numpy(np.ascontiguousarray(ref.logp[rows])).double()
                chunk = position_metrics(logp, _logprobs(z), top1, targets)
            else:
                chunk = topk_position_metrics(
                    torch.from_numpy(ref.topk_logp[rows]),
                    torch.from_numpy(ref.topk_idx[rows].astype(np.int64)),
                    torch.from_numpy(ref.tail_logp[rows]),
                    torch.from_numpy(ref.entropy[rows]),
                    _logprobs(z),
                    top1,
                    targets,
                )
            seq = seq_of_row[rows]
            for k, v in chunk.items():
                np.add.at(per_seq[k], seq, v.double().numpy())
    sums = {k: float(v.sum()) for k, v in per_seq.items()}
    sums["base_entropy"] = float(ref.entropy.sum())
    out = finalize(sums, ref.n_tokens)
    for k in SE_METRICS:
        out[f"{k}_se"] = ratio_se(per_seq[k], counts)
    return out


def ratio_se(sums: np.ndarray, counts: np.ndarray) -> float:
    """Standard error of the token-weighted mean ``sum(sums) / sum(counts)`` over sequences.

    A corpus is a sample of sequences and positions within one sequence are not
    independent, so the sampling unit is the sequence: this is the ratio
    (linearisation, cluster-robust) estimator, ``sqrt(n/(n-1) * sum_i (S_i - R c_i)^2) / sum_i c_i``
    with ``S_i``, ``c_i`` sequence ``i``'s sum and token count and ``R`` the mean.
    It is exactly 0 when every position's value is 0 (the KL at step 0), and NaN
    with fewer than two sequences.

    >>> round(ratio_se(np.array([1.0, 3.0]), np.array([1.0, 1.0])), 6)  # two values 1 and 3: sd/sqrt(n)
    1.0
    >>> ratio_se(np.zeros(3), np.array([2.0, 5.0, 1.0]))
    0.0
    """
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    n, total = len(sums), counts.sum()
    if n < 2 or total == 0:
        return math.nan
    resid = sums - sums.sum() / total * counts
    return float(math.sqrt(n / (n - 1) * float(resid @ resid)) / total)


def _logprobs(z: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of logits ``z``, normalised in float64, rounded to fp32, returned as float64.

    float64 normalisation: an fp32 log-softmax rounds log q to ulp(logsumexp z), ~2e-6 for
    logits of ~20, which was a systematic 1e-5 relative error in forget_ce against a float64
    recomputation. The fp32 rounding is what a stored full-logit reference keeps; the
    evaluated model's log-probs are rounded alike, so at identity KL is exactly 0 and forget_ce
    equals the base entropy. Sums over them are then taken in float64.
    """
    return F.log_softmax(z.double(), -1).float().double()


def _lse_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max z, log sum exp(z - max z))`` per row in float64: ``logsumexp(z)`` is their sum."""
    m = z.max(-1, keepdim=True).values
    return m.squeeze(-1).double(), torch.sum((z - m).exp(), -1, dtype=torch.float64).log()


def _hidden_ce(mu: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-position ``-sum_v p_b(v) log q(v)`` from ``mu = W^T p_b``, the evaluated model's final hidden
    state ``h`` and its logits ``z = W h``: ``logsumexp(z) - mu . h``, in float64.

    Written as ``(max z - mu . h) + log sum exp(z - max z)``: the two large terms (~20 nats
    each for a real LM) cancel before anything is rounded to their scale.
    """
    m, log_s = _lse_parts(z)
    return (m - (mu.double() * h.double()).sum(-1)) + log_s


def hidden_position_metrics(
    mu: torch.Tensor,
    h: torch.Tensor,
    z: torch.Tensor,
    entropy: torch.Tensor,
    top1: torch.Tensor,
    targets: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-position metrics against a hidden reference (``mu = W^T p_b``, base entropy per position).

    ``h`` and ``z`` are the evaluated model's final hidden states and logits at
    the same positions (``z = W h``, W the base's LM head).

    >>> w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> h = torch.tensor([[0.3, -0.2]])
    >>> z = h @ w.T
    >>> mu = torch.softmax(z, -1) @ w
    >>> ent = hidden_position_metrics(mu, h, z, torch.zeros(1), torch.tensor([0]), torch.tensor([0]))["forget_ce"]
    >>> m = hidden_position_metrics(mu, h, z, ent, torch.tensor([0]), torch.tensor([0]))
    >>> float(m["forget_kl"][0])  # the model is the base: KL exactly 0
    0.0
    """
    m, log_s = _lse_parts(z)
    ce = (m - (mu.double() * h.double()).sum(-1)) + log_s  # as _hidden_ce, which made the entropy
    lse = m + log_s
    return {
        "forget_ce": ce,
        # KL per position is >= 0 in exact arithmetic; clamp the rounding noise at identity
        "forget_kl": (ce - entropy).clamp_min(0.0),
        "forget_top1_ce": lse - z.gather(-1, top1[:, None]).squeeze(-1).double(),
        "data_loss": lse - z.gather(-1, targets[:, None]).squeeze(-1).double(),
    }


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
    """Token-weighted next-token cross-entropy over the target positions (``ft_loss``).

    ``logsumexp(z) - z[target]`` per position, over small chunks: no full log-softmax is materialised.
    """
    total, n = 0.0, 0
    for _rows, logits, targets, _h in _forward_batches(model, sequences, batch_size):
        for z, t in _chunks(logits, targets):
            m, log_s = _lse_parts(z)
            total += float((m + log_s - z.gather(-1, t[:, None]).squeeze(-1).double()).sum())
        n += len(targets)
    return total / n if n else math.nan


def _vocab_size(model: PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]
