"""Intruder-dimension reduction of a trained LoRA adapter, measured without retraining.

Shuttleworth et al. (NeurIPS 2025, "LoRA vs Full Fine-tuning: An Illusion of Equivalence") find that
LoRA's forgetting sits in *intruder dimensions*: leading singular vectors of the fine-tuned weight
``W + dW`` that are nearly orthogonal to every singular vector of the base ``W``. PEFT 0.21 ships the
remedy as ``peft.tuners.lora.intruders.reduce_intruder_dimension``; this module computes the same
adapter, for every LoRA layer:

1. ``U_b`` = left singular vectors of ``W``; ``U, S, Vh`` = the leading ``top_k`` singular triplets of
   ``W + dW`` (:func:`leading_singular`).
2. Intruders: among the first ``top_k`` columns of ``U``, those whose largest ``|cos|`` with any column
   of ``U_b`` is below ``epsilon``.
3. Their part ``X = U[:, i] diag(S[i]) Vh[i]`` is scaled to ``lam`` (PEFT's ``mitigation_lambda``, the
   share kept): ``dW' = dW + (lam - 1) X``.
4. ``dW' / scaling`` is refactored to the adapter's rank ``r`` by an SVD, ``B' = U' sqrt(S')``,
   ``A' = sqrt(S') Vh'``: PEFT's factorisation.

Why not call PEFT's function: it recomputes the base's SVD, and the merged weight's, for every layer at
every strength, which on a 2-core CPU costs about a minute per call on SmolLM2-135M. Here the base's
singular vectors are computed once per process (:class:`BaseSpectra`), the merged weight's leading ones
once per run, and each strength costs only the refactoring of the layers that have intruders. ``dW'`` is formed from
``dW`` directly rather than as ``(W + dW + (lam - 1) X) - W``, which loses digits of ``dW`` to ``W``'s
rounding; otherwise the arithmetic is PEFT's, and ``tests/integration/test_mitigation.py`` checks
the two agree on the tiny model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class BaseSpectra:
    """The base weights' left singular vectors, per LoRA layer name, computed when first asked for.

    The base model is shared by every run of a study in one process (its weights never change: LoRA
    trains ``A`` and ``B`` only), so one instance serves them all.
    """

    vectors: dict[str, torch.Tensor] = field(default_factory=dict)

    def left(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.vectors:
            self.vectors[name] = leading_singular(weight, min(weight.shape))[0]
        return self.vectors[name]


@dataclass
class _Layer:
    layer: Any
    delta: torch.Tensor  # dW, with the adapter's scaling
    intruder: torch.Tensor  # X, the intruder directions' part of W + dW


def leading_singular(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` leading singular triplets ``(U_k, S_k, Vh_k)`` of ``w``, in fp32, largest first.

    From the eigendecomposition of the Gram matrix on ``w``'s smaller side, in float64: about 5x
    faster than a full fp32 SVD at SmolLM2's shapes, and as exact for the leading triplets (squaring
    the condition number costs nothing in float64 for singular values within 1e6 of the largest).
    Only the leading ``top_k`` vectors of the merged weight are examined for intruders, so the rest of
    its spectrum is not needed.

    >>> w = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    >>> u, s, vh = leading_singular(w, 2)
    >>> s.tolist(), torch.allclose((u * s) @ vh, torch.diag(torch.tensor([3.0, 2.0, 0.0])))
    ([3.0, 2.0], True)
    """
    k = min(k, *w.shape)
    x = w.double()
    wide = x.shape[0] <= x.shape[1]
    lam, vec = torch.linalg.eigh(x @ x.T if wide else x.T @ x)  # ascending
    vec, s = vec[:, -k:].flip(-1), lam[-k:].flip(-1).clamp_min(0).sqrt()
    safe = s.clamp_min(torch.finfo(torch.float64).tiny)  # a zero singular value's vector adds 0 * u vh
    if wide:
        u, vh = vec, (vec.T @ x) / safe[:, None]
    else:
        u, vh = (x @ vec) / safe, vec.T
    return u.float(), s.float(), vh.float()


def _lora_layers(model: Any) -> Iterator[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            yield name, layer


class IntruderReduction:
    """A run's adapter with its intruder dimensions found once, to be applied at any strength.

    Args:
        model: a PEFT model whose active adapter is a plain LoRA adapter on linear layers.
        top_k: leading singular vectors of ``W + dW`` examined per layer.
        epsilon: an examined vector whose largest ``|cos|`` with the base's is below this is an intruder.
        spectra: the base's singular vectors (reused across runs).

    ``n_intruders`` counts the intruder dimensions over all layers; with none, every strength is the
    run's own adapter.
    """

    def __init__(self, model: Any, top_k: int, epsilon: float, spectra: BaseSpectra):
        self.model = model
        self.adapter = model.active_adapter
        self.layers: list[_Layer] = []
        self.n_intruders = 0
        with torch.no_grad():
            for name, layer in _lora_layers(model):
                if self.adapter not in layer.lora_A:
                    continue
                w = layer.get_base_layer().weight
                delta = layer.get_delta_weight(self.adapter).float()
                u, s, vh = leading_singular(w.float() + delta, top_k)
                cos = (u.T @ spectra.left(name, w)).abs().max(dim=1).values
                idx = torch.where(cos < epsilon)[0]
                if idx.numel():
                    self.n_intruders += int(idx.numel())
                    self.layers.append(_Layer(layer, delta, (u[:, idx] * s[idx]) @ vh[idx]))

    @contextmanager
    def applied(self, lam: float) -> Iterator[int]:
        """The adapter with its intruder parts scaled to ``lam`` (1: unchanged, 0: removed) inside the
        context, its own weights restored on exit. Yields :attr:`n_intruders`."""
        a = self.adapter
        saved = [(e.layer.lora_A[a].weight.data, e.layer.lora_B[a].weight.data) for e in self.layers]
        try:
            with torch.no_grad():
                for e in self.layers:
                    a_w, b_w = e.layer.lora_A[a].weight, e.layer.lora_B[a].weight
                    rank = e.layer.r[a]
                    changed = (e.delta + (float(lam) - 1.0) * e.intruder) / e.layer.scaling[a]
                    u, s, vh = torch.linalg.svd(changed, full_matrices=False)
                    root = s[:rank].sqrt()
                    b_w.data = (u[:, :rank] * root).to(b_w.dtype).contiguous()
                    a_w.data = (root[:, None] * vh[:rank]).to(a_w.dtype).contiguous()
            yield self.n_intruders
        finally:
            for e, (a_data, b_data) in zip(self.layers, saved, strict=True):
                e.layer.lora_A[a].weight.data, e.layer.lora_B[a].weight.data = a_data, b_data
