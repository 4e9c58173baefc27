"""The evaluation's forward pass: scored positions only, a shared prefix once, hidden states on request.

Everything an evaluation asks of the model goes through :func:`forward_batches`;
the metrics in :mod:`forgetscale.forgetting` only read what it yields.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
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
    Sequences are batched in length order to cut padding; rows map each yielded
    position back to its place in corpus order. A prefix shared by all sequences
    (at least ``min_prefix`` tokens) is run once and its key/value cache reused.
    This is the whole of an evaluation's model work; everything else is metrics.
    """
    offsets = np.cumsum([0] + [s.n_targets for s in sequences])
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))
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
            captured.clear()  # the prefix pass's own head input
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
                if shared_cache is not None:
                    cache = copy.deepcopy(shared_cache)  # the forward pass appends to it
                    cache.batch_repeat_interleave(len(batch))
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
                targets = ids[:, 1:][tmask[:, 1:]]
                rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
                yield rows, logits, targets, h
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
    m = z.max(-1, keepdim=True).values
    return m.squeeze(-1).double(), torch.sum((z - m).exp(), -1, dtype=torch.float64).log()
