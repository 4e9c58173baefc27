"""Evaluate a LoRA model with its adapter folded into effective weights, without merging anything.

Unfolded, every adapted layer runs its base matmul plus two thin ones
(``x A^T B^T``), 210 extra small matmuls per forward pass for LoRA on all
linear modules of a 30-layer model. An evaluation does not change the adapter,
so :func:`folded` computes ``W + s B A`` once per evaluation, into a new tensor,
and shadows each adapted layer's ``forward`` with one plain linear map over it
for the duration. Nothing is merged: PEFT's own ``merge``/``unmerge`` would write
into the base weights and subtract again, which is not bit-exact; here the base
weights are never written, and removing the shadow restores the layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


@contextmanager
def folded(model: Any) -> Iterator[Any]:
    """Run ``model`` (in eval mode) with every plain fp32 LoRA linear layer folded into one weight.

    Within fp32 rounding of the unfolded model (dropout is off in eval mode, and
    the scaling is PEFT's own, rsLoRA included); a DoRA layer folds into its
    magnitude-scaled weight. Layers it cannot fold exactly run unmerged: other
    LoRA variants, DoRA beside a second adapter on one layer, LoRA biases, ``fan_in_fan_out``
    (Conv1D) bases, non-fp32 weights (folding would round ``W + s B A`` to bf16, a
    change of the model evaluated; a bf16 model's layers run PEFT's own way), a
    disabled or already merged adapter, and any layer while in training mode.
    Parameters, gradients and optimizer state are never touched; a model with
    no LoRA layers is run as it is. The training flag is restored on exit. The
    adapter is read once, on entry: change it (or its scale) outside the context.
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no PEFT: nothing can be merged
        yield model
        return
    was_training = model.training
    patched: list[torch.nn.Module] = []
    try:
        model.eval()
        with torch.no_grad():
            for module in model.modules():
                if type(module) is not LoraLinear:  # subclasses (quantised bases, variants) run as they are
                    continue
                weight = _effective_weight(module)
                if weight is not None:
                    module.forward = _folded_forward(module, weight)
                    patched.append(module)
        yield model
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)
        model.train(was_training)


def _effective_weight(layer: Any) -> torch.Tensor | None:
    """``W + sum_a s_a B_a A_a`` over the layer's active adapters, ``m / ||W + s B A|| * (W + s B A)`` (row-wise)
    for a layer's one DoRA adapter, or None when the layer cannot be folded exactly."""
    base = layer.get_base_layer()
    if type(base) is not torch.nn.Linear or base.weight.dtype != torch.float32 or layer.fan_in_fan_out:
        return None
    if layer.disable_adapters or layer.merged:
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    weight = base.weight
    for name in active:
        if getattr(layer, "lora_bias", {}).get(name):
            return None
        dora = bool(layer.use_dora.get(name))
        if name in getattr(layer, "lora_variant", {}) and not dora:  # other variants compute their own way
            return None
        if dora and len(active) > 1:  # DoRA rescales whatever the layer's result already holds
            return None
        weight = weight + layer.get_delta_weight(name).to(weight.dtype)
        if dora:
            # PEFT's DoRA output in eval mode is m / ||W + s B A||_row * (x W^T + s x A^T B^T), bias untouched:
            # the same map as one linear layer over this weight (its own merge computes the same), and at the
            # initial B = 0 the ratio is exactly 1, so the base weight comes back bit for bit
            norm = torch.linalg.norm(weight, dim=1).to(weight.dtype)
            weight = (layer.lora_magnitude_vector[name].weight / norm).view(-1, 1) * weight
    return None if weight is base.weight else weight


def _folded_forward(layer: Any, weight: torch.Tensor) -> Any:
    bias = layer.get_base_layer().bias

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # dropout, per-row adapters, or the adapter switched off inside the context: PEFT's own path
        if layer.training or layer.disable_adapters or kwargs.get("adapter_names") is not None:
            return type(layer).forward(layer, x, *args, **kwargs)
        return F.linear(x, weight, bias)

    return forward
