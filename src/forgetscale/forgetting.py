"""Forgetting metrics against the base model's own predictions (docs/inference.md).

With base ``p_b`` and fine-tuned ``p_ft`` at every target position ``t``:

- ``forget_ce``      = mean_t  -sum_v p_b(v) log p_ft(v)      (soft cross-entropy)
- ``base_entropy``   = mean_t  -sum_v p_b(v) log p_b(v)
- ``forget_kl``      = mean_t   sum_v p_b(v) (log p_b(v) - log p_ft(v)),  so forget_ce = H_b + KL
- ``forget_top1_ce`` = mean_t  -log p_ft(argmax p_b)
- ``data_loss``      = mean_t  -log p_ft(x_t)                  (the corpus' own tokens)

and llama.cpp's ``--kl-divergence`` summary (:meth:`Evaluation.summary`): the per-position KL's
percentiles, ``top1_agree`` = the share of positions where argmax p_ft = argmax p_b ("same top p"),
Δp = p_ft(x_t) - p_b(x_t) at the corpus' own next token x_t, as llama.cpp defines it (mean, RMS,
percentiles), the same difference at the base's top token (``dp_top1``) and, with a full-logit
reference only, ``forget_rkl`` = mean_t sum_v p_ft(v) (log p_ft(v) - log p_b(v)), the reverse direction.

Means are token-weighted over every target position of the corpus, and each
mean of ``forget_ce`` and ``forget_kl`` carries its standard error over the
corpus' sequences (``forget_ce_se``, ``forget_kl_se``). The base side is a
:class:`forgetscale.reference.BaseReference` computed once (before any adapter
exists) and reused by every run and step; its arrays are memory-mapped, read one
batch at a time, so memory stays bounded whatever the vocabulary. The fine-tuning
loss on held-out data (``ft_loss``, with ``ft_loss_se`` over its examples) is here
too. This module does no file I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from forgetscale.data.encode import Sequence
from forgetscale.forward import chunks, forward_batches, logprobs, lse_parts, lse_top
from forgetscale.reference import BaseReference, check_serves, head_signature, log_tail_mass, same_head
from forgetscale.schema import FORGETTING_METRICS

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SE_METRICS = ("forget_ce", "forget_kl")
"""Forgetting metrics reported with their standard error over sequences (``<name>_se``)."""

PERCENTILES = (("max", 100.0), ("99.9%", 99.9), ("99%", 99.0), ("95%", 95.0), ("90%", 90.0), ("median", 50.0),
               ("10%", 10.0), ("5%", 5.0), ("1%", 1.0), ("0.1%", 0.1), ("min", 0.0))  # fmt: skip
"""The per-position KL percentiles llama.cpp's ``--kl-divergence`` prints (linear interpolation, as it does)."""
DP_PERCENTILES = (("max", 100.0), ("99.9%", 99.9), ("99%", 99.0), ("95%", 95.0), ("90%", 90.0), ("75%", 75.0),
                  ("median", 50.0), ("25%", 25.0), ("10%", 10.0), ("5%", 5.0), ("1%", 1.0), ("0.1%", 0.1),
                  ("min", 0.0))  # fmt: skip
"""The per-position Δp percentiles llama.cpp prints (the KL's, with the quartiles added)."""


