"""The evaluation's forward pass: scored positions only, a shared prefix once, hidden states on request.

Everything an evaluation asks of the model goes through :func:`forward_batches`;
the metrics in :mod:`forgetscale.forgetting` only read what it yields.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from forgetscale.compat import cache_kwargs, kept_logits, output_cache
from forgetscale.data.encode import Sequence

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


def target_logprobs(
    model: PreTrainedModel, sequences: list[Sequence], batch_size: int, min_prefix: int = MIN_SHARED_PREFIX
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (reference rows, float64 log-probs at target positions (n, V), target ids (n,)).

    The softmax is taken in float64 (as the metrics take it), so the log-probs are those of
    the model's logits, not of their fp32 normalisation. See :func:`forward_batches`.
    """
    for rows, logits, targets, _h in forward_batches(model, sequences, batch_size, min_prefix):
        yield rows, F.log_softmax(logits.double(), dim=-1), targets


PER_BATCH_TOKENS = 32
"""What one more forward pass costs, in positions computed: its fixed cost per call (some thirty layers'
worth of kernel launches, the prefix cache's copy) and the smaller matmuls of a smaller batch. The batch
plan (:func:`plan_batches`) pays up to this many positions of padding to save a batch."""


@dataclass(frozen=True)
class Batch:
    """Sequences run as one forward pass: their corpus indices and the positions each row computes after the
    shared prefix (the longest of theirs; the others are padded to it)."""

    idx: tuple[int, ...]
    width: int


@dataclass(frozen=True)
class Plan:
    """How :func:`forward_batches` computes a corpus: its shared prefix, once, then its batches.

    ``needed[i]`` is the number of sequence ``i``'s tokens that must be computed: every position up to the
    last one whose logit is scored. Tokens after it (the last target itself, unscored tails) feed no scored
    logit through a causal model, so they are not computed.

    >>> a = Sequence((1, 2, 3, 4), (False, False, True, True))
    >>> b = Sequence((1, 2, 5, 6, 7, 8), (False, False, False, True, False, False))
    >>> p = plan_batches([a, b], batch_size=8, min_prefix=1)
    >>> p.prefix, p.needed, p.real_tokens, p.padding_tokens, p.scored
    (1, (3, 3), 5, 0, 3)
    """

    prefix: int
    batches: tuple[Batch, ...]
    needed: tuple[int, ...]
    scored: int

    @property
    def real_tokens(self) -> int:
        """Positions computed that belong to a sequence, the shared prefix counted once."""
        return self.prefix + sum(n - self.prefix for n in self.needed if n)

    @property
    def padding_tokens(self) -> int:
        """Positions computed only to make a batch rectangular."""
        return sum(len(b.idx) * b.width for b in self.batches) + self.prefix - self.real_tokens


def needed_tokens(s: Sequence) -> int:
    """How many of ``s``'s tokens an evaluation computes: up to the last one whose logit scores a target
    (0 for a sequence without targets).

    >>> needed_tokens(Sequence((5, 6, 7, 8, 9), (False, True, True, False, False)))
    2
    """
    return max((t for t, m in enumerate(s.mask) if m), default=0)


def plan_batches(sequences: list[Sequence], batch_size: int, min_prefix: int = MIN_SHARED_PREFIX,
                 per_batch: int = PER_BATCH_TOKENS, prefix: int | None = None) -> Plan:  # fmt: skip
    """The batches that compute ``sequences`` at least cost: at most ``batch_size`` sequences each, in
    length order, cut where padding would cost more than another forward pass (``per_batch`` positions).

    A cut is optimal over contiguous runs of the length-sorted sequences (dynamic programming): sorted,
    some optimal batching is contiguous, since swapping a long sequence of an early batch for a shorter one
    of a later batch never widens either. ``prefix`` (positions shared by all, computed once) is
    :func:`shared_prefix`'s when not given, 0 when shorter than ``min_prefix``.

    >>> seqs = [Sequence((1,) * n, (False,) + (True,) * (n - 1)) for n in (5, 5, 6, 40, 41)]
    >>> [b.idx for b in plan_batches(seqs, batch_size=8, min_prefix=99).batches]
    [(0, 1, 2), (3, 4)]
    """
    if prefix is None:
        prefix = shared_prefix(sequences)
        prefix = prefix if prefix >= min_prefix else 0
    needed = tuple(needed_tokens(s) for s in sequences)
    order = sorted((i for i in range(len(sequences)) if needed[i]), key=lambda i: needed[i])
    width = [needed[i] - prefix for i in order]
    n = len(order)
    best = [0] + [0] * n  # best[j]: least cost of the first j sorted sequences; cut[j]: where its last batch starts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        starts = range(max(0, j - batch_size), j)
        best[j], cut[j] = min((best[i] + (j - i) * width[j - 1] + per_batch, i) for i in starts)
    batches = []
    j = n
    while j:
        i = cut[j]
        batches.append(Batch(tuple(order[i:j]), width[j - 1]))
        j = i
    return Plan(prefix, tuple(reversed(batches)), needed, sum(s.n_targets for s in sequences))