@dataclass(frozen=True)
class Evaluation:
    """One pass of a model over a reference's corpus, before it is reduced to a row.

    Attributes:
        sums: per-sequence sums of the per-position values: ``forget_ce``, ``forget_kl``, ``forget_top1_ce``,
            ``data_loss``, ``top1_agree`` (1 where the model's top token is the base's), ``dp`` and ``dp2``
            (llama.cpp's Δp ``p_ft(x) - p_base(x)`` at the corpus' next token ``x``, and its square; only when
            the reference stores ``p_base(x)``), ``dp_top1`` and ``dp_top1_2`` (the same at the base's top
            token) and ``forget_rkl`` (KL(p_ft || p_base); full-logit reference only).
        counts: target positions per sequence.
        kl: the KL at every target position, in corpus order.
        base_entropy: the base entropy summed over all positions.
        dp: llama.cpp's Δp at every target position, in corpus order (None where ``dp`` is not in ``sums``).
    """

    sums: dict[str, np.ndarray]
    counts: np.ndarray
    kl: np.ndarray
    base_entropy: float
    dp: np.ndarray | None = None

    def mean(self, name: str) -> float | None:
        """The token-weighted mean of ``name`` (None when this evaluation has no such values)."""
        return None if name not in self.sums else float(self.sums[name].sum() / self.counts.sum())

    def se(self, name: str) -> float | None:
        """Its standard error over sequences (:func:`ratio_se`)."""
        return None if name not in self.sums else ratio_se(self.sums[name], self.counts)

    def row(self) -> dict[str, Any]:
        """What a measurement row records: :func:`measure`'s dict."""
        names = [k for k in FORGETTING_METRICS if k != "base_entropy"]
        sums = {k: float(self.sums[k].sum()) for k in names}
        sums["base_entropy"] = self.base_entropy
        out: dict[str, Any] = finalize(sums, int(self.counts.sum()))
        for k in SE_METRICS:
            out[f"{k}_se"] = self.se(k)
        p50, p99 = np.percentile(self.kl, [50.0, 99.0])
        out |= {"top1_agree": self.mean("top1_agree"), "top1_agree_se": self.se("top1_agree"),
                "kl_p50": float(p50), "kl_p99": float(p99), "forget_rkl": self.mean("forget_rkl"),
                "seq_kl": self.sequence_kl()}  # fmt: skip
        return out

    def sequence_kl(self) -> list[float]:
        """Each sequence's mean KL per target position, in corpus order (NaN for one without targets)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return [float(v) for v in self.sums["forget_kl"] / self.counts]

    def summary(self) -> dict[str, Any]:
        """llama.cpp's ``--kl-divergence`` summary: mean KL ± se, the KL percentiles (:data:`PERCENTILES`),
        "same top p" ± se, Δp's mean ± se, RMS ± se and percentiles (:data:`DP_PERCENTILES`), the mean ± se and
        RMS of Δp at the base's top token (``dp_top1_*``), and reverse KL ± se (None without a full-logit reference).

        Unlike llama.cpp, every standard error is over sequences (:func:`ratio_se`), not positions; the RMS's is
        llama.cpp's propagation of the mean square's, ``se(Δp²) / (2 RMS)``.
        """
        dp2, top2 = self.mean("dp2"), self.mean("dp_top1_2")
        rms = None if dp2 is None else math.sqrt(dp2)
        return {
            "forget_kl": self.mean("forget_kl"), "forget_kl_se": self.se("forget_kl"),
            "kl_percentiles": percentiles(self.kl, PERCENTILES),
            "top1_agree": self.mean("top1_agree"), "top1_agree_se": self.se("top1_agree"),
            "dp_mean": self.mean("dp"), "dp_mean_se": self.se("dp"), "dp_rms": rms,
            "dp_rms_se": None if rms is None else (self.se("dp2") / (2 * rms) if rms > 0 else 0.0),
            "dp_percentiles": None if self.dp is None else percentiles(self.dp, DP_PERCENTILES),
            "dp_top1_mean": self.mean("dp_top1"), "dp_top1_mean_se": self.se("dp_top1"),
            "dp_top1_rms": None if top2 is None else math.sqrt(top2),
            "forget_rkl": self.mean("forget_rkl"), "forget_rkl_se": self.se("forget_rkl"),
        }  # fmt: skip


def percentiles(values: np.ndarray, table: tuple[tuple[str, float], ...]) -> dict[str, float]:
    """``{name: percentile}`` of ``values`` for each ``(name, q)`` of ``table``, interpolated linearly between
    order statistics at ``q/100 * (n - 1)`` as llama.cpp does (its median: the mean of the middle two).

    >>> percentiles(np.array([3.0, 1.0, 2.0, 4.0]), (("max", 100.0), ("median", 50.0), ("25%", 25.0)))
    {'max': 4.0, 'median': 2.5, '25%': 1.75}
    """
    return dict(zip([name for name, _ in table], (float(v) for v in np.percentile(values, [q for _, q in table])),
                    strict=True))


def measure(model: PreTrainedModel, ref: BaseReference, batch_size: int) -> dict[str, Any]:
    """The forgetting metrics of ``model`` against ``ref``, with standard errors and the summary figures.

    Returns:
        ``{"forget_ce", "forget_kl", "base_entropy", "forget_top1_ce", "data_loss", "n_tokens",
        "forget_ce_se", "forget_kl_se", "top1_agree", "top1_agree_se", "kl_p50", "kl_p99", "forget_rkl",
        "seq_kl"}``; the standard errors are over the corpus' sequences (:func:`ratio_se`), ``forget_rkl``
        is None without a full-logit reference, and ``seq_kl`` lists each sequence's mean KL.

    Raises:
        RuntimeError: ``ref`` is a hidden reference and ``model``'s LM head is not the base's.
    """
    return evaluate(model, ref, batch_size).row()


def evaluate(model: PreTrainedModel, ref: BaseReference, batch_size: int) -> Evaluation:
    """One pass of ``model`` over ``ref``'s corpus: per-sequence sums and per-position KL (:class:`Evaluation`).

    Raises:
        RuntimeError: ``ref`` is a hidden reference and ``model``'s LM head is not the base's.
    """
    seqs = list(ref.sequences)
    counts = np.array([s.n_targets for s in seqs], np.float64)
    seq_of_row = np.repeat(np.arange(len(seqs)), counts.astype(np.int64))
    names = [k for k in FORGETTING_METRICS if k != "base_entropy"] + ["top1_agree"]
    names += ["dp", "dp2"] if ref.target_p is not None else []
    names += ["dp_top1", "dp_top1_2"] if ref.top1_p is not None else []
    names += ["forget_rkl"] if ref.logp is not None and ref.mean_emb is None else []
    per_seq = {k: np.zeros(len(seqs)) for k in names}
    kl = np.zeros(ref.n_tokens)
    dp = np.zeros(ref.n_tokens) if ref.target_p is not None else None
    hidden = require_head(model, ref, "the hidden base reference")
    for batch_rows, logits, batch_targets, hidden_states in forward_batches(model, seqs, batch_size, hidden=hidden):
        for rows, z, targets, h in chunks(batch_rows, logits, batch_targets, hidden_states):
            chunk = chunk_metrics(ref, rows, z, targets, h, reverse=True)
            top1 = torch.from_numpy(ref.top1[rows])
            model_top1 = chunk.pop("model_top1", None)  # the hidden metrics' own pass over z found it
            chunk["top1_agree"] = ((z.argmax(-1) if model_top1 is None else model_top1) == top1).double()
            if ref.target_p is not None:  # p_ft(x) = exp(-data_loss), read as the reference stored p_base(x)
                d = (-chunk["data_loss"].double()).exp() - torch.from_numpy(ref.target_p[rows])
                chunk |= {"dp": d, "dp2": d * d}
                dp[rows] = d.numpy()
            if ref.top1_p is not None:  # p_ft(t) = exp(-forget_top1_ce), likewise for the base's top token t
                d = (-chunk["forget_top1_ce"].double()).exp() - torch.from_numpy(ref.top1_p[rows])
                chunk |= {"dp_top1": d, "dp_top1_2": d * d}
            seq = seq_of_row[rows]
            for k in names:
                np.add.at(per_seq[k], seq, chunk[k].double().numpy())
            kl[rows] = chunk["forget_kl"].double().numpy()
    return Evaluation(per_seq, counts, kl, float(ref.entropy.sum()), dp)


def require_head(model: PreTrainedModel, ref: BaseReference, what: str) -> bool:
    """Whether ``ref`` is a hidden reference (its metrics need the model's final hidden states), after
    checking that such a reference applies: it stands for the base's logits only through the base's LM head.

    Raises:
        ReferenceMismatch: ``ref`` was made on another device or in another dtype than ``model`` runs in.
        RuntimeError: a hidden reference and a model whose LM head is not the base's.
    """
    check_serves(ref, model)
    hidden = ref.mean_emb is not None
    if hidden and not same_head(head_signature(model), ref.head_check):
        raise RuntimeError(
            f"the model's LM head differs from the base's, so {what} does not apply: "
            "use an exact full-logit reference (forgetting.reference=logits)"
        )
    return hidden


def chunk_metrics(ref: BaseReference, rows: np.ndarray, z: torch.Tensor, targets: torch.Tensor,
                  h: torch.Tensor | None, reverse: bool = False) -> dict[str, torch.Tensor]:
    """The per-position metrics of one chunk of ``ref``'s rows, from the model's logits ``z`` (and its final
    hidden states ``h`` for a hidden reference), with the formulas of the reference's mode; ``reverse`` adds
    ``forget_rkl`` where the base's full distribution is stored (a full-logit reference)."""
    top1 = torch.from_numpy(ref.top1[rows])
    if ref.mean_emb is not None:
        assert h is not None
        mu = torch.from_numpy(np.ascontiguousarray(ref.mean_emb[rows]))
        return hidden_position_metrics(mu, h, z, torch.from_numpy(ref.entropy[rows]), top1, targets)
    if ref.logp is not None:
        logp = torch.from_numpy(np.ascontiguousarray(ref.logp[rows])).double()
        logq = logprobs(z)
        out = position_metrics(logp, logq, top1, targets)
        if reverse:
            out["forget_rkl"] = reverse_kl(logp, logq)
        return out
    return topk_position_metrics(
        torch.from_numpy(ref.topk_logp[rows]), torch.from_numpy(ref.topk_idx[rows].astype(np.int64)),
        torch.from_numpy(ref.tail_logp[rows]), torch.from_numpy(ref.entropy[rows]), logprobs(z), top1, targets,
    )  # fmt: skip


def reverse_kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-position reverse KL(q || p) = sum_v q(v) (log q(v) - log p(v)) from base ``logp`` and fine-tuned ``logq``.

    The direction that weighs where the fine-tune puts its mass (mode-seeking); a token the base gives
    probability 0 and the fine-tune does not makes it infinite, as it is.

    >>> p = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    >>> q = torch.log(torch.tensor([[0.9, 0.1]], dtype=torch.float64))
    >>> round(float(reverse_kl(p, q)), 6), round(float(reverse_kl(p, p)), 6)
    (0.368064, 0.0)
    """
    q = logq.exp()
    # KL per position is >= 0 in exact arithmetic; clamp the rounding noise at identity
    return (q * (logq - logp.clamp_min(torch.finfo(logp.dtype).min))).sum(-1).clamp_min(0.0)


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
    the same positions (``z = W h``, W the base's LM head). ``model_top1`` is
    ``z.argmax(-1)``, which the log-normaliser's pass for the maximum gives free.

    >>> w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> h = torch.tensor([[0.3, -0.2]])
    >>> z = h @ w.T
    >>> mu = torch.softmax(z, -1) @ w
    >>> ent = hidden_position_metrics(mu, h, z, torch.zeros(1), torch.tensor([0]), torch.tensor([0]))["forget_ce"]
    >>> m = hidden_position_metrics(mu, h, z, ent, torch.tensor([0]), torch.tensor([0]))
    >>> float(m["forget_kl"][0])  # the model is the base: KL exactly 0
    0.0
    """
    m, log_s, model_top1 = lse_top(z)
    ce = (m - (mu.double() * h.double()).sum(-1)) + log_s  # as reference.hidden_ce, which made the entropy
    lse = m + log_s
    return {
        "model_top1": model_top1,
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
    q_tail = log_tail_mass(logq, topk_idx).double()
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


def held_out_loss(model: PreTrainedModel, sequences: list[Sequence], batch_size: int) -> dict[str, float]:
    """``ft_loss``, the token-weighted next-token cross-entropy over the target positions, and ``ft_loss_se``.

    ``logsumexp(z) - z[target]`` per position, over small chunks: no full log-softmax is
    materialised. The standard error is over the examples (each one sequence), the sampling unit
    of held-out data, by the same cluster estimator as ``forget_kl_se`` (:func:`ratio_se`).

    Returns:
        ``{"ft_loss", "ft_loss_se"}``; NaN with no target position (the error also with one example).
    """
    counts = np.array([s.n_targets for s in sequences], np.float64)
    seq_of_row = np.repeat(np.arange(len(sequences)), counts.astype(np.int64))
    per_seq = np.zeros(len(sequences))
    for rows, logits, targets, _h in forward_batches(model, sequences, batch_size):
        for r, z, t in chunks(rows, logits, targets):
            m, log_s = lse_parts(z)
            np.add.at(per_seq, seq_of_row[r], (m + log_s - z.gather(-1, t[:, None]).squeeze(-1).double()).numpy())
    n = counts.sum()
    return {"ft_loss": float(per_seq.sum() / n) if n else math.nan, "ft_loss_se": ratio_se(per_seq, counts)}


def sequence_loss(model: PreTrainedModel, sequences: list[Sequence], batch_size: int) -> float:
    """The token-weighted next-token cross-entropy over the target positions (:func:`held_out_loss`'s ``ft_loss``)."""
    return held_out_loss(model, sequences, batch_size)["ft_loss"]