def forward_batches(
    model: PreTrainedModel,
    sequences: list[Sequence],
    batch_size: int,
    min_prefix: int = MIN_SHARED_PREFIX,
    hidden: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Yield (reference rows, fp32 logits at target positions (n, V), target ids (n,), final hidden states).

    The hidden states (n, d), those that go into the LM head (after the final
    norm), are captured from the head's input when ``hidden`` is set, else None;
    a bf16/fp16 head is then applied in fp32 to them, and those are the logits
    yielded (the hidden reference's metrics need ``z = W h`` exactly, which the
    head's own rounded logits are not: docs/precision.md).
    Sequences run in the batches of :func:`plan_batches` (length order, padding
    weighed against another forward pass, nothing after a sequence's last scored
    logit); rows map each yielded position back to its place in corpus order. A
    prefix shared by all sequences (at least ``min_prefix`` tokens) is run once
    and its key/value cache reused. This is the whole of an evaluation's model
    work; everything else is metrics. A sequence's numbers depend on the prefix
    and its batch's width (kernels reduce over the padded length), so the base
    reference and every evaluation of it must plan alike: they do, by calling this.
    """
    offsets = np.cumsum([0] + [s.n_targets for s in sequences])
    device = next(model.parameters()).device
    was_training = model.training
    captured: list[torch.Tensor] = []
    handle = None
    head_fp32 = None
    if hidden:
        head = model.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        if head.weight.dtype != torch.float32:
            head_fp32 = head.weight.detach().float()
    model.eval()
    try:
        with torch.inference_mode():
            c, shared_cache = prefix_cache(model, sequences, device, min_prefix)
            plan = plan_batches(sequences, batch_size, prefix=c)
            captured.clear()  # the prefix pass's own head input
            for batch in plan.batches:
                idx = batch.idx
                ids = torch.zeros(len(idx), c + batch.width, dtype=torch.long)
                attn = torch.zeros_like(ids)
                keep = torch.zeros(len(idx), c + batch.width, dtype=torch.bool)
                targets = []
                for j, i in enumerate(idx):
                    s, n = sequences[i], plan.needed[i]
                    ids[j, :n] = torch.tensor(s.ids[:n])
                    attn[j, :n] = 1
                    # logits at t-1 predict token t: project only those positions onto the vocabulary
                    keep[j, :n] = torch.tensor(s.mask[1 : n + 1])
                    targets += [t for t, m in zip(s.ids[1 : n + 1], s.mask[1 : n + 1], strict=True) if m]
                kw: dict[str, Any] = {}
                if shared_cache is not None:
                    cache = copy.deepcopy(shared_cache)  # the forward pass appends to it
                    cache.batch_repeat_interleave(len(idx))
                    kw = cache_kwargs(model, cache)
                kept = keep[:, c:].to(device)
                captured.clear()
                logits = kept_logits(model, ids[:, c:].to(device), attn.to(device), kept, **kw).float().cpu()
                h = None
                if hidden:
                    h = captured[-1]  # the last call is the one whose logits came back
                    h = (h if h.ndim == 2 else h[kept]).float()
                    if head_fp32 is not None:
                        logits = F.linear(h, head_fp32).cpu()
                    h = h.cpu()
                rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
                yield rows, logits, torch.tensor(targets, dtype=torch.long), h
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)


def prefix_cache(
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


METRIC_CHUNK = 32
"""Positions per metric evaluation. The metrics make several (positions, vocabulary)
temporaries; at 32 positions they stay small, at a whole batch's few hundred they
cost more in fresh-memory page faults than in arithmetic (measured: 7.7x slower)."""


def chunks(*xs: Any) -> Iterator[tuple[Any, ...]]:
    """Consecutive ``METRIC_CHUNK``-row slices of equally long arrays or tensors (``None`` stays ``None``).

    >>> [tuple(len(x) for x in c) for c in chunks(np.arange(70), torch.zeros(70, 2))]
    [(32, 32), (32, 32), (6, 6)]
    """
    for i in range(0, len(xs[0]), METRIC_CHUNK):
        yield tuple(None if x is None else x[i : i + METRIC_CHUNK] for x in xs)


def logprobs(z: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of logits ``z``, normalised in float64, rounded to fp32, returned as float64.

    float64 normalisation: an fp32 log-softmax rounds log q to ulp(logsumexp z), ~2e-6 for
    logits of ~20, which was a systematic 1e-5 relative error in forget_ce against a float64
    recomputation. The fp32 rounding is what a stored full-logit reference keeps; the
    evaluated model's log-probs are rounded alike, so at identity KL is exactly 0 and forget_ce
    equals the base entropy. Sums over them are then taken in float64.
    """
    return F.log_softmax(z.double(), -1).float().double()


def lse_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max z, log sum exp(z - max z))`` per row in float64: ``logsumexp(z)`` is their sum."""
    m, log_s, _top = lse_top(z)
    return m, log_s


def lse_top(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`lse_parts` and ``z.argmax(-1)`` from one pass for the maximum (the first index among equal
    maxima, as ``argmax`` gives), the exponentials taken in place: each is a pass over a vocabulary per row.

    >>> m, log_s, top = lse_top(torch.tensor([[0.0, 2.0, 2.0, 1.0]]))
    >>> int(top[0]), bool(torch.isclose(m + log_s, torch.logsumexp(torch.tensor([0.0, 2, 2, 1]), 0).double()))
    (1, True)
    """
    m, top = z.max(-1, keepdim=True)
    e = z - m
    e.exp_()
    return m.squeeze(-1).double(), torch.sum(e, -1, dtype=torch.float64).log(), top.squeeze(-1)
